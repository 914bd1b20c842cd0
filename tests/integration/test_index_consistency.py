"""An inconsistent index (rows, ids and signature columns that disagree, as two redis-servers on one
AOF left it) is detected by `neardup status`, refused by the other commands and by a worker's load
with one clear line, and repaired by `neardup repair`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from common.config.settings import Settings
from common.index import consistency, keys
from common.ingestion import ingest_items
from producer import jobs
from producer.connection import celery_app, index_store
from producer.local import WorkerProcess
from tests.conftest import ROOT, SAMPLES

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "producer.cli"]


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEARDUP_")}
    env.update(PYTHONPATH=str(ROOT), NEARDUP_REDIS_URL=settings.redis_url)
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60)


def test_an_inconsistent_index_is_detected_refused_and_repaired(
    index_redis: redis.Redis, base_settings: Settings, workers: WorkerProcess, tmp_path: Path
):
    # Given an index of six products
    store = index_store(index_redis)
    photos = sorted((SAMPLES / "inventory").iterdir())[:6]
    items = [(f"p{i}", str(p)) for i, p in enumerate(photos)]
    outcomes = ingest_items(items, store, base_settings)
    assert all(o.error is None for o in outcomes)
    assert consistency.check(index_redis, store.scan_signals) == []

    # When it is damaged the way two servers on one AOF damaged it: ids without signatures, and two
    # products sharing a row
    index_redis.append(keys.IDS, "ghost-1\nghost-2\n")
    index_redis.hset(keys.ROWS, mapping={"ghost-1": 6, "ghost-2": 7, "p5": 4})

    # Then the check says what is wrong
    problems = consistency.check(index_redis, store.scan_signals)
    assert any("4 signatures for 8 ids" in p or "6 signatures for 8 ids" in p for p in problems), problems
    # `neardup status` reports it (exit 1) with the way out
    status = cli(base_settings, "status")
    assert status.returncode == 1, status.stderr
    assert "index INCONSISTENT" in status.stdout and "neardup repair" in status.stdout
    # a command refuses to work on it: one line, exit 2, no traceback
    query = cli(base_settings, "query", "--product-id", "p1", "-o", str(tmp_path / "out.json"), "--quiet")
    assert query.returncode == 2, query.stderr
    assert "index is inconsistent" in query.stderr and "Traceback" not in query.stderr
    # and a worker loading it answers with that error instead of crashing on it
    app = celery_app(base_settings)
    job = jobs.enqueue_queries(app, index_redis, [{"key": "q", "product_id": "p1"}])
    jobs.wait(index_redis, job, 1, "query", lambda: True, progress=False, timeout=60)
    result = jobs.gather(index_redis, job)["q"]
    assert result["ok"] is False and result["error"]["reason"] == "index_inconsistent", result

    # When it is repaired
    repair = cli(base_settings, "repair")
    assert repair.returncode == 0, repair.stderr
    # Then the intact products stay, the damaged ones are dropped (re-indexed by the next ingest)
    assert "4 products kept, 4 dropped" in repair.stdout, repair.stdout
    assert consistency.check(index_redis, store.scan_signals) == []
    assert store.indexed(["p0", "p1", "p2", "p3", "p4", "p5", "ghost-1"]) == [True] * 4 + [False] * 3
    assert store.up_to_date([items[4]]) == [False]  # the next ingest redoes it
    # and queries work again, on the same index
    job = jobs.enqueue_queries(app, index_redis, [{"key": "q", "product_id": "p1"}])
    jobs.wait(index_redis, job, 1, "query", lambda: True, progress=False, timeout=60)
    assert jobs.gather(index_redis, job)["q"]["ok"] is True
    ingest_items([items[4], items[5]], store, base_settings)
    assert store.indexed(["p4", "p5"]) == [True, True]
    assert consistency.check(index_redis, store.scan_signals) == []
    app.close()
