"""The embedded stack: a private redis-server plus real Celery worker processes, started for one
command and stopped after it. The index stays on disk (AOF) in the data dir for the next run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from common.config.settings import Settings
from producer.redis_server import RedisServer


def celery_command(*args: str) -> list[str]:
    """`celery -A workers.app ...` with this interpreter, so the venv's Celery and code are used."""
    return [sys.executable, "-m", "celery", "-A", "workers.app", *args]


def worker_command(
    queues: Sequence[str], concurrency: int, name: str, loglevel: str = "WARNING"
) -> list[str]:
    return celery_command(
        "worker",
        "-Q",
        ",".join(queues),
        "-c",
        str(concurrency),
        "-P",
        "prefork",
        "-n",
        name,
        f"--loglevel={loglevel}",
        "--without-gossip",
        "--without-mingle",
        "-E",
    )


class WorkerProcess:
    """One `celery worker` subprocess with its own environment."""

    def __init__(
        self,
        settings: Settings,
        queues: Sequence[str],
        concurrency: int,
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = f"neardup-{uuid.uuid4().hex[:8]}@%h"
        self.settings = settings
        self.extra_env = dict(env or {})  # on top of the settings (tests: fault hooks)
        self.queues = tuple(queues)
        self.concurrency = concurrency
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        env = {**os.environ, **self.settings.to_env(), **self.extra_env}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed in stop()
        self.proc = subprocess.Popen(
            worker_command(self.queues, self.concurrency, self.name),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._log = log
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # warm shutdown: finish the current task, ack, exit
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


class LocalStack:
    """Context manager: private Redis (+ workers unless `workers=0`), settings pointing at them."""

    def __init__(
        self, settings: Settings, extra_roots: Iterable[Path] = (), workers: int | None = None
    ) -> None:
        roots = tuple(dict.fromkeys([*settings.file_roots, *(Path(p).resolve() for p in extra_roots)]))
        self.base = replace(settings, file_roots=roots)
        self.n_workers = settings.workers if workers is None else workers
        self.redis = RedisServer(settings.data_dir)
        self.workers: list[WorkerProcess] = []
        self.settings = self.base

    def __enter__(self) -> LocalStack:
        self._lock_data_dir()
        try:
            self.redis.start()
        except BaseException:
            self._unlock()
            raise
        self.settings = replace(self.base, redis_url=self.redis.url)
        try:
            if self.n_workers:
                log = self.base.data_dir / "worker.log"
                self.workers.append(
                    WorkerProcess(self.settings, ("ingest", "query"), self.n_workers, log).start()
                )
                self.wait_ready()
        except BaseException:
            self.__exit__()
            raise
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until every started worker answers a ping (they import numpy, cv2: a few seconds)."""
        from producer.connection import celery_app

        app = celery_app(self.settings)
        names = {w.name.replace("%h", os.uname().nodename) for w in self.workers}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [w for w in self.workers if not w.alive()]
            if dead:
                raise RuntimeError(f"a worker exited at start; see {dead[0].log_path}")
            replies = app.control.ping(timeout=0.5) or []
            if names <= {name for reply in replies for name in reply}:
                return
        raise RuntimeError(
            f"workers did not answer within {timeout} s; see {self.base.data_dir / 'worker.log'}"
        )

    def __exit__(self, *exc: object) -> None:
        for w in self.workers:
            w.stop()
        self.redis.stop()
        self._unlock()

    def _lock_data_dir(self) -> None:
        """One embedded stack per data dir: a second one would start another redis-server on the same
        AOF files and socket, and each would shut the other down."""
        import fcntl

        self.base.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.base.data_dir / "lock", "w")  # noqa: SIM115 - held until __exit__
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise RuntimeError(
                f"another neardup command is running on {self.base.data_dir}: wait for it, or give this "
                "one its own NEARDUP_DATA_DIR"
            ) from None

    def _unlock(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is not None and not lock.closed:
            lock.close()  # closing the file releases the flock
