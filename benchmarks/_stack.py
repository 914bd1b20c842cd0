"""A private redis-server and real Celery workers for the end-to-end benchmarks (never the shared Redis)."""

from __future__ import annotations

import socket
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import _common  # noqa: F401  (puts the project on sys.path)
import numpy as np
import redis

from common.config.settings import Settings
from common.index.snapshot import Snapshot
from common.match import describe, photometric, pipeline
from common.signals import signal_set
from producer.connection import celery_app, index_store
from producer.local import WorkerProcess
from producer.redis_server import RedisServer
from tests.support.processes import free_port


class BenchStack:
    def __init__(self, **settings_overrides: object) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="neardup-bench-"))
        self.redis = RedisServer(self.dir / "redis", port=free_port(), appendonly=False)
        self.overrides = settings_overrides
        self.workers: list[WorkerProcess] = []

    def __enter__(self) -> BenchStack:
        self.redis.start()
        self.settings = replace(
            Settings.from_env({}), redis_url=self.redis.url, data_dir=self.dir, **self.overrides
        )
        self.r = redis.Redis.from_url(self.redis.url)
        self.store = index_store(self.r, signal_set.from_env())
        self.app = celery_app(self.settings)
        return self

    def start_workers(self, queues: tuple[str, ...], concurrency: int, **overrides: object) -> None:
        s = replace(self.settings, **overrides) if overrides else self.settings
        w = WorkerProcess(s, queues, concurrency, self.dir / f"worker{len(self.workers)}.log").start()
        self.workers.append(w)
        name = w.name.replace("%h", socket.gethostname())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(name in reply for reply in self.app.control.ping(timeout=0.5) or []):
                return
        raise RuntimeError(f"worker did not start; see {w.log_path}")

    def stop_workers(self) -> None:
        for w in self.workers:
            w.stop()
        self.workers.clear()

    def fill_synthetic(
        self,
        hashes: np.ndarray,
        chunk: int = 5000,
        seed: int = 0,
        first_id: int = 0,
        thumb_side: int | None = None,
    ) -> None:
        """Write N products straight into the index with the same Lua write ingest uses, without images.
        dHash is `hashes`; every other scanned view gets its own random hashes (correlated views would
        only add candidates that the verifier then rejects); PDQ is random, ORB holds no keypoints.
        Ids are 1_000_000_000 + first_id + k. `thumb_side` makes the shared thumbnail a flat one of that
        side (compressed: a few dozen bytes; by default a white photo's real thumbnail)."""
        from common.index.store import Product
        from common.signals.signatures import pack64

        rng = np.random.default_rng(seed)
        others = [s for s in signal_set.from_env().scan if s != signal_set.from_env().primary]
        columns = {s: rng.integers(0, 2**64 - 1, len(hashes), dtype=np.uint64, endpoint=True) for s in others}
        empty_orb = pipeline.verify.pack(
            pipeline.verify.Features((1, 1), np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8))
        )
        from PIL import Image

        sample = describe.describe(Image.new("RGB", (360, 540), "white"))
        sample_blobs = {key: sample[key] for key in signal_set.from_env().blobs}
        if thumb_side is not None:  # a valid stored thumbnail blob (photometric.pack_lossy), flat grey
            c = max(1, thumb_side // 2)
            flat = np.full((thumb_side, thumb_side), 128, np.uint8), np.full((2, c, c), 128, np.uint8)
            sample_blobs[signal_set.THUMB] = photometric.pack_lossy(*flat)
        for a in range(0, len(hashes), chunk):
            products = []
            for k in range(a, min(len(hashes), a + chunk)):
                sigs = {
                    signal_set.from_env().primary: pack64(int(hashes[k])),
                    **{s: pack64(int(columns[s][k])) for s in others},
                }
                sigs.update(sample_blobs)  # e.g. thumbnails: one real one, shared
                sigs[signal_set.PDQ] = rng.bytes(32) + bytes([90])
                sigs[signal_set.ORB] = empty_orb
                products.append(Product(f"{1_000_000_000 + first_id + k}", "", sigs))
            self.store.write(products)

    def __exit__(self, *exc: object) -> None:
        self.stop_workers()
        self.redis.stop()


def timed_load(stack: BenchStack, repeat: int = 3) -> tuple[Snapshot, float]:
    """What a fresh query worker does: one consistent bulk read, then numpy arrays. The snapshot and
    the best of `repeat` loads, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        bulk = stack.store.bulk()
        snap = Snapshot(signal_set.from_env().scan)
        arrays = {k: np.frombuffer(v, ">u8").astype(np.uint64) for k, v in bulk.columns.items()}
        snap.load_arrays(bulk.ids, arrays, bulk.version)
        best = min(best, time.perf_counter() - t0)
    return snap, best
