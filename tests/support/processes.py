"""What the integration, system and fault tests (and the benchmarks) do with processes: a free port,
polling instead of sleeping, real Celery workers and their prefork children's PIDs. Light to import
(Celery only once a worker is started), so a benchmark can take free_port from here."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from common.config.settings import Settings
    from producer.local import WorkerProcess

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(
    condition: Callable[[], T], timeout: float = 30.0, what: str = "condition", *, interval: float = 0.05
) -> T:
    """Poll instead of sleeping: returns the first truthy value of condition(). Other exceptions count
    as "not yet" (Redis may be restarting, a server not listening yet); an AssertionError is the
    condition saying it never will, and ends the wait at once."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except AssertionError:
            raise
        except Exception as exc:  # noqa: BLE001 - a server coming back refuses connections for a while
            last = exc
        else:
            if value:
                return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last error: {last!r})")


def node_name(worker: WorkerProcess) -> str:
    return worker.name.replace("%h", socket.gethostname())


def start_worker(
    settings: Settings,
    log: Path,
    queues: Sequence[str] = ("ingest", "query"),
    concurrency: int = 2,
    env: Mapping[str, str] | None = None,
) -> WorkerProcess:
    """A real `celery worker` subprocess, returned once it answers a ping (and its pool is up)."""
    from producer.connection import celery_app
    from producer.local import WorkerProcess

    worker = WorkerProcess(settings, queues, concurrency, log, env=env)
    worker.die_with_parent = True  # a test session killed outright leaves no worker behind
    worker.start()
    app = celery_app(settings)
    name = node_name(worker)
    try:
        wait_until(
            lambda: not worker.alive() or any(name in r for r in app.control.ping(timeout=0.5) or []),
            timeout=60,
            what="the Celery worker to answer",
        )
        assert worker.alive(), log.read_text()[-3000:]
        wait_until(lambda: len(pool_pids(worker)) == concurrency, timeout=30, what="the prefork pool")
    except BaseException:
        worker.stop()
        raise
    finally:
        app.close()
    return worker


def pool_pids(worker: WorkerProcess) -> set[int]:
    """The prefork children of a worker's main process (Linux /proc)."""
    assert worker.proc is not None
    pids: set[int] = set()
    for task in Path(f"/proc/{worker.proc.pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            pids |= {int(p) for p in (task / "children").read_text().split()}
    return pids


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
    return False
