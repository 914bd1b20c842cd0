"""A job whose command was interrupted is cancelled: workers drop its tasks still queued (acked, not
run), so nothing of it runs inside a later command — also on a shared Redis, where the queues are not
the CLI's to empty."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from common.config.settings import Settings
from common.index import keys
from producer import jobs
from producer.connection import celery_app, index_store
from producer.redis_server import RedisServer
from tests.conftest import SAMPLES
from tests.support.processes import free_port, start_worker, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", port=free_port()).start()
    yield server
    server.stop()


def test_a_cancelled_jobs_queued_tasks_are_dropped(own_redis: RedisServer, tmp_path: Path):
    # Given an ingest job queued while no worker runs
    settings = replace(
        Settings.from_env({}), redis_url=own_redis.url, file_roots=(SAMPLES.resolve(),), workers=1
    )
    app = celery_app(settings)
    r = redis.Redis.from_url(own_redis.url)
    broker = redis.Redis.from_url(own_redis.url.replace("/0", "/1"))
    store = index_store(r)
    photos = sorted((SAMPLES / "inventory").iterdir())[:6]
    job, sent, _ = jobs.enqueue_ingest(app, store, [(p.stem, str(p)) for p in photos], chunk=2)
    other, _, _ = jobs.enqueue_ingest(app, store, [("keep-1", str(photos[0]))], chunk=2)
    assert broker.llen("ingest") == 4
    # When its command cancels it (as jobs.wait does on Ctrl-C, SIGTERM or SIGHUP) and a worker starts
    jobs.cancel(r, job)
    worker = start_worker(settings, tmp_path / "worker.log", concurrency=1)
    try:
        # Then the worker acks its three chunks without running them, and runs the other job's
        wait_until(lambda: store.indexed(["keep-1"]) == [True], 60, "the other job")
        wait_until(lambda: broker.llen("ingest") == 0 and broker.hlen("unacked") == 0, 30, "the acks")
        assert store.indexed([p.stem for p in photos]) == [False] * len(photos)
        assert store.failures() == {}
        assert jobs.count(r, job) == (0, 0)
    finally:
        worker.stop()
        app.close()
    assert r.exists(keys.job_cancelled(job)) and r.ttl(keys.job_cancelled(job)) > 0
