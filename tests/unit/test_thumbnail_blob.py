"""The stored thumbnail blob (thumb@3): compressed losslessly, unpacked pixel for pixel, refused when
damaged."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from common.match import photometric
from common.signals.normalise import halved
from tests.support import samplegen


def _planes(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What thumbnail() stores, computed here the plain way: luma at 64 px, Cr and Cb at 32 px."""
    small = photometric._resized(halved(rgb), photometric.THUMB_SIDE)
    ycc = cv2.cvtColor(photometric._resized(small, photometric.CHROMA_SIDE), cv2.COLOR_RGB2YCrCb)
    return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), ycc[..., 1:]


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_round_trip_is_exact(seed: int) -> None:
    rgb = np.asarray(samplegen.render_product(np.random.default_rng(seed)))
    luma, crcb = _planes(rgb)
    thumb = photometric.unpack_thumb(photometric.thumbnail(rgb))
    assert np.array_equal(thumb.luma, luma)
    assert np.array_equal(thumb.chroma, crcb.astype(np.float32) - 128.0)


def test_noise_and_extremes_round_trip() -> None:
    """Wrap-around of the row differences (0 under 255 and back) loses nothing."""
    rng = np.random.default_rng(0)
    luma = rng.choice(np.array([0, 1, 254, 255], np.uint8), size=(64, 43))
    chroma = rng.integers(0, 256, size=(2, 32, 21), dtype=np.uint8)
    thumb = photometric.unpack_thumb(photometric.pack_thumb(luma, chroma))
    assert np.array_equal(thumb.luma, luma)
    assert np.array_equal(thumb.chroma, chroma.transpose(1, 2, 0).astype(np.float32) - 128.0)


def test_a_catalogue_thumbnail_is_well_under_its_pixels() -> None:
    rgb = np.asarray(samplegen.render_product(np.random.default_rng(9)))
    luma, crcb = _planes(rgb)
    assert len(photometric.thumbnail(rgb)) < 0.6 * (luma.size + crcb.size)


@pytest.mark.parametrize("damage", [lambda b: b[:4] + b"\x00" * 20, lambda b: b[:-40], lambda b: b[:2]])
def test_a_damaged_blob_is_a_value_error(damage) -> None:
    blob = photometric.thumbnail(np.asarray(samplegen.render_product(np.random.default_rng(1))))
    with pytest.raises(ValueError):
        photometric.unpack_thumb(damage(blob))
