"""ORB + RANSAC verification: crops and rescales of one photo pass, other photos do not."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from common import samplegen, verify


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    rng = np.random.default_rng(21)
    return [samplegen.render_product(rng) for _ in range(3)]


def test_pack_round_trip(photos: list[Image.Image]) -> None:
    feats = verify.extract(photos[0])
    back = verify.unpack(verify.pack(feats))
    assert back.size == feats.size
    assert np.array_equal(back.descriptors, feats.descriptors)
    assert np.allclose(back.points, feats.points, atol=0.5)
    assert len(verify.pack(feats)) <= 4 + 36 * verify.INVENTORY_FEATURES


def test_crop_and_rescale_verify(photos: list[Image.Image]) -> None:
    src = photos[0]
    target = verify.extract(src)
    crop = src.crop((30, 40, 330, 480)).resize((200, 293))
    verdict = verify.verify(verify.extract(crop, verify.QUERY_FEATURES), target)
    assert verdict.plausible and verdict.inliers >= 18


def test_padding_verifies(photos: list[Image.Image]) -> None:
    padded = ImageOps.expand(photos[1], (90, 0, 90, 0), fill=(0, 0, 0))
    verdict = verify.verify(verify.extract(padded), verify.extract(photos[1]))
    assert verdict.passes(18)


def test_other_photo_does_not_verify(photos: list[Image.Image]) -> None:
    verdict = verify.verify(verify.extract(photos[0]), verify.extract(photos[2]))
    assert not verdict.passes(18)


def test_featureless_image_is_not_plausible() -> None:
    blank = verify.extract(Image.new("RGB", (60, 90), (255, 255, 255)))
    assert verify.verify(blank, blank) == verify.Verdict(0, 0, False)
