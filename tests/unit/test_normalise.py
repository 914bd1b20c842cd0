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


@pytest.mark.parametrize(
    ("shape", "steps"),
    [
        ((500, 400), 1),
        ((1000, 800), 2),
        ((540, 360), 1),
        ((321, 10), 1),
        ((641, 3), 1),
        ((642, 4), 2),
        ((1, 1300), 3),
    ],
)
def test_halved_takes_exact_2x_area_steps_to_at_most_320(shape: tuple[int, int], steps: int) -> None:
    # Given an RGB array of shape (h, w), When halved, Then it took `steps` halvings (w // 2, h // 2
    # each, never below 1 px), its longer side is <= 320, and each step is a 2x2 block mean.
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    half = normalise.halved(a)
    h, w = shape
    for _ in range(steps):
        h, w = max(1, h // 2), max(1, w // 2)
    assert half.shape == (h, w, 3) and max(h, w) <= normalise.HALVED_SIDE
    if steps == 1 and shape[0] % 2 == 0 and shape[1] % 2 == 0:
        blocks = a.reshape(h, 2, w, 2, 3).astype(np.float64).mean(axis=(1, 3))
        assert np.abs(half.astype(np.float64) - blocks).max() <= 1.0


def test_halved_leaves_a_small_copy_as_it_is() -> None:
    a = np.random.default_rng(4).integers(0, 256, (320, 200, 3), dtype=np.uint8)
    assert np.array_equal(normalise.halved(a), a)
    big = normalise.halved(np.tile(a, (2, 2, 1)))
    assert np.array_equal(normalise.halved(big), big)  # halving a halved copy again is a no-op


@pytest.mark.parametrize("fill", [(0, 0, 0), (255, 255, 255), (240, 240, 240), (200, 180, 150)])
@pytest.mark.parametrize(
    ("pad", "size"),
    [((40, 0, 40, 0), (400, 500)), ((0, 60, 0, 24), (360, 540)), ((17, 33, 9, 51), (432, 540))],
)
def test_halved_trim_box_agrees_with_trim_box_on_padded_photos(
    photo: Image.Image, fill: tuple[int, int, int], pad: tuple[int, int, int, int], size: tuple[int, int]
) -> None:
    # Given a working-copy-sized photo padded with a uniform band, When the box is found on the
    # halved copy, Then it is trim_box's box within a couple of working pixels on every side.
    framed = ImageOps.expand(photo.crop((20, 20, 340, 520)), (30, 50, 30, 50), fill=(128, 30, 30))
    inner = framed.resize((size[0] - pad[0] - pad[2], size[1] - pad[1] - pad[3]))
    padded = np.asarray(ImageOps.expand(inner, pad, fill=fill))
    assert padded.shape[1::-1] == size
    full = normalise.trim_box(padded)
    half = normalise.halved_trim_box(normalise.halved(padded), size)
    assert max(abs(a - b) for a, b in zip(full, half, strict=True)) <= 2
    expected = (pad[0], pad[1], size[0] - pad[2], size[1] - pad[3])
    assert max(abs(a - b) for a, b in zip(expected, half, strict=True)) <= 2


def test_halved_trim_box_leaves_a_blank_or_borderless_image_whole() -> None:
    blank = np.full((500, 400, 3), 250, np.uint8)
    assert normalise.halved_trim_box(normalise.halved(blank), (400, 500)) == (0, 0, 400, 500)
    rgb = np.random.default_rng(6).integers(0, 256, (500, 400, 3), dtype=np.uint8)  # no uniform line
    assert normalise.trim_box(rgb) == (0, 0, 400, 500)
    assert normalise.halved_trim_box(normalise.halved(rgb), (400, 500)) == (0, 0, 400, 500)
