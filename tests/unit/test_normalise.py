"""Uniform-border trimming and crop views."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from common.signals import normalise
from tests.support import samplegen


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return samplegen.render_product(np.random.default_rng(5))


@pytest.mark.parametrize("fill", [(0, 0, 0), (255, 255, 255), (240, 240, 240)])
def test_padding_is_trimmed_back_to_the_photo(photo: Image.Image, fill: tuple[int, int, int]) -> None:
    # Given a photo whose own border is not uniform, When padded with a uniform band and trimmed,
    # Then the box is the original photo within a couple of pixels.
    framed = ImageOps.expand(photo.crop((20, 20, 340, 520)), (30, 50, 30, 50), fill=(128, 30, 30))
    padded = ImageOps.expand(framed, (40, 0, 40, 0), fill=fill)
    left, top, right, bottom = normalise.trim_box(padded)
    assert abs(left - 40) <= 2 and abs(right - (40 + framed.width)) <= 2
    assert top <= 2 and bottom >= padded.height - 2


def test_blank_image_is_left_whole() -> None:
    blank = Image.new("RGB", (100, 80), (255, 255, 255))
    assert normalise.trim_box(blank) == (0, 0, 100, 80)
    assert normalise.trimmed(blank) is blank


def test_crop_views_match_the_windows(photo: Image.Image) -> None:
    views = normalise.crop_views(photo)
    assert len(views) == len(normalise.CROP_WINDOWS)
    for view, (a, b, c, d) in zip(views, normalise.CROP_WINDOWS, strict=True):
        assert view.size == (
            round(c * photo.width) - round(a * photo.width),
            round(d * photo.height) - round(b * photo.height),
        )
