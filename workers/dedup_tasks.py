"""Whole-inventory dedup, split into shards that any query worker can run on its in-memory index."""

from __future__ import annotations

import json

import numpy as np

from common.config import tasks as names
from common.config.tasks import JOB_TTL
from common.errors import NeardupError
from common.index import keys
from common.index.allpairs import MIRROR_SEP, PAIR_RECORD, STAGES, pairs_for_shard, shard_plan
from common.match import presets
from common.match.pairs import verify_pairs
from workers import index_cache
from workers.app import app
from workers.guard import GuardedTask

MIRRORED = STAGES.index("mirror")  # stage code of a candidate pair found by the mirror


def candidate_pairs(snap, columns: list[str], radius: int, n: int, n_shards: int, shard: int) -> np.ndarray:
    """This shard's pairs within `radius` on any of `columns`, among the first n rows, with their dHash
    distance. Exact per column (pigeonhole all-pairs); a pair found on several columns appears once.
    A column "A~B" (the primary dHash against the stored mirror's) finds mirrored uploads: those pairs
    carry stage code MIRRORED until verification, and their distance is to the mirror."""
    plan = shard_plan(n_shards, radius, n)[shard]
    live = snap.live_rows(n) if snap.n_dead else None  # rows of removed products take no part
    found, mirrored = [], []
    for column in columns:
        if MIRROR_SEP in column:
            a, b = column.split(MIRROR_SEP)
            mirrored.append(
                _cross_pairs(snap.column(a)[:n], snap.column(b)[:n], radius, n_shards, shard, live)
            )
            continue
        # Identical hashes come as a star from their first row, not all k^2/2 pairs: a crowd of shared
        # placeholder photos stays linear (groups are the same either way).
        hashes = snap.column(column)[:n] if live is None else snap.column(column)[live]
        i, j, _ = pairs_for_shard(hashes, radius, plan, expand_duplicates=False)
        if live is not None:
            i, j = live[i], live[j]
        found.append(i.astype(np.uint64) << np.uint64(32) | j.astype(np.uint64))
    straight = np.unique(np.concatenate(found)) if found else np.zeros(0, np.uint64)
    flipped = np.unique(np.concatenate(mirrored)) if mirrored else np.zeros(0, np.uint64)
    flipped = flipped[~np.isin(flipped, straight)]  # found straight too: verified as a straight pair
    mirror = next((c.split(MIRROR_SEP)[1] for c in columns if MIRROR_SEP in c), None)
    return np.concatenate([_records(snap, straight), _records(snap, flipped, mirror)])


def _records(snap, keyed: np.ndarray, mirror_column: str | None = None) -> np.ndarray:
    """Pair records of keyed pairs (i << 32 | j) with their dHash distance (to the mirror's, the
    nearer way round, for pairs the mirror found: stage MIRRORED until verified)."""
    out = np.empty(len(keyed), dtype=PAIR_RECORD)
    out["i"] = (keyed >> np.uint64(32)).astype(np.uint32)
    out["j"] = (keyed & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    dh = snap.column(index_cache.signals().primary)
    if mirror_column is None:
        out["d"] = np.bitwise_count(dh[out["i"]] ^ dh[out["j"]])
        out["stage"] = 0
    else:
        mirror = snap.column(mirror_column)
        d1 = np.bitwise_count(dh[out["i"]] ^ mirror[out["j"]])
        d2 = np.bitwise_count(mirror[out["i"]] ^ dh[out["j"]])
        out["d"] = np.minimum(d1, d2)
        out["stage"] = MIRRORED
    return out


def _cross_pairs(
    left: np.ndarray, right: np.ndarray, radius: int, n_shards: int, shard: int, live: np.ndarray | None
) -> np.ndarray:
    """Pairs (i < j, keyed i << 32 | j) of rows where one's `left` hash is within `radius` of the
    other's `right` hash: the all-pairs of both columns stacked, keeping the pairs that cross."""
    rows = np.arange(len(left)) if live is None else live
    n = len(rows)
    stacked = np.concatenate([left[rows], right[rows]])
    i, j, _ = pairs_for_shard(stacked, radius, shard_plan(n_shards, radius, 2 * n)[shard])
    cross = (i < n) & (j >= n)
    a, b = rows[i[cross]], rows[j[cross] - n]
    keep = a != b  # a nearly symmetric photo is close to its own mirror
    lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    return lo.astype(np.uint64) << np.uint64(32) | hi.astype(np.uint64)


@app.task(name=names.DEDUP_SHARD, base=GuardedTask, bind=True, ignore_result=True)
def dedup_shard(
    self: GuardedTask,
    job_id: str,
    shard: int,
    n_shards: int,
    radius: int,
    n: int,
    preset: str = "original",
    columns: list[str] | None = None,
) -> None:
    """Pairs of this shard among the first `n` rows (rows of removed products are skipped, and reused
    rows are named with their product in the answer), verified like query matches unless the preset
    is `original`, stored as packed records for the producer to join."""
    self.guarded(
        lambda: _dedup_shard(job_id, shard, n_shards, radius, n, preset, columns),
        lambda exc: _answer_empty(job_id, shard, exc),
        job_id=job_id,
    )


def _answer_empty(job_id: str, shard: int, exc: NeardupError) -> None:
    """A shard that cannot run (poison, another signal set, ...) answers empty, with a note the
    producer reports: its pairs are missing from the result."""
    pipe = index_cache.store().r.pipeline()
    pipe.hset(keys.dedup_pairs(job_id), str(shard), b"")
    pipe.sadd(keys.job_done(job_id), str(shard))
    pipe.hset(keys.job_meta(job_id), f"{exc.reason}:{shard}", exc.detail)
    pipe.execute()


def _dedup_shard(
    job_id: str, shard: int, n_shards: int, radius: int, n: int, preset: str, columns: list[str] | None
) -> None:
    snap = index_cache.snapshot()
    if len(snap) < n:
        raise RuntimeError(f"index has {len(snap)} rows, job planned for {n}")
    rule = presets.PRESETS[preset]
    pairs = candidate_pairs(snap, columns or [index_cache.signals().primary], radius, n, n_shards, shard)
    if rule.verified and len(pairs):
        store = index_cache.store()
        verdicts = verify_pairs(
            [
                (snap.ids[a], snap.ids[b])
                for a, b in zip(pairs["i"].tolist(), pairs["j"].tolist(), strict=True)
            ],
            rule,
            store.blobs,
            mirrored=(pairs["stage"] == MIRRORED).tolist(),
        )
        keep = np.array([v is not None for v in verdicts], dtype=bool)
        pairs["stage"] = [STAGES.index(v[0]) if v is not None and v[0] in STAGES else 0 for v in verdicts]
        pairs = pairs[keep]
    r = index_cache.store().r
    pipe = r.pipeline()
    # Rows are reused after removals: name the products this shard's rows held, for the producer.
    rows = np.unique(np.concatenate([pairs["i"], pairs["j"]])).tolist() if len(pairs) else []
    pipe.hset(keys.dedup_pairs(job_id), f"ids:{shard}", json.dumps({str(k): snap.ids[k] for k in rows}))
    pipe.hset(keys.dedup_pairs(job_id), str(shard), pairs.tobytes())
    pipe.sadd(keys.job_done(job_id), str(shard))
    pipe.expire(keys.dedup_pairs(job_id), JOB_TTL)
    pipe.expire(keys.job_done(job_id), JOB_TTL)
    pipe.execute()
