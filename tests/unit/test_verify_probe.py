"""The matching shortcuts of verify.verify: the same matches as BFMatcher.knnMatch, and a probe that
ends only candidates that could not pass."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from common.match import verify
from common.match.presets import FIXED
from tests.support import samplegen


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    rng = np.random.default_rng(31)
    return [samplegen.render_product(rng) for _ in range(4)]


def _knn_reference(q: verify.Features, t: verify.Features, ratio: float) -> list[tuple[int, int]]:
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(q.descriptors, t.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < ratio * p[1].distance]
    return [(g.queryIdx, g.trainIdx) for g in good]


def test_ratio_matches_are_knn_matches(photos: list[Image.Image]) -> None:
    feats = [verify.extract(p) for p in photos]
    crop = verify.extract(photos[0].crop((20, 30, 300, 420)))
    for q in [crop, *feats]:
        for t in feats:
            rows, cols = verify.ratio_matches(q.descriptors, t.descriptors, FIXED.orb_ratio)
            got = list(zip(rows.tolist(), cols.tolist(), strict=True))
            assert got == _knn_reference(q, t, FIXED.orb_ratio)


def test_a_passing_candidate_gets_every_match(photos: list[Image.Image]) -> None:
    padded = ImageOps.expand(photos[1], (60, 0, 60, 0), fill=(255, 255, 255))
    q, t = verify.extract(padded), verify.extract(photos[1])
    assert len(q.descriptors) > verify._PROBE  # the probe runs
    verdict = verify.verify(q, t, min_inliers=18)
    assert verdict.passes(18)
    assert verdict.good == len(_knn_reference(q, t, FIXED.orb_ratio))
    assert verdict.inliers == verify.verify(q, t).inliers  # no min_inliers: no probe, same fit


def test_the_probe_ends_an_unrelated_candidate(photos: list[Image.Image]) -> None:
    noise = np.random.default_rng(5).integers(0, 256, (400, 300), dtype=np.uint8).repeat(2, 0).repeat(2, 1)
    q, t = verify.extract(photos[1]), verify.extract(Image.fromarray(noise))
    assert len(q.descriptors) > verify._PROBE
    full = verify.verify(q, t)  # no min_inliers: every keypoint matched, RANSAC run
    probed = verify.verify(q, t, min_inliers=18)
    assert not full.passes(18) and not probed.passes(18)
    assert probed.good <= verify._PROBE_MAX_GOOD < full.good  # the probe's count: it ended the match


def test_unpack_is_the_packed_features(photos: list[Image.Image]) -> None:
    feats = verify.extract(photos[0])
    back = verify.unpack(verify.pack(feats))
    assert back.points.dtype == np.float32 and back.points.shape == (len(feats.points), 2)
    assert np.array_equal(back.points, np.rint(feats.points))
    assert back.descriptors.flags.c_contiguous and np.array_equal(back.descriptors, feats.descriptors)
    with pytest.raises(ValueError):
        verify.unpack(verify.pack(feats)[:-1])  # a damaged blob is refused, not misread


def test_unpack_of_a_blob_without_keypoints() -> None:
    blank = verify.extract(Image.new("L", (300, 300), 255))
    back = verify.unpack(verify.pack(blank))
    assert back.size == blank.size and back.points.shape == (0, 2) and back.descriptors.shape == (0, 32)
