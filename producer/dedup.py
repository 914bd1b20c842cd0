"""Whole-inventory dedup from the producer's side: plan shards, send them, join the pairs into groups."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from common.config import tasks
from common.index import feedback, keys
from common.index.allpairs import MIRROR_SEP, PAIR_RECORD, STAGES
from common.index.allpairs import groups as groups_of_rows
from common.index.canonical import canonical
from common.index.hamming import similarity
from common.match import presets
from common.signals import signal_set
from common.signals.signatures import unpack64
from producer import jobs
from producer.session import Session


def run_dedup(
    sess: Session,
    radius: int,
    n_shards: int,
    progress: bool = True,
    timeout: float | None = None,
    with_pairs: bool = True,
    preset: str = "original",
    canonical_rule: str | None = None,
) -> dict[str, Any]:
    """All near-duplicate pairs over the whole index and the groups they form (union-find).
    `original`: every pair within dHash `radius`, exact. Other presets: pairs within `radius` on
    dHash or pHash, each confirmed by the preset's verification (PDQ, or ORB + photometric check), and
    mirrored uploads (one's dHash near the other's stored mirror dHash, confirmed by the mirror's PDQ).
    Review feedback applies (common.feedback): rejected pairs are never listed nor grouped together,
    confirmed ones always grouped. Each group names its canonical member by `canonical_rule`
    (default NEARDUP_CANONICAL, see common.canonical)."""
    started = time.monotonic()
    verified = presets.PRESETS[preset].verified
    primary = sess.store.scan_signals[0]  # the index's primary dHash (its decode mode)
    columns = [primary, signal_set.PHASH] if verified else [primary]
    if verified and signal_set.DHASH_MIRROR in sess.store.scan_signals:  # mirrored uploads too
        columns.append(f"{primary}{MIRROR_SEP}{signal_set.DHASH_MIRROR}")
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
    found = _named_pairs(sess.r.hgetall(keys.dedup_pairs(job_id)), bulk.ids)
    # Dedup skips removed products: a pair of a product removed while the job ran is dropped too.
    uniq = sorted({pid for a, b, _, _ in found for pid in (a, b)})
    indexed = {pid for pid, ok in zip(uniq, sess.store.indexed(uniq), strict=True) if ok}
    found = [p for p in found if p[0] in indexed and p[1] in indexed]
    fb = feedback.read(sess.r)
    rejected = set(fb.pairs(feedback.NOT_DUPLICATE))
    found = [p for p in found if (p[0], p[1]) not in rejected]
    found += _confirmed_pairs(sess, fb, {(a, b) for a, b, _, _ in found})
    found.sort(key=lambda p: (p[2], p[0], p[1]))
    groups = _groups(found, fb)
    groups.sort(key=lambda g: (-len(g), g[0]))
    rule = canonical_rule or sess.settings.canonical
    members = [pid for g in groups for pid in g]
    info = dict(zip(members, sess.store.order_and_info(members), strict=True))
    out: dict[str, Any] = {
        "preset": preset,
        "radius": radius,
        "candidate_signals": columns,
        "verified": verified,
        "index_version": bulk.version,
        "products": sum(1 for pid in bulk.ids if pid),
        "pairs_found": len(found),
        "groups_found": len(groups),
        "products_in_groups": sum(len(g) for g in groups),
        "seconds": round(time.monotonic() - started, 3),
        "groups": groups,
        "canonical_rule": rule,
        "canonical": [canonical(g, info, rule) for g in groups],
        "feedback": fb.as_json(),
    }
    # A shard the workers could not run (it killed its worker every time, ...) was answered empty: say
    # so, its pairs are missing.
    notes = jobs.job_notes(sess.r, job_id)
    missing = {k: v for k, v in notes.items() if ":" in k and k.split(":", 1)[1].isdigit()}
    if missing:
        out["incomplete_shards"] = sorted(int(k.split(":", 1)[1]) for k in missing)
        out["incomplete_reasons"] = sorted({k.split(":", 1)[0] for k in missing})
    if with_pairs:
        out["pairs"] = [[a, b, similarity(d), stage] for a, b, d, stage in found]
    return out


def _groups(found: list[tuple[str, str, int, str]], fb: feedback.Feedback) -> list[list[str]]:
    """Groups of the pairs: union-find in numpy when there is no feedback (millions of pairs in
    seconds), else the constrained join (common.feedback) that keeps rejected pairs apart."""
    in_pairs = sorted({pid for a, b, _, _ in found for pid in (a, b)})  # indexed; confirmed ones included
    if fb.verdicts:
        return feedback.constrained_groups([(a, b) for a, b, _, _ in found], fb, universe=in_pairs)
    index = {pid: k for k, pid in enumerate(in_pairs)}
    i = np.fromiter((index[a] for a, _, _, _ in found), dtype=np.int64, count=len(found))
    j = np.fromiter((index[b] for _, b, _, _ in found), dtype=np.int64, count=len(found))
    return [sorted(in_pairs[k] for k in g) for g in groups_of_rows(len(in_pairs), i, j)]


def _named_pairs(raw: dict[bytes, bytes], bulk_ids: list[str]) -> list[tuple[str, str, int, str]]:
    """Every shard's pairs as (a, b, dHash distance, stage), a < b, each pair once. A shard names the
    products its rows held (rows are reused after removals); an answer without names (a worker of an
    older version) is read with the producer's own row order."""
    seen: dict[tuple[str, str], tuple[str, str, int, str]] = {}
    for key in sorted(k for k in raw if not k.startswith(b"ids:")):
        names = json.loads(raw.get(b"ids:" + key, b"null") or b"null")
        for p in np.frombuffer(raw[key], dtype=PAIR_RECORD):
            i, j = int(p["i"]), int(p["j"])
            a = names.get(str(i), "") if names is not None else (bulk_ids[i] if i < len(bulk_ids) else "")
            b = names.get(str(j), "") if names is not None else (bulk_ids[j] if j < len(bulk_ids) else "")
            if not a or not b or a == b:
                continue
            a, b = min(a, b), max(a, b)
            # A pair close on both dHash and pHash can come from two shards (one per signal): keep it once.
            seen.setdefault((a, b), (a, b, int(p["d"]), STAGES[int(p["stage"])]))
    return list(seen.values())


def _confirmed_pairs(
    sess: Session, fb: feedback.Feedback, have: set[tuple[str, str]]
) -> list[tuple[str, str, int, str]]:
    """Pairs a reviewer confirmed and dedup did not find itself, both still indexed (stage "confirmed")."""
    todo = [p for p in fb.pairs(feedback.DUPLICATE) if p not in have]
    uniq = sorted({pid for p in todo for pid in p})
    sigs = dict(zip(uniq, sess.store.signatures_many(uniq, scan_only=True), strict=True))
    out = []
    for a, b in todo:
        sig_a, sig_b = sigs.get(a), sigs.get(b)
        if sig_a is None or sig_b is None:
            continue
        primary = sess.store.scan_signals[0]
        d = (unpack64(sig_a[primary]) ^ unpack64(sig_b[primary])).bit_count()
        out.append((a, b, d, "confirmed"))
    return out
