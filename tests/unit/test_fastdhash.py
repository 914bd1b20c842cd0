"""DHASH_FAST: a separate signature, within a few bits of the exact dHash on photo-like JPEGs."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from common.signals.signatures import DHASH, dhash64
from tests.support import fastdhash


def photo(seed: int, width: int, height: int) -> bytes:
    """Gradients, soft shapes and noise, saved as a quality-90 JPEG."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack(
        [
            128 + 60 * np.sin(rng.uniform(-3, 3) * x / width + rng.uniform(-3, 3) * y / height)
            for _ in range(3)
        ],
        -1,
    )
    pil = Image.fromarray(img.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(5):
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        box = [x0, y0, x0 + rng.uniform(0.1, 0.5) * width, y0 + rng.uniform(0.1, 0.5) * height]
        draw.ellipse(box, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    pil = pil.filter(ImageFilter.GaussianBlur(width / 200))
    arr = np.asarray(pil).astype(np.float32) + rng.normal(0, 3, (height, width, 3))
    buf = io.BytesIO()
    Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_is_a_separate_versioned_signature():
    assert fastdhash.DHASH_FAST != DHASH and fastdhash.DHASH_FAST.startswith("dhash64-draft@")


@pytest.mark.parametrize("size", [(800, 1000), (224, 224)])
def test_bits_moved_against_exact_dhash_are_bounded(size):
    diffs = []
    for seed in range(5):
        data = photo(seed, *size)
        exact = int(str(imagehash.dhash(Image.open(io.BytesIO(data)))), 16)
        diffs.append(bin(fastdhash.dhash64_fast(data) ^ exact).count("1"))
    assert max(diffs) <= 6, diffs


def test_simplejpeg_and_pillow_paths_give_the_same_bits():
    pytest.importorskip("simplejpeg")
    for seed in range(6):
        data = photo(seed, 640, 480)
        assert fastdhash.dhash64_fast(data) == fastdhash.dhash64_fast(data, use_simplejpeg=False)
        assert fastdhash.dhash64_fast_image(fastdhash.open_reduced(data)) == fastdhash.dhash64_fast(data)


def test_non_jpeg_hashes_exactly():
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (120, 90, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    assert fastdhash.dhash64_fast(buf.getvalue()) == dhash64(img)
