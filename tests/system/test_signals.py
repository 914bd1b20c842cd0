"""The CLI owns its private stack (embedded mode): signals sent to a real `neardup` process, then the
process table checked. Whatever stops the CLI — SIGINT, SIGTERM, SIGHUP, a second signal during its
shutdown, or SIGKILL — no redis-server or Celery process of its data dir is left, nothing of its job
runs later, and a second command can never start a second redis-server on the same data dir.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from common.index import keys
from producer.redis_server import RedisServer
from tests.conftest import ROOT
from tests.support.badserver import BadServer, running_server
from tests.support.images import jpeg
from tests.support.processes import wait_until

pytestmark = pytest.mark.system

CLI = [sys.executable, "-m", "producer.cli"]
N_PRODUCTS = 40


@pytest.fixture(scope="module")
def server() -> Iterator[BadServer]:
    with running_server() as s:
        yield s


def stack_processes(data_dir: Path) -> list[str]:
    """Every live process that belongs to the stack of `data_dir` (what `ps` shows): redis-server has
    it in its command line, the workers and their pool children in their environment."""
    marker = str(data_dir).encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue  # exited, waiting for its parent to reap it: holds nothing
        if marker in cmdline or b"NEARDUP_DATA_DIR=" + marker + b"\0" in environ:
            command = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{proc.name} {command[:160]}")
    return found


def assert_clean(data_dir: Path, timeout: float = 10.0) -> None:
    """No process of the stack remains (a killed child may take a moment to be reaped by init)."""
    deadline = time.monotonic() + timeout
    while (left := stack_processes(data_dir)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == [], f"left running: {left}"
    print(f"process table clean for {data_dir}")  # -s shows it: the report's "clean after every case"


def env_for(data_dir: Path, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("NEARDUP_")}
    return {
        **base,
        "PYTHONPATH": str(ROOT),
        "NEARDUP_DATA_DIR": str(data_dir),
        "NEARDUP_ALLOW_PRIVATE_URLS": "1",
        "NEARDUP_FETCH_CONCURRENCY": "2",
        "NEARDUP_INGEST_CHUNK": "4",
        "NEARDUP_WORKERS": "2",
        **extra,
    }


def slow_catalog(server: BadServer, tmp: Path, prefix: str, delay: float = 0.4, tops: bool = False) -> Path:
    """A seed CSV of N_PRODUCTS photos on a slow host (~4 s of work for 2 workers): room to interrupt.
    With `tops`, odd rows are Tops and even rows are Shoes."""
    rows = ["productId,imageUrlStr,categories"]
    for i in range(N_PRODUCTS):
        url = server.put(f"/{prefix}/{i}.jpg", jpeg(3000 + i), delay=delay)
        rows.append(f"{prefix}-{i},{url},Apparel>{'Tops' if i % 2 else 'Shoes'}")
    path = tmp / f"{prefix}.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def hits(server: BadServer, prefix: str) -> int:
    return sum(n for path, n in server.hits.items() if path.startswith(f"/{prefix}/"))


def read_index(data_dir: Path) -> tuple[list[str], int]:
    """(ids in the index, messages left in the private broker), read by starting the data dir's Redis
    ourselves — which also proves the data dir lock was released."""
    from producer.datadir_lock import DataDirLock

    lock = DataDirLock(data_dir)
    lock.acquire(wait_for_dead_owner=0)
    try:
        with RedisServer(data_dir) as server:
            r = redis.Redis.from_url(server.url)
            ids = (r.get(keys.IDS) or b"").decode().split("\n")[:-1]
            broker = redis.Redis.from_url(server.url.replace("db=0", "db=1"))
            left = sum(int(broker.llen(q)) for q in ("ingest", "query")) + int(broker.hlen("unacked"))
            return ids, left
    finally:
        lock.release()


def start_ingest(catalog: Path, data_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, "ingest", str(catalog), "--quiet", *extra],
        env=env_for(data_dir),
        stderr=subprocess.PIPE,
        text=True,
        cwd=data_dir.parent,
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_stop_signal_mid_job_stops_every_process_and_the_rerun_completes(
    sig: signal.Signals, server: BadServer, tmp_path: Path
):
    # Given `neardup ingest` of a slow catalog running on its own private stack
    data_dir = tmp_path / "data"
    catalog = slow_catalog(server, tmp_path, f"sig{sig.value}")
    cli = start_ingest(catalog, data_dir)
    wait_until(lambda: hits(server, f"sig{sig.value}") >= 6, 60, "the workers to be downloading")
    assert any("redis-server" in p for p in stack_processes(data_dir))

    # When the CLI gets the signal mid-job (what `timeout`, a closed terminal or Ctrl-C send)
    cli.send_signal(sig)
    _, err = cli.communicate(timeout=30)

    # Then it exits 128 + signal with the resume hint, and no process of its stack is left
    assert cli.returncode == 128 + sig.value, err
    assert "run the same command again to resume" in err
    assert_clean(data_dir)
    # nothing of the job is left queued, and the index is consistent
    ids, queued = read_index(data_dir)
    assert queued == 0
    assert len(ids) == len(set(ids)) < N_PRODUCTS

    # and the same command again finishes the catalog, each product indexed once
    again = start_ingest(catalog, data_dir)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    status = subprocess.run(
        [*CLI, "status"], env=env_for(data_dir), capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0, status.stderr
    assert f"index: {N_PRODUCTS} products" in status.stdout
    assert_clean(data_dir)
    ids, _ = read_index(data_dir)
    assert sorted(ids) == sorted(f"sig{sig.value}-{i}" for i in range(N_PRODUCTS))


def test_a_second_signal_during_shutdown_leaks_nothing(server: BadServer, tmp_path: Path):
    # Given an ingest that has finished its job and is stopping its stack
    data_dir = tmp_path / "data"
    catalog = slow_catalog(server, tmp_path, "shut", delay=0.0)
    cli = start_ingest(catalog, data_dir)
    assert cli.stderr is not None
    for line in cli.stderr:
        if line.startswith("ingest:") and "indexed" in line:
            break  # the summary: printed just before the stack stops
    # When Ctrl-C comes at once, then a SIGTERM right after
    cli.send_signal(signal.SIGINT)
    time.sleep(0.05)
    if cli.poll() is None:
        cli.send_signal(signal.SIGTERM)
    cli.communicate(timeout=30)
    # Then no process of the stack is left, and the next command starts normally
    assert_clean(data_dir)
    ids, queued = read_index(data_dir)
    assert len(ids) == N_PRODUCTS and queued == 0


def test_two_signals_mid_job_stop_at_once_and_leak_nothing(server: BadServer, tmp_path: Path):
    # Given an ingest mid-job
    data_dir = tmp_path / "data"
    catalog = slow_catalog(server, tmp_path, "twice", delay=1.0)
    cli = start_ingest(catalog, data_dir)
    wait_until(lambda: hits(server, "twice") >= 2, 60, "the workers to be downloading")
    # When the user presses Ctrl-C twice
    cli.send_signal(signal.SIGINT)
    time.sleep(0.02)
    cli.send_signal(signal.SIGINT)
    _, err = cli.communicate(timeout=30)
    # Then it stops (130) and leaves nothing behind
    assert cli.returncode == 130, err
    assert_clean(data_dir)


def test_sigkill_of_the_cli_takes_its_stack_down_and_the_next_command_waits_for_it(
    server: BadServer, tmp_path: Path
):
    # Given an ingest mid-job
    data_dir = tmp_path / "data"
    catalog = slow_catalog(server, tmp_path, "kill9")
    cli = start_ingest(catalog, data_dir)
    wait_until(lambda: hits(server, "kill9") >= 6, 60, "the workers to be downloading")
    # When the CLI is killed without any chance to clean up
    cli.kill()
    cli.communicate(timeout=10)
    # and another command starts on the same data dir at once
    status = subprocess.Popen(
        [*CLI, "status"], env=env_for(data_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    redis_servers = 0
    while status.poll() is None:  # never two redis-servers on one data dir
        redis_servers = max(redis_servers, sum("redis-server" in p for p in stack_processes(data_dir)))
        time.sleep(0.02)
    out, err = status.communicate()
    # Then its stack died with it (the kernel signals the children), the second command ran on a
    # consistent index once they were gone, and nothing of the killed job stays queued
    assert status.returncode == 0, err
    assert redis_servers <= 1
    assert "index:" in out
    assert_clean(data_dir)
    ids, queued = read_index(data_dir)
    assert len(ids) == len(set(ids)) and queued == 0


def test_a_second_command_on_a_busy_data_dir_is_refused_clearly(server: BadServer, tmp_path: Path):
    # Given an ingest running on a data dir
    data_dir = tmp_path / "data"
    catalog = slow_catalog(server, tmp_path, "busy")
    cli = start_ingest(catalog, data_dir)
    wait_until(lambda: hits(server, "busy") >= 2, 60, "the workers to be downloading")
    # When a second command starts on it
    second = subprocess.run(
        [*CLI, "ingest", str(catalog), "--quiet"],
        env=env_for(data_dir),
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Then it is refused at once with who holds the data dir (exit 2), and starts no redis-server
    assert second.returncode == 2, second.stderr
    assert f"another neardup command is running on {data_dir} (pid {cli.pid}" in second.stderr
    assert "Traceback" not in second.stderr
    assert sum("redis-server" in p for p in stack_processes(data_dir)) == 1
    # and the first one is unharmed
    _, err = cli.communicate(timeout=120)
    assert cli.returncode == 0, err
    assert_clean(data_dir)
    ids, _ = read_index(data_dir)
    assert len(ids) == N_PRODUCTS


def test_an_interrupted_jobs_tasks_do_not_run_in_the_next_command(server: BadServer, tmp_path: Path):
    # Given an ingest of a catalog with Tops and Shoes, interrupted part-way
    data_dir = tmp_path / "data"
    catalog = slow_catalog(server, tmp_path, "tops", delay=0.5, tops=True)
    cli = start_ingest(catalog, data_dir)
    wait_until(lambda: hits(server, "tops") >= 4, 60, "the workers to be downloading")
    cli.send_signal(signal.SIGINT)
    cli.communicate(timeout=30)
    before, _ = read_index(data_dir)
    assert len(before) < N_PRODUCTS

    # When the next command ingests the Tops only
    again = start_ingest(catalog, data_dir, "--tops-only")
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err

    # Then the index holds what the first run indexed before it stopped plus the Tops, and no Shoes
    # that the interrupted job had still queued
    after, queued = read_index(data_dir)
    tops = {f"tops-{i}" for i in range(N_PRODUCTS) if i % 2}
    assert set(after) == set(before) | tops
    assert queued == 0
    assert_clean(data_dir)
