"""Local-feature verification: ORB keypoints, compact blobs, and a RANSAC similarity-transform check.

Global hashes cannot follow crops; ORB matches with a geometric model can. It is a verifier for a
bounded list of candidates (about 0.4 ms per pair on one core), never a scan over the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

SIDE = 400  # both images are resized so their longer side is this many pixels before detection
INVENTORY_FEATURES = 256  # ~9 KB per product in Redis; recall barely moves from 500 (see report)
QUERY_FEATURES = 500
_RECORD = np.dtype([("x", "<u2"), ("y", "<u2"), ("d", "u1", 32)])  # 36 bytes per keypoint
_HEADER = np.dtype([("w", "<u2"), ("h", "<u2")])


@dataclass(frozen=True)
class Features:
    size: tuple[int, int]  # (width, height) of the resized image the points refer to
    points: np.ndarray  # (n, 2) float32
    descriptors: np.ndarray  # (n, 32) uint8


@dataclass(frozen=True)
class Verdict:
    good: int  # ratio-test matches
    inliers: int  # RANSAC inliers of a similarity transform
    plausible: bool  # transform looks like crop/pad/rescale of the same photo

    def passes(self, min_inliers: int) -> bool:
        return self.plausible and self.inliers >= min_inliers


def extract(image: Image.Image, n_features: int = INVENTORY_FEATURES) -> Features:
    grey = np.asarray(image.convert("L"))
    h, w = grey.shape
    scale = SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR  # upscale tiny queries so FAST fires
    grey = cv2.resize(grey, size, interpolation=interp)
    keypoints, desc = cv2.ORB_create(nfeatures=n_features).detectAndCompute(grey, None)
    if desc is None:
        return Features(size, np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8))
    # Strongest first: the local-feature words (common.localindex) come from the head of this list.
    order = np.argsort([-k.response for k in keypoints], kind="stable")
    points = np.array([keypoints[i].pt for i in order], dtype=np.float32)
    return Features(size, points, desc[order])


def pack(features: Features) -> bytes:
    header = np.array([features.size], dtype=_HEADER)
    rec = np.zeros(len(features.points), dtype=_RECORD)
    rec["x"] = np.clip(np.rint(features.points[:, 0]), 0, 65535)
    rec["y"] = np.clip(np.rint(features.points[:, 1]), 0, 65535)
    rec["d"] = features.descriptors
    return header.tobytes() + rec.tobytes()


def unpack(blob: bytes) -> Features:
    header = np.frombuffer(blob[: _HEADER.itemsize], dtype=_HEADER)[0]
    rec = np.frombuffer(blob[_HEADER.itemsize :], dtype=_RECORD)
    points = np.stack([rec["x"], rec["y"]], axis=1).astype(np.float32)
    return Features((int(header["w"]), int(header["h"])), points, np.ascontiguousarray(rec["d"]))


_MATCHER = cv2.BFMatcher(cv2.NORM_HAMMING)


def verify(query: Features, target: Features, ratio: float = 0.8) -> Verdict:
    """Does `query` show (part of) `target` under scale + translation? Lowe ratio test, then RANSAC."""
    if len(query.descriptors) < 8 or len(target.descriptors) < 8:
        return Verdict(0, 0, False)
    pairs = _MATCHER.knnMatch(query.descriptors, target.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < ratio * p[1].distance]
    if len(good) < 6:
        return Verdict(len(good), 0, False)
    src = query.points[[g.queryIdx for g in good]]
    dst = target.points[[g.trainIdx for g in good]]
    model, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=6.0)
    if model is None:
        return Verdict(len(good), 0, False)
    return Verdict(len(good), int(mask.sum()), _plausible(model, query.size, target.size))


def _plausible(model: np.ndarray, qsize: tuple[int, int], tsize: tuple[int, int]) -> bool:
    """Near-zero rotation; the query maps onto most of the target and is not far larger than it.

    Crops of up to ~30 % per side keep >= 0.4 of the target; padding/letterbox grow it <= ~2.6x.
    Unrelated photos that share a logo produce inliers too, but with arbitrary scale and placement.
    """
    rotation = np.degrees(np.arctan2(model[1, 0], model[0, 0]))
    x0, y0 = model @ [0.0, 0.0, 1.0]
    x1, y1 = model @ [qsize[0], qsize[1], 1.0]
    tw, th = tsize
    inter = max(0.0, min(x1, tw) - max(x0, 0.0)) * max(0.0, min(y1, th) - max(y0, 0.0))
    cover = inter / (tw * th)
    area = (x1 - x0) * (y1 - y0) / (tw * th)
    return bool(abs(rotation) <= 5 and cover >= 0.4 and 0.35 <= area <= 2.6)
