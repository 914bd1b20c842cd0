"""Very thin images (a 400x1 strip, a 10000x8 banner) are indexed and queryable through real workers
instead of ending as internal_error (OpenCV's resize assertion inside ORB's pyramid)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from PIL import Image

from common.config.settings import Settings
from producer import jobs
from producer.connection import celery_app, index_store
from producer.local import WorkerProcess

pytestmark = pytest.mark.integration
SHAPES = [(400, 1), (1, 400), (10000, 8), (8, 10000), (3, 1)]


def strip(path: Path, w: int, h: int, seed: int) -> Path:
    image = Image.new("RGB", (w, h), (20 * seed % 255, 90, 160))
    for i in range(0, max(w, h), 5 + seed):
        image.putpixel((min(i, w - 1), min(i, h - 1)) if w < h else (i, 0), (255, 255, 255))
    image.save(path, "PNG")
    return path


def test_thin_images_are_indexed_and_found(
    index_redis: redis.Redis, base_settings: Settings, workers: WorkerProcess, tmp_path: Path
):
    # Given thin images on disk
    files = {f"thin-{w}x{h}": strip(tmp_path / f"{w}x{h}.png", w, h, n) for n, (w, h) in enumerate(SHAPES)}
    app = celery_app(base_settings)
    store = index_store(index_redis)
    # When they are ingested
    job, sent, _ = jobs.enqueue_ingest(app, store, [(pid, str(p)) for pid, p in files.items()], chunk=8)
    state = jobs.wait(index_redis, job, sent, "ingest", lambda: True, progress=False, timeout=90)
    # Then every one is indexed, none failed
    assert (state.done, state.failed) == (len(SHAPES), 0), store.failures()
    # and each, queried as a file, finds its own product
    queries = [{"key": pid, "path": str(p), "preset": "original"} for pid, p in files.items()]
    qjob = jobs.enqueue_queries(app, index_redis, queries)
    jobs.wait(index_redis, qjob, len(queries), "query", lambda: True, progress=False, timeout=90)
    results = jobs.gather(index_redis, qjob)
    for pid in files:
        assert results[pid]["ok"], results[pid]
        found = {m["product_id"]: m["similarity"] for m in results[pid]["matches"]}
        assert found.get(pid) == 100.0, results[pid]  # strips look alike: others may tie, not beat it
    app.close()
