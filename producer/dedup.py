"""Whole-inventory dedup from the producer's side: plan shards, send them, join the pairs into groups."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from common import keys
from common.dedup import labels
from common.matching import similarity
from producer import jobs
from producer.session import Session

PAIR_DTYPE = np.dtype([("i", "<u4"), ("j", "<u4"), ("d", "u1")])


def run_dedup(
    sess: Session,
    radius: int,
    n_shards: int,
    progress: bool = True,
    timeout: float | None = None,
    with_pairs: bool = True,
) -> dict[str, Any]:
    """All pairs within `radius` over the whole index and the groups they form (union-find)."""
    started = time.monotonic()
    bulk = sess.store.bulk()  # ids in row order: the same rows every shard scans
    n = len(bulk.ids)
    job_id = jobs.new_job_id("dedup")
    sess.r.hset(keys.job_meta(job_id), mapping={"total": n_shards, "kind": "dedup", "n": n, "radius": radius})
    for shard in range(n_shards):
        sess.app.send_task(
            "neardup.dedup_shard",
            kwargs={"job_id": job_id, "shard": shard, "n_shards": n_shards, "radius": radius, "n": n},
            queue="query",
        )
    jobs.wait(sess.r, job_id, n_shards, "dedup", sess.workers_alive, progress=progress, timeout=timeout)
    raw = sess.r.hgetall(keys.dedup_pairs(job_id))
    pairs = np.concatenate(
        [np.frombuffer(raw[k], dtype=PAIR_DTYPE) for k in sorted(raw)] or [np.zeros(0, dtype=PAIR_DTYPE)]
    )
    lab = labels(n, pairs["i"].astype(np.int64), pairs["j"].astype(np.int64)) if n else np.zeros(0, np.int64)
    ids = bulk.ids
    order = np.argsort(lab, kind="stable")
    sl = lab[order]
    cuts = np.flatnonzero(sl[1:] != sl[:-1]) + 1 if n else np.zeros(0, np.int64)
    groups = [sorted(ids[k] for k in g) for g in np.split(order, cuts) if len(g) > 1]
    groups.sort(key=lambda g: (-len(g), g[0]))
    out: dict[str, Any] = {
        "radius": radius,
        "min_similarity": similarity(radius),
        "index_version": bulk.version,
        "products": n,
        "pairs_found": int(len(pairs)),
        "groups_found": len(groups),
        "products_in_groups": sum(len(g) for g in groups),
        "seconds": round(time.monotonic() - started, 3),
        "groups": groups,
    }
    if with_pairs:
        order_p = np.lexsort((pairs["j"], pairs["i"], pairs["d"]))
        out["pairs"] = [[ids[int(p["i"])], ids[int(p["j"])], similarity(int(p["d"]))] for p in pairs[order_p]]
    return out
