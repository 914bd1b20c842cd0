"""Local-feature verification: ORB keypoints, compact blobs, and a RANSAC similarity-transform check.

Global hashes cannot follow crops; ORB matches with a geometric model can. It is a verifier for a
bounded list of candidates (about 0.15 ms per pair on one core), never a scan over the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from common.index import orb_words
from common.match.presets import FIXED

SIDE = 400  # both images are resized so their longer side is this many pixels before detection
INVENTORY_FEATURES = 256  # keypoints detected in every image (recall barely moved from 500, see report)
# The inventory stores its 124 strongest keypoints (a query all 256) and of each descriptor 128 of its 256
# bits (STORED_BITS): 5 + 124 x 20 = 2,485 bytes, inside a 2.5 KB Redis allocation; a query compares the
# same 128 bits. Issue #11: 112 whole descriptors took 4 KB (4 + 112 x 36, tune seller sets 5-8 balanced
# recall 0.977 against 0.980 for all 256), 64 whole ones fit 2 KB but lost crops and pads (0.968); the
# figures of this layout are in benchmarks/README.md (bench_footprint.py, bench_accuracy.py).
STORED_FEATURES = 124
STORED_BYTES = 16
QUERY_FEATURES = 500
DESCRIPTOR_BYTES = 32  # what ORB computes


def _stored_bits() -> np.ndarray:
    """The descriptor bits (np.unpackbits positions) the inventory keeps: the 16 of the local-feature
    words (so a stored product's words are still words_of its keypoints), then the lowest others."""
    keep = set(orb_words.BITS.tolist())
    for b in range(DESCRIPTOR_BYTES * 8):
        if len(keep) == STORED_BYTES * 8:
            break
        keep.add(b)
    return np.array(sorted(keep))


STORED_BITS = _stored_bits()  # bytes 0-13 whole, 6 bits of byte 14 and the word bits past them
STORED_WORD_BITS = np.searchsorted(STORED_BITS, orb_words.BITS)  # orb_words.BITS in a stored descriptor
_POINT = 4  # x, y as little-endian uint16, then the descriptor bytes
_HEADER = np.dtype([("w", "<u2"), ("h", "<u2"), ("d", "u1")])  # frame size, descriptor bytes per point


Size = tuple[int, int]  # (width, height) of an image in the ORB frame


@dataclass(frozen=True)
class Features:
    size: Size  # (width, height) of the resized image the points refer to
    points: np.ndarray  # (n, 2) float32
    descriptors: np.ndarray  # (n, 32) uint8; (n, STORED_BYTES) as the inventory stores them
    _short: list[np.ndarray] = field(default_factory=list, init=False, compare=False, repr=False)


def narrow(descriptors: np.ndarray) -> np.ndarray:
    """Whole (n, 32) descriptors cut to the STORED_BITS the inventory keeps: (n, STORED_BYTES)."""
    bits = np.unpackbits(np.ascontiguousarray(descriptors, dtype=np.uint8), axis=1)[:, STORED_BITS]
    return np.packbits(bits, axis=1)


def short_descriptors(features: Features) -> np.ndarray:
    """The features' descriptors as the inventory stores them (cut once per Features: a query's are
    compared with a dozen candidates)."""
    if features.descriptors.shape[1] == STORED_BYTES:
        return features.descriptors
    if not features._short:
        features._short.append(narrow(features.descriptors))
    return features._short[0]


@dataclass(frozen=True)
class Verdict:
    good: int  # ratio-test matches
    inliers: int  # RANSAC inliers of a similarity transform
    plausible: bool  # transform looks like crop/pad/rescale of the same photo
    # The fitted similarity transform, query frame -> target frame (2x3), when RANSAC found one.
    model: np.ndarray | None = field(default=None, compare=False, repr=False)
    affine: bool = False  # the model is the full-affine second chance (callers judge it more strictly)

    def passes(self, min_inliers: int) -> bool:
        return self.plausible and self.inliers >= min_inliers


# Below this side (after the resize to SIDE) ORB finds nothing anyway: its 31 px edge margin on both
# sides leaves no room for a keypoint. Such images are indexed without local features.
MIN_ORB_SIDE = 64


def extract(image: Image.Image, n_features: int = INVENTORY_FEATURES) -> Features:
    """ORB features of `image` (any mode; pass the greyscale copy when there is one: no conversion)."""
    grey = np.asarray(image if image.mode == "L" else image.convert("L"))
    h, w = grey.shape
    scale = SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR  # upscale tiny queries so FAST fires
    grey = cv2.resize(grey, size, interpolation=interp)
    if min(size) < MIN_ORB_SIDE:  # a 400x1 strip: ORB's pyramid shrinks a side to 0 and OpenCV asserts
        return Features(size, np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8))
    keypoints, desc = cv2.ORB.create(nfeatures=n_features).detectAndCompute(grey, None)
    if desc is None:
        return Features(size, np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8))
    # Strongest first: the local-feature words (common.index.orb_words) come from the head of this list.
    order = np.argsort([-k.response for k in keypoints], kind="stable")
    points = np.asarray(cv2.KeyPoint.convert(keypoints), np.float32)[order]  # in C: 0.1 ms < a list
    return Features(size, points, desc[order])


def strongest(features: Features, n: int) -> Features:
    """The first `n` keypoints: the strongest, as extract orders them."""
    return Features(features.size, features.points[:n], features.descriptors[:n])


def stored(features: Features) -> Features:
    """What the inventory keeps of an image's features: the STORED_FEATURES strongest, STORED_BYTES each."""
    kept = strongest(features, STORED_FEATURES)
    return Features(kept.size, kept.points, narrow(kept.descriptors))


def pack(features: Features) -> bytes:
    """5-byte header (frame width, height; descriptor bytes d), then per keypoint x, y (uint16), d bytes."""
    n, d = features.descriptors.shape
    if d not in (STORED_BYTES, DESCRIPTOR_BYTES):
        raise ValueError(f"{d}-byte descriptors: only {STORED_BYTES} or {DESCRIPTOR_BYTES} are packed")
    header = np.array([(*features.size, d)], dtype=_HEADER)
    rec = np.zeros((n, _POINT + d), np.uint8)
    xy = np.clip(np.rint(features.points), 0, 65535).astype("<u2")
    rec[:, :_POINT] = xy.view(np.uint8).reshape(n, _POINT)
    rec[:, _POINT:] = features.descriptors
    return header.tobytes() + rec.tobytes()


def unpack(blob: bytes) -> Features:
    """The features of a pack blob; ValueError when it does not unpack (damaged, foreign)."""
    # One (n, 4 + d) byte view sliced into its two columns: a structured dtype's fields would be
    # gathered one by one (several times slower; every candidate of every query unpacks one).
    w, h, d = _header(blob)
    rec = np.frombuffer(blob, np.uint8, offset=_HEADER.itemsize).reshape(-1, _POINT + d)
    points = np.ascontiguousarray(rec[:, :_POINT]).view("<u2").astype(np.float32)
    return Features((w, h), points, np.ascontiguousarray(rec[:, _POINT:]))


def unpack_size(blob: bytes) -> tuple[int, int]:
    """The (width, height) of the frame a packed feature blob refers to, without unpacking points."""
    w, h, _ = _header(blob)
    return (w, h)


def _header(blob: bytes) -> tuple[int, int, int]:
    if len(blob) < _HEADER.itemsize:
        raise ValueError(f"keypoint blob of {len(blob)} bytes has no header")
    header = np.frombuffer(blob[: _HEADER.itemsize], dtype=_HEADER)[0]
    w, h, d = int(header["w"]), int(header["h"]), int(header["d"])
    if d not in (STORED_BYTES, DESCRIPTOR_BYTES) or not (w and h):
        raise ValueError(f"keypoint blob of a {w} x {h} frame with {d}-byte descriptors (not a pack blob)")
    return w, h, d


def words(features: Features) -> np.ndarray:
    """The local-feature words (orb_words) of the features' keypoints, whole or as the inventory stores
    them (STORED_BITS keeps the word bits)."""
    stored = features.descriptors.shape[1] == STORED_BYTES
    return orb_words.words_of(features.descriptors, STORED_WORD_BITS if stored else orb_words.BITS)


def _comparable(query: Features, target: Features) -> tuple[np.ndarray, np.ndarray]:
    """Both descriptor sets with the same bits: whole, or as stored when either side is stored."""
    if query.descriptors.shape[1] == target.descriptors.shape[1]:
        return query.descriptors, target.descriptors
    return short_descriptors(query), short_descriptors(target)


# The thresholds of the geometric check (ratio test, RANSAC, rotation, cover, area, stretch): FIXED
# in common.match.presets, with their reasons.

# A query verifies a dozen candidates and nearly all of them fail, most with a handful of ratio-test
# matches; matching every query keypoint is the cost. The ratio test judges each query keypoint on its
# own, so _PROBE keypoints spread over the response order (extract orders them) are matched first and
# the rest only when the probe found more than _PROBE_MAX_GOOD: a candidate that goes on gets exactly the
# matches of one full pass. Measured against stored 128-bit descriptors (orb124x128@1; balanced): the
# verifications that passed had >= 8 probe matches on the devset's 700 queries (141 of 9089; 1st
# percentile 8.4), >= 6 and >= 7 on seller sets of seeds 5 and 3 (196 of 10741, 387 of 18786); a probe of
# at most 3 ends 75 % of the rest (2: 61 %; with whole descriptors, 2 ended 74 %).
_PROBE = 64
_PROBE_MAX_GOOD = 3
_MIN_GOOD = 6  # fewer ratio-test matches than this fit no transform worth checking


def ratio_matches(query: np.ndarray, target: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """(query rows, target rows) of the Lowe ratio-test matches of two descriptor sets, in query order.

    cv2.batchDistance with K=2 is what BFMatcher.knnMatch runs (the same neighbours, ties alike),
    without building a DMatch object per keypoint. `target` needs >= 2 rows."""
    dist, idx = cv2.batchDistance(query, target, cv2.CV_32S, normType=cv2.NORM_HAMMING, K=2)
    rows = np.flatnonzero(dist[:, 0] < ratio * dist[:, 1])
    return rows, idx[rows, 0]


def _good_matches(
    query: np.ndarray, target: np.ndarray, ratio: float, needed: int
) -> tuple[np.ndarray, np.ndarray]:
    """ratio_matches, probing first when `needed` matches are what passing takes (see _PROBE): the
    probe's answer alone when it shows the candidate cannot get there."""
    n = len(query)
    if needed <= 0 or n <= _PROBE:
        return ratio_matches(query, target, ratio)
    # The probe keypoints are spread over the response order, not its head: when the query's
    # strongest corners are all on something the target lacks (a screenshot's text and buttons, the
    # seam of a replaced backdrop), the head finds nothing while the garment's keypoints would match.
    probe = np.zeros(n, bool)
    probe[np.linspace(0, n - 1, _PROBE).astype(np.intp)] = True
    p_rows, p_cols = ratio_matches(query[probe], target, ratio)
    if len(p_rows) <= _PROBE_MAX_GOOD or len(p_rows) + n - _PROBE < needed:
        return np.flatnonzero(probe)[p_rows], p_cols
    rest = np.flatnonzero(~probe)
    more_rows, more_cols = ratio_matches(query[rest], target, ratio)
    rows = np.concatenate([np.flatnonzero(probe)[p_rows], rest[more_rows]])
    cols = np.concatenate([p_cols, more_cols])
    order = np.argsort(rows, kind="stable")  # query order, as one full pass returns them
    return rows[order], cols[order]


def verify(
    query: Features, target: Features, ratio: float = FIXED.orb_ratio, min_inliers: int = 0
) -> Verdict:
    """Does `query` show (part of) `target` under scale + translation? Lowe ratio test, then RANSAC.

    With `min_inliers` (what passing takes): a candidate that cannot reach it is told so early (the
    probe above; no RANSAC with fewer matches than inliers needed), and when the similarity fit falls
    short of it but the ratio test kept enough matches, a full affine fit (mild perspective, keystone,
    stretch) gets a second chance, bounded to near-similarity by _plausible. A verdict that ends early
    counts the matches found until then (`good`) and no inliers."""
    if len(query.descriptors) < 8 or len(target.descriptors) < 8:
        return Verdict(0, 0, False)
    q_desc, t_desc = _comparable(query, target)
    q_rows, t_rows = _good_matches(q_desc, t_desc, ratio, min_inliers)
    verdict = _fit(query, target, q_rows, t_rows, min_inliers)
    if min_inliers <= 0 or verdict.passes(min_inliers) or verdict.good < max(_MIN_GOOD, min_inliers):
        return verdict
    # A failed fit gets one retry without the query's hub keypoints: those nearest to more than
    # FIXED.orb_hub_max of the candidate's keypoints (a replaced backdrop's repeated texture, a
    # pattern's repeats) match anything and crowd RANSAC with outliers.
    hubs = _hubs(q_desc, t_desc)
    keep = ~hubs[q_rows]
    if keep.all():
        return verdict
    again = _fit(query, target, q_rows[keep], t_rows[keep], min_inliers)
    return again if again.passes(min_inliers) else verdict


def _hubs(query: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(n_query,) bool: the query keypoints that are the nearest neighbour of more than
    FIXED.orb_hub_max target keypoints."""
    _, idx = cv2.batchDistance(target, query, cv2.CV_32S, normType=cv2.NORM_HAMMING, K=1)
    return np.bincount(idx[:, 0], minlength=len(query)) > FIXED.orb_hub_max


def _fit(
    query: Features, target: Features, q_rows: np.ndarray, t_rows: np.ndarray, min_inliers: int
) -> Verdict:
    """The RANSAC fit of the matches (query rows, target rows): similarity, then the affine second chance."""
    good = len(q_rows)
    if good < max(_MIN_GOOD, min_inliers):
        return Verdict(good, 0, False)
    src, dst = query.points[q_rows], target.points[t_rows]
    model, mask = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=FIXED.ransac_reproj
    )
    if model is None:
        return Verdict(good, 0, False)
    verdict = Verdict(good, int(mask.sum()), _plausible(model, query.size, target.size), model)
    if verdict.inliers < min_inliers <= good:
        affine, amask = cv2.estimateAffine2D(
            src, dst, method=cv2.RANSAC, ransacReprojThreshold=FIXED.ransac_reproj
        )
        if affine is not None and int(amask.sum()) > verdict.inliers:
            plausible = _plausible(affine, query.size, target.size) and _near_similarity(affine)
            return Verdict(good, int(amask.sum()), plausible, affine, affine=True)
    return verdict


def _near_similarity(model: np.ndarray) -> bool:
    sv = np.linalg.svd(model[:, :2], compute_uv=False)
    return bool(sv[1] > 0 and sv[0] / sv[1] <= FIXED.max_anisotropy and np.linalg.det(model[:, :2]) > 0)


def _plausible(model: np.ndarray, qsize: tuple[int, int], tsize: tuple[int, int]) -> bool:
    """Near-zero rotation; the query maps onto most of the target and is not far larger than it.

    Crops of up to ~30 % per side keep >= 0.4 of the target; padding/letterbox grow it <= ~2.6x.
    Unrelated photos that share a logo produce inliers too, but with arbitrary scale and placement.
    (The limits: FIXED.max_rotation, min_cover, min_area, max_area.)
    """
    rotation = np.degrees(np.arctan2(model[1, 0], model[0, 0]))
    x0, y0 = model @ [0.0, 0.0, 1.0]
    x1, y1 = model @ [qsize[0], qsize[1], 1.0]
    tw, th = tsize
    inter = max(0.0, min(x1, tw) - max(x0, 0.0)) * max(0.0, min(y1, th) - max(y0, 0.0))
    cover = inter / (tw * th)
    area = (x1 - x0) * (y1 - y0) / (tw * th)
    return bool(
        abs(rotation) <= FIXED.max_rotation
        and cover >= FIXED.min_cover
        and FIXED.min_area <= area <= FIXED.max_area
    )
