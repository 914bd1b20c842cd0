"""Stage 3 for pairs of indexed products (neardup dedup): the same PDQ, ORB + RANSAC and photometric
checks as a query's verification (common.match.confirm), with stored signatures on both sides."""

from __future__ import annotations

import functools
from collections.abc import Callable

from common.match import photometric, verify
from common.match.confirm import Blobs, Evidence, _pdq_confirms, _skip_damaged
from common.match.presets import Rule
from common.signals import signal_set as sig


def _orb_confirms(
    q_feat: verify.Features,
    q_thumb: photometric.Thumb | None,
    t_orb: bytes | None,
    thumb_of: Callable[[], bytes | None],
    rule: Rule,
) -> Evidence | None:
    """ORB + RANSAC with plausible geometry, then the photometric check of the aligned thumbnails.

    A product stored without a thumbnail (an index written before thumb@1) is judged on ORB alone."""
    if t_orb is None:
        return None
    verdict = verify.verify(q_feat, verify.unpack(t_orb))
    if not verdict.passes(rule.orb_min_inliers):
        return None
    extra: Evidence = {"orb_inliers": verdict.inliers, "orb_matches": verdict.good}
    t_thumb = thumb_of()
    if q_thumb is None or t_thumb is None:
        return extra
    assert verdict.model is not None  # a verdict that passes carries its transform
    t_feat_size = verify.unpack_size(t_orb)
    t_photo = photometric.unpack_thumb(t_thumb)
    photo = photometric.photometric(q_thumb, t_photo, verdict.model, q_feat.size, t_feat_size)
    if not photo.passes(rule.photo_min):
        return None
    return {**extra, "photo": round(photo.luma, 3), "chroma": round(photo.chroma_corr, 3)}


def verify_pairs(
    pairs: list[tuple[str, str]], rule: Rule, blobs: Blobs, mirrored: list[bool] | None = None
) -> list[tuple[str, Evidence] | None]:
    """For each pair of indexed product ids, the (stage, extra) that confirms them as near-duplicates
    (PDQ within rule.pdq_max on informative images, else ORB + RANSAC + the photometric check), or None.
    Pairs flagged in `mirrored` (found by the mirror's hashes) are judged by the stored mirror PDQ alone
    (stage "mirror"): ORB keypoints are stored for the straight photo only.

    Blobs are fetched in bulk: one `blobs(key, ids)` call per signal (PDQ, ORB, and the thumbnail)
    over the unique ids of all pairs. Cost per pair: a PDQ comparison (~5 us); pairs PDQ does not
    confirm add one ORB verification (~0.15 ms: stored 124 x 124 keypoints of 128 bits, ratio test, RANSAC)
    and, for ORB passes, the photometric check (~0.1 ms). The first id plays the query's part.
    """
    if not pairs:
        return []
    if mirrored is not None and any(mirrored):
        straight = verify_pairs([p for p, m in zip(pairs, mirrored, strict=True) if not m], rule, blobs)
        return _verify_mirrored(pairs, mirrored, rule, blobs, straight)
    uniq = list(dict.fromkeys(pid for pair in pairs for pid in pair))
    pdq = dict(zip(uniq, blobs(sig.PDQ, uniq), strict=True))
    orb = dict(zip(uniq, blobs(sig.ORB, uniq), strict=True))
    thumbs = dict(zip(uniq, blobs(sig.THUMB, uniq), strict=True))
    features: dict[str, verify.Features] = {}
    thumb_cache: dict[str, photometric.Thumb | None] = {}

    def feat(pid: str) -> verify.Features:
        if pid not in features:
            blob = orb[pid]
            assert blob is not None  # asked only for pairs whose keypoints are both stored
            features[pid] = verify.unpack(blob)
        return features[pid]

    def thumb(pid: str) -> photometric.Thumb | None:
        if pid not in thumb_cache:
            blob = thumbs[pid]
            thumb_cache[pid] = photometric.unpack_thumb(blob) if blob is not None else None
        return thumb_cache[pid]

    out: list[tuple[str, Evidence] | None] = []
    for a, b in pairs:
        extra = _pdq_confirms(pdq[a], pdq[b], rule)
        if extra is not None:
            out.append(("pdq", extra))
            continue
        if orb[a] is None or orb[b] is None:
            out.append(None)
            continue
        extra = None
        with _skip_damaged(f"{a}/{b}"):
            extra = _orb_confirms(feat(a), thumb(a), orb[b], functools.partial(thumbs.__getitem__, b), rule)
        out.append(("orb", extra) if extra is not None else None)
    return out


def _verify_mirrored(
    pairs: list[tuple[str, str]],
    mirrored: list[bool],
    rule: Rule,
    blobs: Blobs,
    straight: list[tuple[str, Evidence] | None],
) -> list[tuple[str, Evidence] | None]:
    """verify_pairs' answers with the mirrored pairs judged by the mirror's PDQ (either way round)."""
    flipped = [p for p, m in zip(pairs, mirrored, strict=True) if m]
    uniq = list(dict.fromkeys(pid for pair in flipped for pid in pair))
    pdq = dict(zip(uniq, blobs(sig.PDQ, uniq), strict=True))
    pdq_m = dict(zip(uniq, blobs(sig.PDQ_MIRROR_KEY, uniq), strict=True))
    verdicts = iter(straight)
    out: list[tuple[str, Evidence] | None] = []
    for (a, b), m in zip(pairs, mirrored, strict=True):
        if not m:
            out.append(next(verdicts))
            continue
        extra = _pdq_confirms(pdq_m[a], pdq[b], rule, rule.pdq_mirror_max)
        extra = extra or _pdq_confirms(pdq[a], pdq_m[b], rule, rule.pdq_mirror_max)
        out.append(("mirror", {**extra, "mirrored": True}) if extra is not None else None)
    return out
