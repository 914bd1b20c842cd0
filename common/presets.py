"""Named match presets. `original` keeps the replaced system's rule for compatibility."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    name: str
    max_distance: int  # dHash Hamming radius of the candidate scan


PRESETS: dict[str, Rule] = {
    "original": Rule("original", max_distance=6),  # similarity >= 90 %
    "strict": Rule("strict", max_distance=4),
    "balanced": Rule("balanced", max_distance=6),
    "loose": Rule("loose", max_distance=10),
}


def resolve(preset: str, max_distance: int | None = None, min_similarity: float | None = None) -> Rule:
    """The preset's rule, with an explicit distance or similarity overriding its dHash radius."""
    from common.matching import distance_for_similarity

    rule = PRESETS[preset]
    if min_similarity is not None:
        max_distance = distance_for_similarity(min_similarity)
    if max_distance is not None:
        rule = Rule(f"{rule.name}+d{max_distance}", max_distance=max_distance)
    return rule
