"""Whole-inventory dedup, split into shards that any query worker can run on its in-memory index."""

from __future__ import annotations

import numpy as np

from common import keys, pipeline, presets
from common.dedup import PAIR_RECORD, STAGES, pairs_for_shard, shard_plan
from workers import index_cache
from workers.app import app

JOB_TTL = 7 * 24 * 3600


def candidate_pairs(snap, columns: list[str], radius: int, n: int, n_shards: int, shard: int) -> np.ndarray:
    """This shard's pairs within `radius` on any of `columns`, among the first n rows, with their dHash
    distance. Exact per column (pigeonhole all-pairs); a pair found on several columns appears once."""
    plan = shard_plan(n_shards, radius, n)[shard]
    found = []
    for column in columns:
        # Identical hashes come as a star from their first row, not all k^2/2 pairs: a crowd of shared
        # placeholder photos stays linear (groups are the same either way).
        i, j, _ = pairs_for_shard(snap.column(column)[:n], radius, plan, expand_duplicates=False)
        found.append(i.astype(np.uint64) << np.uint64(32) | j.astype(np.uint64))
    keyed = np.unique(np.concatenate(found)) if found else np.zeros(0, np.uint64)
    out = np.empty(len(keyed), dtype=PAIR_RECORD)
    out["i"] = (keyed >> np.uint64(32)).astype(np.uint32)
    out["j"] = (keyed & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    dh = snap.column(pipeline.PRIMARY)
    out["d"] = np.bitwise_count(dh[out["i"]] ^ dh[out["j"]])
    out["stage"] = 0
    return out


@app.task(name="neardup.dedup_shard", bind=True, ignore_result=True)
def dedup_shard(
    self,
    job_id: str,
    shard: int,
    n_shards: int,
    radius: int,
    n: int,
    preset: str = "original",
    columns: list[str] | None = None,
) -> None:
    """Pairs of this shard among the first `n` rows (rows are append-only, so every shard of one job
    sees the same rows), verified like query matches unless the preset is `original`, stored as
    packed records for the producer to join."""
    from workers import job_guard
    from workers.tasks import delivery_count

    if job_guard.cancelled(index_cache.store().r, job_id):
        return  # its command was interrupted: nobody waits for these pairs
    if delivery_count(self.request.id) > index_cache.settings().max_deliveries:
        # Poison: this shard killed its worker every time. Record an empty answer and move on.
        r = index_cache.store().r
        r.hset(keys.dedup_pairs(job_id), str(shard), b"")
        r.sadd(keys.job_done(job_id), str(shard))
        r.hset(keys.job_meta(job_id), f"poison:{shard}", "killed its worker repeatedly")
        return
    snap = index_cache.snapshot()
    if len(snap) < n:
        raise RuntimeError(f"index has {len(snap)} rows, job planned for {n}")
    rule = presets.PRESETS[preset]
    pairs = candidate_pairs(snap, columns or [pipeline.PRIMARY], radius, n, n_shards, shard)
    if rule.verified and len(pairs):
        store = index_cache.store()
        verdicts = pipeline.verify_pairs(
            [
                (snap.ids[a], snap.ids[b])
                for a, b in zip(pairs["i"].tolist(), pairs["j"].tolist(), strict=True)
            ],
            rule,
            store.blobs,
        )
        keep = np.array([v is not None for v in verdicts], dtype=bool)
        pairs["stage"] = [STAGES.index(v[0]) if v is not None and v[0] in STAGES else 0 for v in verdicts]
        pairs = pairs[keep]
    r = index_cache.store().r
    pipe = r.pipeline()
    pipe.hset(keys.dedup_pairs(job_id), str(shard), pairs.tobytes())
    pipe.sadd(keys.job_done(job_id), str(shard))
    pipe.expire(keys.dedup_pairs(job_id), JOB_TTL)
    pipe.expire(keys.job_done(job_id), JOB_TTL)
    pipe.execute()
