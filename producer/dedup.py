"""Whole-inventory dedup from the producer's side: plan shards, send them, join the pairs into groups."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from common.config import tasks
from common.index import keys
from common.index.allpairs import PAIR_RECORD, STAGES
from common.index.allpairs import groups as groups_of_rows
from common.index.hamming import similarity
from common.match import pipeline, presets
from producer import jobs
from producer.session import Session

DEDUP_RADIUS = 8  # candidate radius of verified dedup, on dHash and pHash: see README "Dedup"


def run_dedup(
    sess: Session,
    radius: int,
    n_shards: int,
    progress: bool = True,
    timeout: float | None = None,
    with_pairs: bool = True,
    preset: str = "original",
) -> dict[str, Any]:
    """All near-duplicate pairs over the whole index and the groups they form (union-find).
    `original`: every pair within dHash `radius`, exact. Other presets: pairs within `radius` on
    dHash or pHash, each confirmed by the preset's verification (PDQ, or ORB + photometric check)."""
    started = time.monotonic()
    verified = presets.PRESETS[preset].verified
    columns = [pipeline.PRIMARY, pipeline.PHASH] if verified else [pipeline.PRIMARY]
    bulk = sess.store.bulk()  # ids in row order: the same rows every shard scans
    n = len(bulk.ids)
    job_id = jobs.new_job_id("dedup")
    jobs.note_job(sess.r, job_id, {"total": n_shards, "kind": "dedup", "n": n, "radius": radius})
    for shard in range(n_shards):
        kwargs = {
            "job_id": job_id,
            "shard": shard,
            "n_shards": n_shards,
            "radius": radius,
            "n": n,
            "preset": preset,
            "columns": columns,
        }
        sess.app.send_task(tasks.DEDUP_SHARD, kwargs=kwargs, queue=tasks.QUEUE_OF[tasks.DEDUP_SHARD])
    jobs.wait(
        sess.r,
        job_id,
        n_shards,
        "dedup",
        sess.workers_alive,
        progress=progress,
        timeout=timeout,
        pending=sess.pending if sess.broker is not None else None,
    )
    raw = sess.r.hgetall(keys.dedup_pairs(job_id))
    parts = [np.frombuffer(raw[k], dtype=PAIR_RECORD) for k in sorted(raw)]
    pairs = np.concatenate(parts) if parts else np.zeros(0, dtype=PAIR_RECORD)
    # A pair close on both dHash and pHash can come from two shards (one per signal): keep it once.
    _, first = np.unique(pairs["i"].astype(np.uint64) << np.uint64(32) | pairs["j"], return_index=True)
    pairs = pairs[np.sort(first)]
    ids = bulk.ids
    rows = groups_of_rows(n, pairs["i"].astype(np.int64), pairs["j"].astype(np.int64))
    groups = [sorted(ids[k] for k in g) for g in rows]
    groups.sort(key=lambda g: (-len(g), g[0]))
    out: dict[str, Any] = {
        "preset": preset,
        "radius": radius,
        "candidate_signals": columns,
        "verified": verified,
        "index_version": bulk.version,
        "products": n,
        "pairs_found": int(len(pairs)),
        "groups_found": len(groups),
        "products_in_groups": sum(len(g) for g in groups),
        "seconds": round(time.monotonic() - started, 3),
        "groups": groups,
    }
    # A shard the workers could not run (it killed its worker every time, ...) was answered empty: say
    # so, its pairs are missing.
    notes = jobs.job_notes(sess.r, job_id)
    missing = {k: v for k, v in notes.items() if ":" in k and k.split(":", 1)[1].isdigit()}
    if missing:
        out["incomplete_shards"] = sorted(int(k.split(":", 1)[1]) for k in missing)
        out["incomplete_reasons"] = sorted({k.split(":", 1)[0] for k in missing})
    if with_pairs:
        by_distance = pairs[np.lexsort((pairs["j"], pairs["i"], pairs["d"]))]
        out["pairs"] = [
            [ids[int(p["i"])], ids[int(p["j"])], similarity(int(p["d"])), STAGES[int(p["stage"])]]
            for p in by_distance
        ]
    return out
