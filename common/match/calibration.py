"""Choosing the embedding stage's threshold from labelled queries, at a target precision.

Input per labelled query: the inventory ids it truly matches and those to ignore (the devset's
labels.json: colour variants), the matches the other stages found (with their stage), and the
cosine of every candidate the embedding scored. A threshold t adds, as stage "embedding", every
scored candidate with cosine >= t that no other stage accepted — exactly what a query does with
`embedding_min = t` (common.pipeline), so the figures here are the system's at that threshold.

The chosen threshold is the lowest (most recall) whose embedding-only matches reach the target
precision with at least `min_matches` true ones: a model that knows nothing reaches it at no
threshold (its few lucky top pairs are below `min_matches`), and is rejected. The queries are split
in two by a hash of their names: the threshold is chosen on one half and reported on the other.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Labelled:
    name: str
    truth: frozenset[str]
    ignore: frozenset[str]
    found: dict[str, str]  # product id -> stage, for matches of the other stages (tier off)
    scored: dict[str, float] = field(default_factory=dict)  # product id -> cosine


@dataclass(frozen=True)
class Point:
    threshold: float
    emb_tp: int  # embedding-only matches that are true
    emb_fp: int  # ... that are false (ignored ids count as neither)
    tp: int  # all stages together
    fp: int
    n_true: int

    @property
    def emb_precision(self) -> float:
        return self.emb_tp / (self.emb_tp + self.emb_fp) if self.emb_tp + self.emb_fp else 1.0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / self.n_true if self.n_true else 0.0


def split(names: Iterable[str], held_out: float = 0.5) -> tuple[set[str], set[str]]:
    """(fit, held-out) by a stable hash of each name: the same split on every run and machine."""
    fit: set[str] = set()
    held: set[str] = set()
    for name in names:
        h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") / 2**32
        (held if h < held_out else fit).add(name)
    return fit, held


def stage_counts(results: Sequence[Labelled]) -> dict[str, tuple[int, int]]:
    """stage -> (true, false) matches of the other stages (what the index finds without the tier)."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for q in results:
        for pid, stage in q.found.items():
            if pid in q.truth:
                counts[stage][0] += 1
            elif pid not in q.ignore:
                counts[stage][1] += 1
    return {stage: (tp, fp) for stage, (tp, fp) in sorted(counts.items())}


def at(results: Sequence[Labelled], threshold: float | None) -> Point:
    """All figures with the embedding tier at `threshold` (None: off)."""
    emb_tp = emb_fp = tp = fp = n_true = 0
    for q in results:
        n_true += len(q.truth)
        flagged = set(q.found)
        if threshold is not None:
            extra = {p for p, c in q.scored.items() if c >= threshold and p not in q.found}
            emb_tp += len(extra & q.truth)
            emb_fp += len(extra - q.truth - q.ignore)
            flagged |= extra
        tp += len(flagged & q.truth)
        fp += len(flagged - q.truth - q.ignore)
    return Point(threshold if threshold is not None else float("inf"), emb_tp, emb_fp, tp, fp, n_true)


def embedding_only_curve(results: Sequence[Labelled]) -> list[tuple[float, int, int]]:
    """(threshold, true, false) embedding-only matches at every cosine where they change, highest
    threshold first: one sort of all scored pairs, then running counts."""
    items = []
    for q in results:
        for p, c in q.scored.items():
            if p in q.found:
                continue
            items.append((c, 1 if p in q.truth else (0 if p in q.ignore else -1)))
    items.sort(key=lambda x: -x[0])
    out: list[tuple[float, int, int]] = []
    tp = fp = 0
    for i, (c, kind) in enumerate(items):
        tp += kind == 1
        fp += kind == -1
        if i + 1 == len(items) or items[i + 1][0] != c:
            out.append((c, tp, fp))
    return out


def curve(results: Sequence[Labelled], thresholds: Iterable[float]) -> list[Point]:
    return [at(results, t) for t in thresholds]


def choose(results: Sequence[Labelled], target: float, min_matches: int) -> Point | None:
    """The lowest threshold whose embedding-only matches reach `target` precision with at least
    `min_matches` true ones; None when no threshold does (the stage stays off)."""
    chosen = None
    for t, tp, fp in embedding_only_curve(results):
        if tp >= max(1, min_matches) and tp / (tp + fp) >= target:
            chosen = t
    return at(results, chosen) if chosen is not None else None
