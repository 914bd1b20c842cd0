"""Named match presets, chosen from measured curves on the devset (see benchmarks/bench_accuracy.py).

`original` keeps the replaced system's rule (dHash distance <= 6, nothing else) for compatibility.
The others run the verified pipeline: exact bytes, then candidates from several 64-bit scans,
confirmed by PDQ agreement or by ORB + RANSAC geometry.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Rule:
    name: str
    max_distance: int  # dHash Hamming radius: `original` accepts within it; others verify within it
    verified: bool = True  # False: the original rule, dHash alone decides
    candidate_radius: int = 14  # radius of the extra views' scans (pHash, trimmed, crop windows)
    max_candidates: int = 12  # candidates verified per query (each costs blob fetch + ~0.4 ms ORB)
    pdq_max: int = 31  # PDQ (256-bit) distance that confirms a candidate on its own
    orb_min_inliers: int = 18  # ORB RANSAC inliers (with plausible geometry) that confirm a candidate


PRESETS: dict[str, Rule] = {
    "original": Rule("original", max_distance=6, verified=False),  # similarity >= 90 %
    "strict": Rule("strict", max_distance=16, pdq_max=24, orb_min_inliers=25),
    "balanced": Rule("balanced", max_distance=16, pdq_max=31, orb_min_inliers=18),
    "loose": Rule(
        "loose", max_distance=18, candidate_radius=18, max_candidates=24, pdq_max=36, orb_min_inliers=15
    ),
}


def resolve(preset: str, max_distance: int | None = None, min_similarity: float | None = None) -> Rule:
    """The preset's rule, with an explicit distance or similarity overriding its dHash radius."""
    from common.matching import distance_for_similarity

    rule = PRESETS[preset]
    if min_similarity is not None:
        max_distance = distance_for_similarity(min_similarity)
    if max_distance is not None:
        rule = replace(rule, name=f"{rule.name}+d{max_distance}", max_distance=max_distance)
    return rule
