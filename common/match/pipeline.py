"""How a query's signatures become matches (describing an image: common.match.describe; the signals
and their sets: common.signals.signal_set).

Stages (all but `original`):
  1. exact  — a 64-bit prefix of sha256(raw bytes) scanned at radius 0;
  2. candidates — 64-bit scans: dHash (the rule's radius), pHash, dHash of the trimmed content box
     (both ways, so padding/letterbox is undone), and dHash of a few crop windows; the closest
     `max_candidates` by their best distance go on, joined by the `word_candidates` products that
     share the most (IDF-weighted) ORB words with the query (common.index.orb_words) — crops and pads
     whose global hashes all moved;
  3. verification — PDQ (256-bit, stored as a blob) within `pdq_max` confirms edits of the whole
     photo; otherwise ORB keypoints + RANSAC with plausible crop/pad geometry confirm crops.
     Low-information images (low PDQ quality: flat, mostly blank) need ORB, not PDQ alone.
     ORB passes must also agree photometrically: the stored thumbnail (thumb@1) warped by the fitted
     transform into the query's frame (photometric.photometric) — same-template garments fail here.
     Stage 3 lives in common.match.confirm; common.match.pairs verifies pairs of indexed products (dedup).
`original` is the replaced system's rule: dHash distance <= max_distance, nothing else.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from common.index import embeddings, hamming, orb_words
from common.index.snapshot import Snapshot
from common.match import verify
from common.match.confirm import Blobs, Evidence, verify_candidates
from common.match.presets import FIXED, Rule
from common.signals import embedding
from common.signals import signal_set as sig
from common.signals.signatures import DHASH, unpack64

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Match:
    product_id: str
    similarity: float  # dHash similarity percent, the original system's figure
    distance: int  # dHash Hamming distance of 64
    stage: str  # which stage or signal matched it: exact, dhash, pdq, orb
    extra: Evidence = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def primary_key(sigs: dict[str, bytes]) -> str:
    """The primary dHash key a set of signatures carries (exact or draft mode)."""
    return sig.DHASH_WORK if sig.DHASH_WORK in sigs else DHASH


def _embedding_key(sigs: dict[str, bytes]) -> str | None:
    """The learned-embedding signal a query carries (its describe had a model), if any."""
    return next((k for k in sigs if k.startswith(embedding.SIGNAL_PREFIX)), None)


def _scan(snap: Snapshot, key: str, query: int, radius: int) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(snap, "scan"):  # the fast Snapshot (another module's job) may bring its own scan
        return snap.scan(key, query, radius)
    return hamming.scan(snap.column(key), query, radius)


def find_matches(
    query: dict[str, bytes],
    snap: Snapshot,
    rule: Rule,
    exclude: str | None = None,
    blobs: Blobs | None = None,
    scored: dict[str, float] | None = None,
) -> list[Match]:
    """Products matching the query, best first (dHash distance), ties by productId, never `exclude`.

    With the learned embedding on, `scored` (when given) receives the cosine of every candidate."""
    if not len(snap):
        return []
    primary = primary_key(query)
    q_dh = unpack64(query[primary])
    if not rule.verified:
        rows, dist = _scan(snap, primary, q_dh, rule.max_distance)
        dh_of = dict(zip(rows.tolist(), dist.tolist(), strict=True))
        return _ranked(snap, {r: ("dhash", {}) for r in dh_of}, dh_of, exclude)

    # Every accepted row reports its dHash distance (the original's similarity): computed for the
    # few rows that need it, never for the whole column.
    dh_all = _RowDistances(snap.column(primary), q_dh)
    accepted: dict[int, tuple[str, Evidence]] = {}
    if sig.SHA in query and sig.SHA in snap.signal_keys:
        rows, _ = _scan(snap, sig.SHA, unpack64(query[sig.SHA]), 0)
        accepted.update({r: ("exact", {}) for r in rows.tolist()})

    best, alt_rows = _hash_candidates(query, snap, rule, primary, q_dh)
    excluded_row = snap.rows.get(exclude) if exclude is not None else None
    order = sorted(
        (r for r in best if r not in accepted and r != excluded_row),
        key=lambda r: (best[r], int(dh_all[r]), snap.ids[r]),
    )[: rule.max_candidates]
    order += _rotated_candidates(query, snap, rule, primary, {*order, *accepted, excluded_row})
    # Local-feature words: crops and pads whose global hashes all moved still share keypoints.
    order += _word_candidates(query, snap, rule, {*order, *accepted, excluded_row})
    # emb: the embedding's nearest products join the candidates (None: no model, nothing changes).
    q_emb = (
        embeddings.query_vector(query, _embedding_key(query), snap.embeddings) if blobs is not None else None
    )
    if q_emb is not None:
        taken = {*order, *accepted, excluded_row}
        order += [r for r, _ in snap.embeddings.top(q_emb, rule.embedding_candidates, taken)]

    if blobs is None:
        # No blob store (library use without Redis): only two agreeing scans are trusted.
        ph_rows, ph_dist = _scan(snap, sig.PHASH, unpack64(query[sig.PHASH]), FIXED.unverified_radius)
        ph_of = dict(zip(ph_rows.tolist(), ph_dist.tolist(), strict=True))
        for r in order:
            if dh_all[r] <= FIXED.unverified_radius and r in ph_of:
                accepted[r] = ("dhash+phash", {"phash": ph_of[r]})
        return _ranked(snap, accepted, _distances_of(accepted, dh_all), exclude)

    accepted.update(verify_candidates(query, [snap.ids[r] for r in order], order, rule, blobs, alt_rows))
    if q_emb is not None:
        _embedding_tier(q_emb, snap, rule, order, accepted, excluded_row, scored)
    return _ranked(snap, accepted, _distances_of(accepted, dh_all), exclude)


def _hash_candidates(
    query: dict[str, bytes], snap: Snapshot, rule: Rule, primary: str, q_dh: int
) -> tuple[dict[int, int], dict[str, set[int]]]:
    """Rows within reach of any 64-bit view pairing, with their best distance; and which rows the
    mirrored or restored-backdrop views found closer than the query's own views."""
    # Candidates: best distance over every view pairing; dHash keeps the rule's (overridable) radius.
    near, near_d = _scan(snap, primary, q_dh, rule.max_distance)
    best: dict[int, int] = dict(zip(near.tolist(), near_d.tolist(), strict=True))
    views = [(sig.PHASH, sig.PHASH), (sig.DHASH_TRIM, sig.DHASH_TRIM), (primary, sig.DHASH_TRIM)]
    views += [(key, primary) for key in sig.DHASH_CROPS]
    # The photo alone inside a screenshot-like frame (query-only): verified as the query itself.
    views += [(primary, sig.DHASH_FRAME), (sig.DHASH_TRIM, sig.DHASH_FRAME), (sig.PHASH, sig.PHASH_FRAME)]
    for column, qkey in views:
        if column not in snap.signal_keys or qkey not in query:
            continue
        rows, dist = _scan(snap, column, unpack64(query[qkey]), rule.candidate_radius)
        for r, d in zip(rows.tolist(), dist.tolist(), strict=True):
            if d < best.get(r, 65):
                best[r] = d
    # The mirrored query's views against the stored columns: a left-right flip moves every global
    # hash, so a seller's mirrored copy is found by these alone (few rows, small radius).
    # The same for a query on a replaced backdrop, restored to studio white (only such queries).
    alt_rows: dict[str, set[int]] = {"mirrored": set(), "backdrop": set()}  # found closer by that view
    alt_scans = [("mirrored", primary, sig.DHASH_MIRROR, rule.mirror_radius)]
    alt_scans += [("mirrored", sig.PHASH, sig.PHASH_MIRROR, rule.mirror_radius)]
    alt_scans += [("backdrop", primary, sig.DHASH_BACKDROP, rule.max_distance)]
    alt_scans += [("backdrop", sig.PHASH, sig.PHASH_BACKDROP, rule.candidate_radius)]
    for view, column, qkey, radius in alt_scans:
        if radius < 0 or column not in snap.signal_keys or qkey not in query:
            continue
        rows, dist = _scan(snap, column, unpack64(query[qkey]), radius)
        for r, d in zip(rows.tolist(), dist.tolist(), strict=True):
            if d < best.get(r, 65):
                best[r] = d
                alt_rows[view].add(r)
    return best, alt_rows


# A query turned by a few degrees, turned back (query-only; a re-cropped turn is zoomed in, hence the
# centre crop): its closest rows join the candidates, never displacing the query's own (measured: as
# one more view in the ranking, its near misses pushed a lightly turned copy's product past the cut).
ROTATED_CANDIDATES = 3


def _rotated_candidates(
    query: dict[str, bytes], snap: Snapshot, rule: Rule, primary: str, taken: set[int | None]
) -> list[int]:
    if sig.DHASH_ROTATED not in query:
        return []
    q = unpack64(query[sig.DHASH_ROTATED])
    best: dict[int, int] = {}
    for column in (primary, sig.DHASH_CROPS[0]):
        if column not in snap.signal_keys:
            continue
        rows, dist = _scan(snap, column, q, rule.candidate_radius)
        for r, d in zip(rows.tolist(), dist.tolist(), strict=True):
            if r not in taken and d < best.get(r, 65):
                best[r] = d
    return sorted(best, key=lambda r: (best[r], snap.ids[r]))[:ROTATED_CANDIDATES]


def _embedding_tier(
    q_emb: np.ndarray,
    snap: Snapshot,
    rule: Rule,
    order: list[int],
    accepted: dict[int, tuple[str, Evidence]],
    excluded_row: int | None,
    scored: dict[str, float] | None,
) -> None:
    """emb: the cosine of every candidate goes into its details; a candidate no other stage accepted
    is a match (stage "embedding") when its cosine reaches the calibrated `rule.embedding_min`."""
    rows = [r for r in dict.fromkeys([*order, *accepted]) if r != excluded_row]
    cosines = dict(zip(rows, snap.embeddings.cosines(q_emb, rows).tolist(), strict=True))
    for r, c in cosines.items():
        if not np.isfinite(c):
            continue
        c = round(c, 4)
        if scored is not None:
            scored[snap.ids[r]] = c
        if r in accepted:
            stage, extra = accepted[r]
            accepted[r] = (stage, {**extra, "cosine": c})
        elif rule.embedding_min is not None and c >= rule.embedding_min:
            accepted[r] = ("embedding", {"cosine": c})


def _word_candidates(
    query: dict[str, bytes], snap: Snapshot, rule: Rule, taken: set[int | None]
) -> list[int]:
    if rule.word_candidates <= 0 or sig.ORB not in query or not set(sig.ORB_WORDS) <= set(snap.signal_keys):
        return []
    words = verify.words(verify.unpack(query[sig.ORB]))  # every keypoint votes (a by-id query: as stored)
    if not len(words):
        return []
    taken_rows = {r for r in taken if r is not None}
    top = orb_words.index_for(snap).top(words, rule.word_candidates + len(taken_rows), taken_rows)
    return [r for r in top if r not in taken_rows][: rule.word_candidates]


class _RowDistances:
    """dHash distance of one query to single rows, on demand: `d[row]`."""

    def __init__(self, column: np.ndarray, query: int) -> None:
        self.column, self.query = column, np.uint64(query)

    def __getitem__(self, row: int) -> int:
        return int(np.bitwise_count(self.column[row] ^ self.query))


def _distances_of(accepted: dict[int, tuple[str, Evidence]], dh_all: _RowDistances) -> dict[int, int]:
    return {r: int(dh_all[r]) for r in accepted}


def _ranked(
    snap: Snapshot, accepted: dict[int, tuple[str, Evidence]], dh_of: dict[int, int], exclude: str | None
) -> list[Match]:
    out = []
    for row, (stage, extra) in accepted.items():
        pid = snap.ids[row]
        if pid == exclude:
            continue
        dist = dh_of[row]
        out.append(Match(pid, hamming.similarity(dist), dist, stage, {"dhash": dist, **extra}))
    out.sort(key=lambda m: (m.distance, m.product_id))
    return out
