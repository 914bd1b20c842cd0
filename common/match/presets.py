"""Named match presets, chosen from measured curves on the devset (see benchmarks/bench_accuracy.py).

`original` keeps the replaced system's rule (dHash distance <= 6, nothing else) for compatibility.
The others run the verified pipeline: exact bytes, then candidates from several 64-bit scans and from
local-feature word votes (common.index.orb_words), confirmed by PDQ agreement or by ORB + RANSAC geometry.

Devset (400 products, 700 queries), in-process, after the photometric check (thumb@1):
  strict   P 1.000 R 0.939 F1 0.968  c4 0.881  distractors 0.000
  balanced P 0.998 R 0.951 F1 0.974  c4 0.910  distractors 0.000   (was P 0.996 F1 0.975 c4 0.919)
  loose    P 0.985 R 0.957 F1 0.971  c4 0.919  distractors 0.000   (was P 0.969 F1 0.965)
Generated set (samplegen, 60 products, seed 11) precision: strict 0.973, balanced 0.818 -> 0.923,
loose 0.655 -> 0.947 (same-template garments that ORB aligns are now rejected by the thumbnails).
Inlier bars and photo_min chosen from curves over devset + two generated sets of 200
(scratch-accuracy/thumb): balanced 18 -> 20 inliers, loose 15 -> 17, with the check in place.
Hash candidates beyond 6 added nothing once 8 word candidates were in (same scores at 6+6, 4+8, 8+8);
each candidate costs a blob fetch and ~0.4 ms of ORB, so the lists stay short.

Seller edits (issue #10; benchmarks/seller_edits.py sets, 14 families, thresholds read on the `tune`
part, figures on the `held` part; benchmarks/bench_curves.py prints the curves): the mirror fields,
pdq_flat_max and photo_min_affine are new. Curves on the tune part (seeds 1+2, 1666 queries), balanced:
  orb_min_inliers 18 / 20 / 22 / 24 / 26: P 0.996 0.996 0.996 0.998 0.998, R 0.957 0.955 0.955 0.953
  0.951 (held: P 0.985 0.993 0.995 1.000 1.000, R 0.977 0.975 0.970 0.967 0.959); 24 also drops the
  devset's crop recall 0.955 -> 0.909, so balanced keeps 20 (F1 ties) and strict keeps 25.
  photo_min 0.6 / 0.7 / 0.8: R 0.955 0.953 0.945 at the same P: 0.6 stays.
  pdq_flat_max 8 / 12 / 16: no change on either part (12 kept, the middle).
  mirror_radius 6 / 10 / 14: R 0.955 for all, P 0.996 0.996 0.994: 6, the cheapest scan (MIH).
  pdq_max 28 / 31 / 34: R 0.955 on tune for all (held 0.974 0.975 0.977): 31 stays.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Rule:
    name: str
    max_distance: int  # dHash Hamming radius: `original` accepts within it; others verify within it
    verified: bool = True  # False: the original rule, dHash alone decides
    candidate_radius: int = 14  # radius of the extra views' scans (pHash, trimmed, crop windows)
    max_candidates: int = 6  # hash candidates verified per query (each costs blob fetch + ~0.4 ms ORB)
    pdq_max: int = 31  # PDQ (256-bit) distance that confirms a candidate on its own
    orb_min_inliers: int = 18  # ORB RANSAC inliers (with plausible geometry) that confirm a candidate
    word_candidates: int = 8  # extra candidates by local-feature word votes (common.index.orb_words)
    # ORB-confirmed candidates must also agree photometrically after alignment (common.match.verify
    # .photometric): at least this share of textured thumbnail blocks, and the chroma check.
    photo_min: float = 0.6
    # emb: the learned embedding (NEARDUP_EMBEDDING_MODEL): its nearest products join the verified
    # candidates, and one whose cosine reaches `embedding_min` is a match on its own (stage
    # "embedding"). embedding_min stays None (that tier off) until `neardup calibrate --write`.
    embedding_candidates: int = 6
    embedding_min: float | None = None
    # Mirrored copies: radius of the mirrored query's dHash/pHash scans (-1: off) and the PDQ
    # distance (query mirrored vs stored) that confirms one.
    mirror_radius: int = 6
    pdq_mirror_max: int = 31
    # Low-information photos (PDQ quality < 50) within this PDQ distance go to the photometric check.
    pdq_flat_max: int = 12
    # ORB passes by the full-affine fit (mild perspective) need this photometric agreement.
    photo_min_affine: float = 0.9


PRESETS: dict[str, Rule] = {
    "original": Rule("original", max_distance=6, verified=False),  # similarity >= 90 %
    "strict": Rule("strict", max_distance=16, pdq_max=24, orb_min_inliers=25, photo_min=0.6),
    "balanced": Rule("balanced", max_distance=16, pdq_max=31, orb_min_inliers=20, photo_min=0.6),
    "loose": Rule(
        "loose",
        max_distance=18,
        candidate_radius=18,
        max_candidates=12,
        word_candidates=12,
        pdq_max=36,
        orb_min_inliers=17,
        photo_min=0.75,
    ),
}


def resolve(preset: str, max_distance: int | None = None, min_similarity: float | None = None) -> Rule:
    """The preset's rule, with an explicit distance or similarity overriding its dHash radius."""
    from common.index.hamming import distance_for_similarity

    rule = PRESETS[preset]
    if min_similarity is not None:
        max_distance = distance_for_similarity(min_similarity)
    if max_distance is not None:
        rule = replace(rule, name=f"{rule.name}+d{max_distance}", max_distance=max_distance)
    return rule
