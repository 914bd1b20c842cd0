"""Messages holding text that is not valid Unicode (lone surrogates in JSON, what Python makes of a
non-UTF-8 file name), sent by another service straight to the workers: answered or recorded, acked,
never requeued; the valid queries of the same batch are answered too."""

from __future__ import annotations

import json

import pytest
import redis

from common.config.settings import Settings
from common.index import keys
from producer import jobs
from producer.connection import celery_app, index_store
from producer.local import WorkerProcess
from tests.conftest import SAMPLES
from tests.support.processes import wait_until

pytestmark = pytest.mark.integration


def test_a_query_batch_with_undecodable_keys_and_inputs_is_answered_and_acked(
    index_redis: redis.Redis, base_settings: Settings, workers: WorkerProcess
):
    # Given a batch mixing a valid query, an undecodable key, an undecodable path and url
    app = celery_app(base_settings)
    good = str(sorted((SAMPLES / "queries").iterdir())[0])
    queries = [
        {"key": "good", "path": good},
        {"key": "bad\udcff.jpg", "path": good},
        {"key": "path", "path": "/tmp/bad\udcff.jpg"},
        {"key": "url", "url": "http://example.com/x\udcfe.jpg"},
    ]
    # When it is sent by name
    job = jobs.enqueue_queries(app, index_redis, queries)
    # Then every query is answered at once: the key stored escaped, the undecodable inputs as errors
    jobs.wait(index_redis, job, len(queries), "query", lambda: True, progress=False, timeout=60)
    results = jobs.gather(index_redis, job)
    assert set(results) == {"good", "bad\\udcff.jpg", "path", "url"}
    assert results["good"]["ok"] and results["bad\\udcff.jpg"]["ok"]
    assert results["path"]["error"]["reason"] == "not_utf8"
    assert results["url"]["error"]["reason"] == "not_utf8"
    # and the message was acked once, not requeued
    broker = redis.Redis.from_url(base_settings.redis_url.replace("/0", "/1"))
    wait_until(lambda: broker.hlen("unacked") == 0 and broker.llen("query") == 0, 10, what="the ack")
    attempts = [int(index_redis.get(k)) for k in index_redis.scan_iter(keys.attempts("*"))]
    assert attempts and max(attempts) == 1
    app.close()


def test_an_ingest_item_with_undecodable_text_is_recorded_and_the_job_completes(
    index_redis: redis.Redis, base_settings: Settings, workers: WorkerProcess
):
    # Given a chunk with an undecodable product id, an undecodable url and a good product
    app = celery_app(base_settings)
    store = index_store(index_redis)
    photo = str(sorted((SAMPLES / "inventory").iterdir())[0])
    items = [("bad\udcffid", photo), ("badurl", "/tmp/x\udcfe.jpg"), ("good1", photo)]
    job, sent = "ingest-undecodable", len(items)
    batch = [{"product_id": pid, "url": url} for pid, url in items]
    app.send_task("neardup.ingest", kwargs={"job_id": job, "items": batch}, queue="ingest")
    # When a worker runs it, Then the job completes: the good product indexed, the others recorded
    state = jobs.wait(index_redis, job, sent, "ingest", lambda: True, progress=False, timeout=60)
    assert (state.done, state.failed) == (1, 2)
    failures = store.failures()
    assert failures["badurl"]["reason"] == "bad_item" and "UTF-8" in failures["badurl"]["error"]
    assert json.loads(index_redis.hget(keys.FAILURES, "bad\\udcffid"))["stage"] == "request"
    app.close()
