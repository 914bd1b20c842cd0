"""Whole-inventory dedup, split into shards that any query worker can run on its in-memory index."""

from __future__ import annotations

import numpy as np

from common import keys
from common.dedup import pairs_for_shard, shard_plan
from common.signatures import DHASH
from workers import index_cache
from workers.app import app

PAIR_DTYPE = np.dtype([("i", "<u4"), ("j", "<u4"), ("d", "u1")])
JOB_TTL = 7 * 24 * 3600


@app.task(name="neardup.dedup_shard", bind=True, ignore_result=True)
def dedup_shard(self, job_id: str, shard: int, n_shards: int, radius: int, n: int) -> None:
    """Pairs of this shard among the first `n` rows (rows are append-only, so every shard of one job
    sees the same rows), stored as packed (i, j, distance) records for the producer to join."""
    snap = index_cache.snapshot()
    hashes = snap.column(DHASH)[:n]
    if len(hashes) < n:
        raise RuntimeError(f"index has {len(hashes)} rows, job planned for {n}")
    plan = shard_plan(n_shards, radius, n)
    i, j, d = pairs_for_shard(hashes, radius, plan[shard], expand_duplicates=True)
    packed = np.empty(len(i), dtype=PAIR_DTYPE)
    packed["i"], packed["j"], packed["d"] = i, j, d
    r = index_cache.store().r
    pipe = r.pipeline()
    pipe.hset(keys.dedup_pairs(job_id), str(shard), packed.tobytes())
    pipe.sadd(keys.job_done(job_id), str(shard))
    pipe.expire(keys.dedup_pairs(job_id), JOB_TTL)
    pipe.expire(keys.job_done(job_id), JOB_TTL)
    pipe.execute()
