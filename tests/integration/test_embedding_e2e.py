"""The learned-embedding stage end to end: a tiny ONNX encoder built here with the `onnx` package, a
redis-server of this module's own, real prefork Celery workers started with NEARDUP_EMBEDDING_MODEL,
and the CLI (`neardup calibrate`, `neardup status`) as subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import redis
from PIL import Image

from common.config.settings import Settings
from common.index import keys
from common.index.store import IndexStore
from common.signals import embedding, signal_set
from producer import jobs
from producer.catalog import read_catalog
from producer.connection import celery_app, index_store
from producer.local import WorkerProcess
from producer.redis_server import RedisServer
from tests.conftest import ROOT, SAMPLES
from tests.support.processes import free_port, start_worker

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from tests.support.onnx_encoders import tiny_encoder  # noqa: E402

pytestmark = pytest.mark.integration
INVENTORY = read_catalog(SAMPLES / "inventory").items  # (productId, path)
TURNED = 12  # products whose photo, turned by 90 degrees, is a labelled query


@dataclass
class Stack:
    settings: Settings
    r: redis.Redis
    store: IndexStore
    app: object
    model: Path
    other_model: Path
    files: Path
    worker: WorkerProcess


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("emb")
    model = tiny_encoder(base / "tiny.onnx", seed=0)
    other = tiny_encoder(base / "other.onnx", seed=1)
    files = base / "files"
    files.mkdir()
    server = RedisServer(base / "redis", port=free_port()).start()
    settings = replace(
        Settings.from_env({}),
        redis_url=server.url,
        embedding_model=model,
        allow_private_urls=True,
        file_roots=(SAMPLES.resolve(), files.resolve()),
        fetch_retries=0,
        workers=2,
        data_dir=base / "data",
        ingest_chunk=8,
        task_time_limit=120,
    )
    app = celery_app(settings)
    signal = embedding.signal_for(model)
    r = redis.Redis.from_url(server.url)
    # The producer side of this test process has no model configured: its store names the signal.
    default = signal_set.DEFAULT
    store = IndexStore(r, default.scan, (*default.blobs, signal), (signal,), default.verified)
    try:
        worker = start_worker(settings, base / "worker.log")  # stopped by start_worker if it never answers
        try:
            yield Stack(settings, r, store, app, model, other, files, worker)
        finally:
            worker.stop()
    finally:
        r.close()
        server.stop()


def _ingest(s: Stack, items):
    job_id, sent, _ = jobs.enqueue_ingest(s.app, s.store, items, chunk=8)
    return job_id, jobs.wait(s.r, job_id, sent, "ingest", lambda: True, progress=False, timeout=120)


def _query(s: Stack, specs: list[dict]) -> dict[str, dict]:
    job_id = jobs.enqueue_queries(s.app, s.r, specs)
    jobs.wait(s.r, job_id, len(specs), "query", lambda: True, progress=False, timeout=60)
    return jobs.gather(s.r, job_id)


def _cli(s: Stack, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("NEARDUP_")}
    base.update(NEARDUP_REDIS_URL=s.settings.redis_url, NEARDUP_EMBEDDING_MODEL=str(s.model))
    base["PYTHONPATH"] = str(ROOT)
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "producer.cli", *args], env=base, capture_output=True, text=True, timeout=180
    )


def _turned(pid: str, path: str, folder: Path) -> Path:
    """The product's photo turned by 90 degrees: hashes and ORB geometry cannot follow it."""
    out = folder / f"turned_{pid}.jpg"
    Image.open(path).transpose(Image.Transpose.ROTATE_90).save(out, "JPEG", quality=90)
    return out


def _labels(s: Stack, name: str, shuffled: bool = False) -> list[str]:
    """labels.json in the devset's shape: turned copies (true matches), other products (distractors)."""
    queries = s.files / f"{name}-queries"
    queries.mkdir(exist_ok=True)
    labelled = {}
    for i, (pid, path) in enumerate(INVENTORY[:TURNED]):
        truth = INVENTORY[(i + 1) % TURNED][0] if shuffled else pid  # shuffled: labels a model cannot learn
        labelled[_turned(pid, path, queries).name] = {"category": "3", "matches": [truth], "ignore": []}
    for other in sorted((SAMPLES / "other").glob("*.jpg")):
        (queries / other.name).write_bytes(other.read_bytes())
        labelled[other.name] = {"category": "distractor", "matches": [], "ignore": []}
    path = s.files / f"{name}.json"
    path.write_text(json.dumps({"inventory": [pid for pid, _ in INVENTORY], "queries": labelled}))
    return [str(path), "--images", str(queries)]


def test_embedding_stage_end_to_end(stack: Stack) -> None:
    s = stack
    signal = embedding.signal_for(s.model)
    # Given the sample inventory and one all-black photo (on which this model fails) ingested
    black = s.files / "black.jpg"
    Image.new("RGB", (200, 300), "black").save(black)
    job_id, state = _ingest(s, [*INVENTORY, ("9000000001", str(black))])

    # Then every product carries the model's vector; the black one is recorded as failed at stage
    # "embed", and the worker lives on
    assert state.done == len(INVENTORY) and state.failed == 1
    failure = jobs.failed_items(s.r, s.store, job_id)["9000000001"]
    assert (failure["stage"], failure["reason"]) == ("embed", "bad_output")
    assert s.worker.alive()
    blobs = s.store.blobs(signal, [pid for pid, _ in INVENTORY])
    assert all(b is not None and len(b) == 7 + 16 for b in blobs)
    recorded = [*signal_set.DEFAULT.scan, *signal_set.DEFAULT.verified, signal]
    assert json.loads(s.r.get(keys.SIGNALS)) == recorded

    # When a turned photo of a product is queried before any calibration
    pid, path = INVENTORY[3]
    query = {"key": "turned", "path": str(_turned(pid, path, s.files)), "details": True}
    before = _query(s, [query])["turned"]
    # Then it matches nothing, and the details show the cosine of every candidate, the product first
    assert before["ok"] and before["matches"] == []
    assert before["embedding"]["signal"] == signal and before["embedding"]["threshold"] is None
    assert before["embedding"]["scored"][0][0] == pid
    assert len(before["embedding"]["scored"]) >= 6

    # When calibration runs on labels a model cannot learn (true matches shuffled)
    rejected = _cli(s, "calibrate", *_labels(s, "shuffled", shuffled=True), "--held-out", "0",
                    "--min-matches", "3", "--write", "-q")  # fmt: skip
    # Then no threshold reaches the target, nothing is written and the stage stays off
    assert rejected.returncode == 1, rejected.stderr[-2000:]
    assert "stays off (nothing written)" in rejected.stderr
    assert s.r.get(keys.EMBEDDING_CALIBRATION) is None

    # When it runs on true labels
    done = _cli(s, "calibrate", *_labels(s, "true"), "--held-out", "0", "--min-matches", "3", "--write",
                "-q")  # fmt: skip
    # Then it prints the figures per stage and threshold and stores a threshold for this model
    assert done.returncode == 0, done.stderr[-2000:]
    assert "emb precision" in done.stderr and "written" in done.stderr
    stored = json.loads(s.r.get(keys.EMBEDDING_CALIBRATION))
    assert stored["signal"] == signal and stored["fit"]["embedding_precision"] >= 0.98
    assert stored["fit"]["embedding_true"] >= 3

    # And the same query now finds the product, as a match of stage "embedding", with its cosine
    after = _query(s, [query])["turned"]
    assert [(m["product_id"], m["stage"]) for m in after["matches"]] == [(pid, "embedding")]
    assert after["matches"][0]["signals"]["cosine"] >= stored["threshold"]
    # while an exact copy keeps its own stage
    exact = _query(s, [{"key": "x", "path": path}])["x"]
    assert exact["matches"][0]["product_id"] == pid and exact["matches"][0]["stage"] == "exact"

    # And `neardup status` says the stage is on, at that threshold
    status = _cli(s, "status")
    assert status.returncode == 0 and f"stage on at cosine >= {stored['threshold']:.4f}" in status.stdout

    # And a query image the model fails on gets an error answer at stage "embed", not a dead worker
    failed = _query(s, [{"key": "black", "path": str(black)}])["black"]
    assert failed["ok"] is False and failed["error"]["stage"] == "embed" and s.worker.alive()

    # And another model, or none, is refused on this index with a clear message (exit 2)
    for env in ({"NEARDUP_EMBEDDING_MODEL": str(s.other_model)}, {"NEARDUP_EMBEDDING_MODEL": ""}):
        proc = _cli(s, "status", env=env)
        assert proc.returncode == 2 and "signature_mismatch" in proc.stderr, proc.stderr
        assert "NEARDUP_EMBEDDING_MODEL" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_models_exit_2_with_one_line(stack: Stack, tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    shadow = tmp_path / "shadow"  # an interpreter on which onnxruntime cannot be imported
    shadow.mkdir()
    (shadow / "onnxruntime.py").write_text("raise ImportError('no onnxruntime here')\n")
    cases = [
        ({"NEARDUP_EMBEDDING_MODEL": str(tmp_path / "missing.onnx")}, "no such file"),
        ({"NEARDUP_EMBEDDING_MODEL": str(junk)}, "bad_model"),
    ]
    for env, expected in cases:
        proc = _cli(stack, "status", env=env)
        assert proc.returncode == 2 and expected in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2
    proc = _cli(stack, "status", env={"PYTHONPATH": f"{shadow}{os.pathsep}{ROOT}"})
    assert proc.returncode == 2 and "pip install 'neardup[embeddings]'" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_off_by_default_results_and_signal_set_unchanged(base_settings, workers, index_redis) -> None:
    # Given the session's workers, started with no NEARDUP_EMBEDDING_MODEL
    app, store = celery_app(base_settings), index_store(index_redis)
    job_id, sent, _ = jobs.enqueue_ingest(app, store, INVENTORY[:6], chunk=8)
    jobs.wait(index_redis, job_id, sent, "ingest", lambda: True, progress=False, timeout=120)
    specs = [{"key": "q", "path": INVENTORY[2][1], "details": True}]
    job = jobs.enqueue_queries(app, index_redis, specs)
    jobs.wait(index_redis, job, 1, "query", lambda: True, progress=False, timeout=60)
    res = jobs.gather(index_redis, job)["q"]
    # Then nothing of the embedding appears: not in the signal set, the blobs, nor the answers
    recorded = [*signal_set.DEFAULT.scan, *signal_set.DEFAULT.verified]
    assert json.loads(index_redis.get(keys.SIGNALS)) == recorded
    assert not [k for k in index_redis.keys(keys.signal("emb.*"))]
    assert "embedding" not in res and all("cosine" not in m["signals"] for m in res["matches"])
    assert res["matches"][0]["stage"] == "exact"
