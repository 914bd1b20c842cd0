"""Choosing the embedding stage's threshold at a target precision (common.match.calibration)."""

from __future__ import annotations

import numpy as np

from common.match import calibration
from common.match.calibration import Labelled


def _queries(n: int, true_cos, false_cos, seed: int = 0, found_share: float = 0.5) -> list[Labelled]:
    """n labelled queries, each with one true product: half already found by another stage; the
    embedding scores the true product with true_cos(rng) and five others with false_cos(rng)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        truth = f"p{i}"
        found = {truth: "pdq"} if rng.random() < found_share else {}
        scored = {truth: round(float(true_cos(rng)), 4)}
        scored.update({f"x{i}_{k}": round(float(false_cos(rng)), 4) for k in range(5)})
        out.append(Labelled(f"q{i}", frozenset({truth}), frozenset(), found, scored))
    return out


def test_a_model_that_separates_gets_the_lowest_threshold_that_reaches_the_target():
    # Given true pairs at cosine 0.90-0.99 and false ones at 0.2-0.85
    results = _queries(200, lambda r: r.uniform(0.9, 0.99), lambda r: r.uniform(0.2, 0.85))
    # When a threshold is chosen at precision 0.98
    chosen = calibration.choose(results, target=0.98, min_matches=10)
    # Then it is the lowest that keeps embedding-only matches at >= 0.98, and recall rose
    assert chosen is not None and chosen.emb_precision >= 0.98
    assert calibration.at(results, chosen.threshold - 0.01).emb_precision < 0.98
    assert chosen.recall == 1.0 > calibration.at(results, None).recall
    # At precision 1 it lies between the true and false cosines, every embedding-only match true
    exact = calibration.choose(results, target=1.0, min_matches=10)
    assert exact is not None and 0.85 < exact.threshold <= 0.9
    assert exact.emb_fp == 0 and exact.emb_tp == sum(1 for q in results if not q.found)


def test_a_model_that_knows_nothing_is_rejected():
    # Given cosines that carry no information (true and false drawn alike)
    same = lambda r: r.uniform(0.3, 1.0)  # noqa: E731
    for seed in range(5):
        results = _queries(300, same, same, seed=seed)
        # Then no threshold reaches the target with enough true matches
        assert calibration.choose(results, target=0.98, min_matches=10) is None


def test_a_few_lucky_top_pairs_are_not_enough():
    # Given one true pair above every false one, and nothing else separating
    results = _queries(100, lambda r: r.uniform(0.0, 0.5), lambda r: r.uniform(0.0, 0.5))
    lucky = Labelled("lucky", frozenset({"t"}), frozenset(), {}, {"t": 0.999})
    assert calibration.choose([*results, lucky], 0.98, min_matches=1) is not None
    assert calibration.choose([*results, lucky], 0.98, min_matches=10) is None


def test_figures_match_the_system_rule_and_ignored_ids_count_neither_way():
    q = Labelled(
        "q", frozenset({"a"}), frozenset({"v"}), {"a": "exact", "z": "orb"}, {"a": 1.0, "v": 0.95, "b": 0.9}
    )
    p = calibration.at([q], 0.9)
    # a is found by exact (not embedding-only); v is ignored; b is a false embedding-only match
    assert (p.emb_tp, p.emb_fp, p.tp, p.fp) == (0, 1, 1, 2)
    assert calibration.stage_counts([q]) == {"exact": (1, 0), "orb": (0, 1)}
    curve = calibration.embedding_only_curve([q])
    assert curve == [(0.95, 0, 0), (0.9, 0, 1)]
    assert calibration.at([q], None).fp == 1


def test_the_split_is_stable_and_roughly_even():
    names = [f"q_{i:05d}.jpg" for i in range(1000)]
    fit, held = calibration.split(names, 0.5)
    assert fit | held == set(names) and not fit & held
    assert 400 < len(held) < 600
    assert calibration.split(names, 0.5) == (fit, held)
    assert calibration.split(names, 0.0) == (set(names), set())
