"""Faults during a job, against real servers each test starts: kill -9 of a worker (a busy prefork
child, then a whole worker), Redis stopped and restarted under a running job, a second worker joining,
the producer interrupted and re-run, a poison message, an unreachable broker, a catalog full of bad
rows, and the index surviving Redis restarts.

The invariant checked after every fault: the job completes, and every product is either indexed
exactly once or recorded as failed, never lost and never double-counted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import redis
from celery import Celery

from common.config.settings import Settings
from common.index import keys
from common.index.store import IndexStore, Product
from common.match import describe
from common.signals import signal_set
from common.signals.imaging import decode
from producer import jobs
from producer.connection import celery_app, index_store
from producer.local import WorkerProcess
from producer.redis_server import RedisServer
from tests.conftest import ROOT
from tests.support.badserver import BadServer, running_server
from tests.support.images import jpeg
from tests.support.processes import free_port, node_name, pool_pids, process_alive, start_worker, wait_until

pytestmark = pytest.mark.system

TIME_LIMIT = 10  # -> soft limit 8 s, visibility timeout 15 s, unacked sweep every 3 s (celery_config)
CLI = [sys.executable, "-m", "producer.cli"]


@pytest.fixture(scope="module")
def server() -> Iterator[BadServer]:
    with running_server() as s:
        yield s


@pytest.fixture(scope="module")
def fault_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis of this module's own on a fixed TCP port, so tests can stop and restart it in place."""
    server = RedisServer(tmp_path_factory.mktemp("fault-redis"), port=free_port()).start()
    yield server
    server.stop()


@dataclass
class Env:
    settings: Settings
    app: Celery
    r: redis.Redis
    store: IndexStore
    broker: redis.Redis
    tmp: Path
    workers: list[WorkerProcess]

    def worker(self, concurrency: int = 2, name: str = "worker", env: dict | None = None) -> WorkerProcess:
        w = start_worker(self.settings, self.tmp / f"{name}.log", concurrency=concurrency, env=env)
        self.workers.append(w)
        return w


@pytest.fixture
def env(fault_redis: RedisServer, tmp_path: Path) -> Iterator[Env]:
    if fault_redis.proc is None or fault_redis.proc.poll() is not None:
        fault_redis.start()  # a previous test may have failed with it stopped
    settings = replace(
        Settings.from_env({}),
        redis_url=fault_redis.url,
        allow_private_urls=True,
        fetch_retries=1,
        connect_timeout=1.0,
        read_timeout=3.0,
        download_deadline=5.0,
        task_time_limit=TIME_LIMIT,
        ingest_chunk=2,
        workers=2,
        data_dir=tmp_path,
    )
    r = redis.Redis.from_url(fault_redis.url)
    broker = redis.Redis.from_url(fault_redis.url.replace("/0", "/1"))
    r.flushall()
    e = Env(settings, celery_app(settings), r, index_store(r), broker, tmp_path, [])
    try:
        yield e
    finally:
        for w in e.workers:
            w.stop()
        e.app.close()


def slow_items(server: BadServer, n: int, delay: float, prefix: str) -> list[tuple[str, str]]:
    """n products whose image host answers after `delay` seconds: a job long enough to hurt mid-way."""
    return [
        (f"{prefix}-{i}", server.put(f"/{prefix}/{i}.jpg", jpeg(1000 + i), delay=delay)) for i in range(n)
    ]


def wait_job(e: Env, job_id: str, total: int, timeout: float = 60) -> None:
    """Until every product of the job is done or failed (tolerates Redis coming back)."""
    try:
        wait_until(lambda: sum(jobs.count(e.r, job_id)) >= total, timeout, f"job {job_id} to finish")
    except AssertionError as exc:
        state = {
            "done, failed": jobs.count(e.r, job_id),
            "queued": jobs.queue_lengths(e.broker),
            "unacked": e.broker.hlen("unacked"),
            "indexed": e.store.size(),
            "clients": [(c.get("db"), c.get("cmd"), c.get("idle")) for c in e.r.client_list()],
        }
        raise AssertionError(f"{exc}; {state}") from None


def index_ids(r: redis.Redis) -> list[str]:
    return (r.get(keys.IDS) or b"").decode().split("\n")[:-1]


def assert_nothing_lost(e: Env, job_id: str, items: list[tuple[str, str]], failed: set[str] = frozenset()):
    """Each product indexed exactly once, or recorded as failed: never both, never neither."""
    pids = {pid for pid, _ in items}
    ids = index_ids(e.r)
    assert len(ids) == len(set(ids)), f"duplicate ids in the index: {sorted(ids)}"
    assert e.r.hlen(keys.ROWS) == len(ids)
    failures = e.store.failures()
    assert set(ids) == pids - failed, f"missing: {sorted(pids - failed - set(ids))}"
    assert set(failures) & pids == failed, {k: v["reason"] for k, v in failures.items()}
    done, failed_only = jobs.count(e.r, job_id)
    assert (done, failed_only) == (len(pids) - len(failed), len(failed))


def active_ingest(app: Celery, worker: WorkerProcess) -> list[dict]:
    name = node_name(worker)
    replies = app.control.inspect(destination=[name], timeout=1.0).active() or {}
    return [t for t in replies.get(name, []) if t["name"] == "neardup.ingest"]


def attempts_by_task(r: redis.Redis) -> dict[str, int]:
    prefix = keys.attempts("")
    return {k.decode()[len(prefix) :]: int(r.get(k)) for k in r.scan_iter(keys.attempts("*"))}


# --------------------------------------------------------------------------- kill -9


def test_kill_9_of_a_busy_child_loses_nothing(env: Env, server: BadServer):
    # Given a worker with two prefork children busy on a slow ingest job
    worker = env.worker(concurrency=2)
    items = slow_items(server, 8, delay=1.5, prefix="child")
    job_id, sent, _ = jobs.enqueue_ingest(env.app, env.store, items, chunk=2)
    victim = wait_until(lambda: active_ingest(env.app, worker), 20, "an ingest task running")[0]

    # When the child running it is killed with SIGKILL mid-download
    os.kill(victim["worker_pid"], signal.SIGKILL)

    # Then its message is redelivered (reject_on_worker_lost), the job completes, nothing is lost
    wait_job(env, job_id, sent)
    assert_nothing_lost(env, job_id, items)
    assert attempts_by_task(env.r)[victim["id"]] == 2
    assert env.r.xlen(keys.CHANGES) == len(items)  # each product written once
    # and the worker lives on with a fresh child in place of the dead one
    assert worker.alive()
    children = wait_until(lambda: len(pool_pids(worker)) == 2 and pool_pids(worker), 10, "a new child")
    assert victim["worker_pid"] not in children


def test_kill_9_of_a_whole_worker_is_recovered_after_the_visibility_timeout(env: Env, server: BadServer):
    # Given worker A holding two unacknowledged ingest messages (both children busy)
    worker_a = env.worker(concurrency=2, name="a")
    items = slow_items(server, 6, delay=2.0, prefix="whole")
    job_id, sent, _ = jobs.enqueue_ingest(env.app, env.store, items, chunk=2)
    held = wait_until(
        lambda: len(active_ingest(env.app, worker_a)) == 2 and active_ingest(env.app, worker_a), 20
    )
    children = pool_pids(worker_a)

    # When the whole worker (main process and children) is killed with SIGKILL
    os.killpg(worker_a.proc.pid, signal.SIGKILL)
    worker_a.proc.wait(timeout=10)
    wait_until(lambda: not any(process_alive(p) for p in children), 10, "the children to die")
    assert env.broker.hlen("unacked") == 2  # nobody acked them, nobody requeued them

    # and worker B starts
    started = time.monotonic()
    worker_b = env.worker(concurrency=2, name="b")

    # Then B runs the third chunk at once and the two held ones once their visibility timeout passes
    wait_job(env, job_id, sent, timeout=60)
    assert_nothing_lost(env, job_id, items)
    attempts = attempts_by_task(env.r)
    assert all(attempts[t["id"]] == 2 for t in held), attempts
    # acks_late: the last message is acked just after its task has recorded its products
    wait_until(lambda: env.broker.hlen("unacked") == 0, 10, "the last ack")
    assert time.monotonic() - started < 40
    assert worker_b.alive()


# --------------------------------------------------------------------------- Redis and workers come and go


def test_redis_restart_mid_job_workers_reconnect_and_finish(env: Env, server: BadServer, fault_redis):
    # Given a slow job under way
    worker = env.worker(concurrency=2)
    main_pid = worker.proc.pid
    items = slow_items(server, 12, delay=0.8, prefix="restart")
    job_id, sent, _ = jobs.enqueue_ingest(env.app, env.store, items, chunk=2)
    wait_until(lambda: jobs.count(env.r, job_id)[0] >= 2, 20, "the first products indexed")
    # both children mid-download (a chunk downloads at most 2 at once): both will write during the outage
    wait_until(lambda: server.in_flight >= 3, 20, "both children downloading")

    # When Redis (index and broker) stops, long enough for the consumer to lose the broker and a busy
    # child to fail writing to the index, and starts again on the same port and data dir
    fault_redis.stop()
    log = env.tmp / "worker.log"

    def noticed() -> bool:
        text = log.read_text(errors="replace")
        return "Connection to broker lost" in text and "index Redis unavailable" in text

    wait_until(noticed, 20, "the worker to notice the outage")
    fault_redis.start()

    # Then the worker reconnects and the job completes with every product indexed once
    wait_job(env, job_id, sent, timeout=90)
    assert_nothing_lost(env, job_id, items)
    assert worker.alive() and worker.proc.pid == main_pid


def test_a_second_worker_joining_mid_job_runs_nothing_twice(env: Env, server: BadServer):
    # Given one single-process worker on a slow job
    worker_a = env.worker(concurrency=1, name="a")
    items = slow_items(server, 16, delay=0.6, prefix="join")
    job_id, sent, _ = jobs.enqueue_ingest(env.app, env.store, items, chunk=2)
    wait_until(lambda: jobs.count(env.r, job_id)[0] >= 2, 20, "the first products indexed")

    # When a second worker joins
    worker_b = env.worker(concurrency=1, name="b")
    wait_job(env, job_id, sent)

    # Then both worked, no task ran twice (one download per image, one index write per product),
    assert_nothing_lost(env, job_id, items)
    totals = {}
    for w in (worker_a, worker_b):
        stats = env.app.control.inspect(destination=[node_name(w)], timeout=2.0).stats() or {}
        totals[w.name] = stats[node_name(w)]["total"].get("neardup.ingest", 0)
    assert all(totals.values()) and sum(totals.values()) == len(items) // 2, totals
    assert all(server.hits[f"/join/{i}.jpg"] == 1 for i in range(len(items)))
    assert env.r.xlen(keys.CHANGES) == len(items) and env.store.version() == len(items)
    # and every product holds the signatures its image gives when described here
    for i, (pid, _) in enumerate(items):
        data = jpeg(1000 + i)
        expected = describe.describe(decode(data, 10**8), data)
        stored = env.store.signatures_of(pid)
        assert {s: stored[s] for s in signal_set.DEFAULT.scan} == {
            s: expected[s] for s in signal_set.DEFAULT.scan
        }


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("NEARDUP_")}
    return {**base, "PYTHONPATH": str(ROOT), **extra}


def test_producer_interrupted_and_rerun_resumes(env: Env, server: BadServer, tmp_path: Path):
    # Given `neardup ingest` of a slow catalog against running workers
    env.worker(concurrency=2)
    items = slow_items(server, 24, delay=1.0, prefix="resume")  # ~6 s of work: room to interrupt
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("productId,url\n" + "".join(f"{pid},{url}\n" for pid, url in items))
    run_env = cli_env(env.settings, NEARDUP_REDIS_URL=env.settings.redis_url, NEARDUP_INGEST_CHUNK="2")
    cmd = [*CLI, "ingest", str(catalog), "--quiet"]
    first = subprocess.Popen(cmd, env=run_env, stderr=subprocess.PIPE, text=True, cwd=tmp_path)

    # When it is interrupted (Ctrl-C) part-way
    wait_until(lambda: 1 <= env.store.size() < len(items) // 2, 30, "a part of the catalog indexed")
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=20)
    assert first.returncode == 130, err
    assert "run the same command again to resume" in err

    # and run again (the first run's tasks are still in the queue, running)
    again = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=90, cwd=tmp_path)

    # Then it resumes: indexed products are skipped, the rest finishes, each product indexed once
    assert again.returncode == 0, again.stderr
    assert "already indexed" in again.stderr
    ids = index_ids(env.r)
    assert sorted(ids) == sorted(pid for pid, _ in items) and len(ids) == len(set(ids))
    assert env.r.xlen(keys.CHANGES) == len(items)
    assert env.store.failures() == {}


# --------------------------------------------------------------------------- poison


def test_poison_message_is_retried_a_bounded_number_of_times_then_recorded(env: Env, server: BadServer):
    # Given a worker whose process dies whenever it ingests product "poison-1" (test-only hook)
    limit = env.settings.max_deliveries
    worker = env.worker(concurrency=1, env={"NEARDUP_TEST_CRASH_ON": "poison-1"})
    main_pid = worker.proc.pid
    poison = [
        ("poison-1", server.put("/poison/1.jpg", jpeg(1))),
        ("poison-2", server.put("/poison/2.jpg", jpeg(2))),
    ]
    after = [(f"after-{i}", server.put(f"/after/{i}.jpg", jpeg(10 + i))) for i in range(2)]

    # When a chunk holding it is followed by a good chunk
    job_id, sent, _ = jobs.enqueue_ingest(env.app, env.store, poison + after, chunk=2)
    wait_job(env, job_id, sent)

    # Then the poison was delivered a bounded number of times, recorded as "poison", and acknowledged,
    failures = env.store.failures()
    assert failures["poison-1"]["reason"] == "poison"
    assert failures["poison-1"]["attempts"] <= limit
    assert max(attempts_by_task(env.r).values()) == limit + 1  # killed `limit` times, then settled
    assert jobs.queue_lengths(env.broker)["ingest"] == 0
    wait_until(lambda: env.broker.hlen("unacked") == 0, 10, "the last ack")  # acks_late: just after
    # the queue moved on: the following chunk is indexed,
    assert env.store.indexed([pid for pid, _ in after]) == [True, True]
    # its chunk-mate ends indexed or recorded, never lost,
    assert env.store.indexed(["poison-2"]) == [True] or failures["poison-2"]["reason"] == "poison"
    assert_nothing_lost(env, job_id, poison + after, failed={p for p, _ in poison if p in failures})
    # and the worker survived every crash of its children.
    assert worker.alive() and worker.proc.pid == main_pid


# --------------------------------------------------------------------------- start-up and catalog


def test_unreachable_broker_is_a_clear_error_within_seconds(tmp_path: Path):
    catalog = tmp_path / "c.csv"
    catalog.write_text("productId,url\np1,http://example.com/a.jpg\n")
    closed = free_port()
    started = time.monotonic()
    proc = subprocess.run(
        [*CLI, "ingest", str(catalog), "--quiet"],
        env=cli_env(Settings(), NEARDUP_REDIS_URL=f"redis://127.0.0.1:{closed}/0"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 3, proc.stderr
    assert time.monotonic() - started < 10
    assert f"cannot reach Redis at redis://127.0.0.1:{closed}/0" in proc.stderr
    assert "Traceback" not in proc.stderr


def snapshot_tree(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


def test_catalog_with_bad_rows_is_counted_reported_and_confined(tmp_path: Path):
    # Given a seed CSV with two good rows among malformed, unsafe, duplicate and unreachable ones
    cwd, data, cat = tmp_path / "cwd", tmp_path / "data", tmp_path / "catalog"
    for d in (cwd, cat / "img"):
        d.mkdir(parents=True)
    (cat / "img" / "1.jpg").write_bytes(jpeg(21))
    (cat / "img" / "2.jpg").write_bytes(jpeg(22))
    rows = [
        b"productId,imageUrlStr,categories",
        b"good-1,img/1.jpg;img/2.jpg,Women>Tops",
        b"good-2,img/2.jpg,Women>Tops",
        b"good-1,img/1.jpg,Women>Tops",  # duplicate id
        b"../../pwned,img/1.jpg,Women>Tops",  # path traversal as an id
        b"has space,img/1.jpg,Women>Tops",
        b"," + b"x" * 300 + b",Women>Tops",  # empty id
        b"no-url,,Women>Tops",
        b"extra,img/1.jpg,Women>Tops,surprise,column",  # malformed row
        b"caf\xe9-latin1,img/1.jpg,Women>Tops",  # not UTF-8
        b'"multi\nline",img/1.jpg,Women>Tops',
        b"blocked-1,http://127.0.0.1:1/a.jpg,Women>Tops",  # private address: refused by the worker
        b"scheme-1,ftp://example.com/a.jpg,Women>Tops",
    ]
    csv_path = cat / "catalog.csv"
    csv_path.write_bytes(b"\n".join(rows) + b"\n")
    before = snapshot_tree(tmp_path)
    run_env = cli_env(Settings(), NEARDUP_DATA_DIR=str(data), NEARDUP_WORKERS="1")

    # When `neardup ingest` runs it in embedded mode
    proc = subprocess.run(
        [*CLI, "ingest", str(csv_path), "--quiet"],
        env=run_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )

    # Then the bad rows are counted by reason, the unreachable products are listed with theirs,
    err = proc.stderr
    assert proc.returncode == 1, err
    summary = next(line for line in err.splitlines() if line.startswith("catalog:"))
    # (a real CSV parser: the quoted two-line id is one row, refused as an id with a newline)
    assert "4 products from 12 rows" in summary, summary
    for reason, n in {
        "bad_product_id": 4,
        "duplicate_id": 1,
        "missing_url": 1,
        "malformed_row": 1,
        "not_utf8": 1,
    }.items():
        assert f"{n} skipped: {reason}" in summary, summary
    assert "2 indexed, 2 failed" in err
    assert "blocked-1: fetch blocked_address" in err and "scheme-1: fetch bad_scheme" in err
    # and nothing was written outside the data directory
    created = snapshot_tree(tmp_path) - before
    assert created and all(p.is_relative_to(data) for p in created), sorted(created)
    assert not (tmp_path.parent / "pwned").exists()


# --------------------------------------------------------------------------- data safety


def test_the_index_survives_redis_restarts(tmp_path: Path):
    # Given an embedded-style Redis (AOF everysec) holding a written index and a failure
    server = RedisServer(tmp_path / "redis", port=free_port()).start()
    try:
        products = []
        for i in range(3):
            data = jpeg(300 + i)
            products.append(
                Product(f"keep-{i}", f"http://img/{i}.jpg", describe.describe(decode(data, 10**8), data))
            )

        def read() -> tuple:
            client = redis.Redis.from_url(server.url)
            store = index_store(client)
            bulk = store.bulk()
            sigs = [store.signatures_of(p.product_id) for p in products]
            out = (bulk.version, bulk.epoch, bulk.ids, bulk.columns, sigs, store.failures())
            client.close()
            return out

        client = redis.Redis.from_url(server.url)
        store = index_store(client)
        store.write(products[:2])
        store.record_failure("lost-1", "fetch", "http_404", "http_404", "http://img/x.jpg")
        client.close()
        written = read()
        assert written[2] == ["keep-0", "keep-1"]

        # When it is shut down and started again on the same data dir
        server.stop()
        server.start()

        # Then everything reads back the same
        assert read() == written

        # And a write acknowledged just before a kill -9 is there after the restart too
        client = redis.Redis.from_url(server.url)
        index_store(client).write(products[2:])
        client.close()
        acknowledged = read()
        server.kill()
        server.start()
        assert read() == acknowledged
        assert acknowledged[2] == ["keep-0", "keep-1", "keep-2"]
    finally:
        server.stop()
