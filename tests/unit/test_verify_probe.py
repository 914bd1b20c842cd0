"""The matching shortcuts of verify.verify: the same matches as BFMatcher.knnMatch, and a probe that
ends only candidates that could not pass."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from common.index import orb_words
from common.match import verify
from common.match.presets import FIXED
from tests.support import samplegen

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "inventory" / "0203242006.jpg"


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


def test_the_stored_features_are_the_strongest_with_128_bits_each() -> None:
    feats = verify.extract(Image.open(SAMPLE))  # 256 keypoints
    assert len(feats.points) > verify.STORED_FEATURES
    blob = verify.pack(verify.stored(feats))
    assert len(blob) == 5 + verify.STORED_FEATURES * (4 + verify.STORED_BYTES) <= 2560  # a 2.5 KB allocation
    back = verify.unpack(blob)
    assert back.descriptors.shape == (verify.STORED_FEATURES, verify.STORED_BYTES)
    strongest = feats.descriptors[: verify.STORED_FEATURES]
    assert np.array_equal(back.descriptors, verify.narrow(strongest))
    # the stored bits keep the local-feature words: a stored product votes with the words it was indexed by
    words = orb_words.words_of(back.descriptors, verify.STORED_WORD_BITS)
    assert np.array_equal(words, orb_words.words_of(strongest))
    assert np.array_equal(back.points, np.rint(feats.points[: verify.STORED_FEATURES]))
    assert verify.unpack_size(blob) == feats.size


def test_a_query_matches_stored_keypoints_on_the_bits_both_have() -> None:
    # Given a query's whole descriptors against a stored product's shortened ones
    photo = Image.open(SAMPLE)
    query = verify.extract(photo.crop((0, 0, photo.width - 30, photo.height - 40)), verify.QUERY_FEATURES)
    target = verify.unpack(verify.pack(verify.stored(verify.extract(photo))))
    # Then the verdict is the one of both sides cut to the stored bits, and the photo is found
    cut = verify.Features(query.size, query.points, verify.narrow(query.descriptors))
    assert verify.verify(query, target, min_inliers=18) == verify.verify(cut, target, min_inliers=18)
    assert verify.verify(query, target, min_inliers=18).passes(18)


def test_a_blob_of_another_layout_is_refused() -> None:
    with pytest.raises(ValueError):
        verify.unpack(b"\x90\x01\x58\x02" + bytes(36 * 3))  # orb112@1's 4-byte header: 400 x 600, 3 points
    with pytest.raises(ValueError):
        verify.unpack(b"\x01")
    with pytest.raises(ValueError):  # a frame of no size (its geometry check would divide by zero)
        verify.unpack(b"\x00\x00\x58\x02\x10" + bytes(20 * 3))
