"""The thumbnail blob: stored with its luma lossy (thumb@4: WebP, a few grey levels off) and its chroma
exact, in a fraction of the pixels' size; a query's own exact; either refused when damaged."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from common.match import photometric
from common.signals.normalise import halved
from tests.support import samplegen


def _planes(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What thumbnail() holds, computed here the plain way: luma at 64 px, Cr and Cb at 32 px."""
    small = photometric._resized(halved(rgb), photometric.THUMB_SIDE)
    ycc = cv2.cvtColor(photometric._resized(small, photometric.CHROMA_SIDE), cv2.COLOR_RGB2YCrCb)
    return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), ycc[..., 1:]


def _product(seed: int) -> np.ndarray:
    return np.asarray(samplegen.render_product(np.random.default_rng(seed)))


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_a_querys_thumbnail_is_exact(seed: int) -> None:
    rgb = _product(seed)
    luma, crcb = _planes(rgb)
    thumb = photometric.unpack_thumb(photometric.thumbnail(rgb, lossless=True))
    assert np.array_equal(thumb.luma, luma)
    assert np.array_equal(thumb.chroma, crcb.astype(np.float32) - 128.0)


@pytest.mark.parametrize("seed", [3, 4, 5, 9])
def test_the_stored_thumbnail_is_close_and_small(seed: int) -> None:
    rgb = _product(seed)
    luma, crcb = _planes(rgb)
    blob = photometric.thumbnail(rgb)
    thumb = photometric.unpack_thumb(blob)
    assert thumb.luma.shape == luma.shape and thumb.chroma.shape == crcb.shape
    assert np.abs(thumb.luma.astype(float) - luma).mean() < 3.0
    assert np.array_equal(thumb.chroma, crcb.astype(np.float32) - 128.0)
    assert len(blob) < 0.3 * (luma.size + crcb.size)


def test_extremes_round_trip_exactly() -> None:
    rng = np.random.default_rng(0)
    luma = rng.choice(np.array([0, 1, 254, 255], np.uint8), size=(64, 43))
    chroma = rng.integers(0, 256, size=(2, 32, 21), dtype=np.uint8)
    thumb = photometric.unpack_thumb(photometric.pack_thumb(luma, chroma))
    assert np.array_equal(thumb.luma, luma)
    assert np.array_equal(thumb.chroma, chroma.transpose(1, 2, 0).astype(np.float32) - 128.0)


def test_the_photometric_check_reads_a_stored_thumbnail_as_the_exact_one() -> None:
    """The same photo, stored lossy against its exact planes, aligned by identity: it agrees."""
    rgb = _product(7)
    stored = photometric.unpack_thumb(photometric.thumbnail(rgb))
    exact = photometric.unpack_thumb(photometric.thumbnail(rgb, lossless=True))
    size = (rgb.shape[1], rgb.shape[0])
    same = photometric.photometric(exact, stored, np.eye(2, 3), size, size)
    assert same.luma > 0.95 and same.chroma_corr > 0.999 and same.chroma_ratio > 0.999


def test_an_exact_blob_whose_pixels_spell_a_magic_number_is_read_as_pixels() -> None:
    luma = np.full((64, 43), 128, np.uint8)
    luma[0, :4] = list(b"RIFF")
    chroma = np.full((2, 32, 22), 128, np.uint8)
    assert np.array_equal(photometric.unpack_thumb(photometric.pack_thumb(luma, chroma)).luma, luma)


_DAMAGE = [
    lambda b: b[:5] + b"\x00" * 20,  # garbage after the header
    lambda b: b[:-40],  # truncated
    lambda b: b[:2],  # no header
    lambda b: b[:4] + b"\x07" + b[5:],  # an unknown form
    lambda b: b"\x00" + b[1:],  # a zero-sized plane
    lambda b: bytes([b[0] + 1]) + b[1:],  # the header's size disagrees with the planes
    lambda b: b[:-3] + bytes(5),  # the end damaged: the checksum, or the planes' size
    lambda b: b + b"\x00",  # a byte more
]


@pytest.mark.parametrize("damage", _DAMAGE)
@pytest.mark.parametrize("lossless", [False, True])
def test_a_damaged_blob_is_a_value_error(damage, lossless: bool) -> None:
    blob = photometric.thumbnail(_product(1), lossless=lossless)
    with pytest.raises(ValueError):
        photometric.unpack_thumb(damage(blob))


def test_every_flipped_bit_of_a_stored_blob_is_refused() -> None:
    """WebP carries no checksum of its own: the blob's CRC-32 refuses any damage to it or the chroma."""
    blob = photometric.thumbnail(_product(2))
    for bit in range(5 * 8, len(blob) * 8, 7):
        damaged = bytearray(blob)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ValueError):
            photometric.unpack_thumb(bytes(damaged))
