"""Pillow's LANCZOS reduction of a greyscale image, bit for bit, as matrix products (dHash's 9x8).

Pillow resamples in two fixed-point passes (libImaging/Resample.c): each output pixel is
clip8(2**21 + sum(pixel * k) >> 22) with integer weights k (precompute_coeffs, then
normalize_coeffs_8bpc), the horizontal pass first into a uint8 row buffer. Every product and
partial sum is an integer far below 2**53, so a float64 matrix product gives the same sums in any
order; for a 540 px working copy reduced to 9x8 that is ~0.5 ms of CPU instead of Pillow's ~0.8
(a size's weights cost ~1 ms to make, so a size takes the port from its second image on).

Used only where it was seen to agree: Pillow 13 runs the vertical pass first for images much taller
than wide (about h > 1.9 w here) and rounds tiny ones differently, so only images of 64-1000 px a
side and h <= 1.5 w go through it (larger ones gain nothing and would need a large float64 copy),
and only once a few fixed images hashed to Pillow's own bits in this process (another Pillow that
passes or rounds differently falls back to Pillow itself).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image

_PRECISION = 22  # Resample.c's PRECISION_BITS (32 - 8 - 2)
_SUPPORT = 3.0  # LANCZOS
_MIN_SIDE = 64
_MAX_SIDE = 1000  # working copies (<= ~810 px); a full-size photo (exact mode) stays with Pillow
_MAX_TALL = 1.5  # height / width
_CHUNK = 64  # rows per matrix product: at <= 1000 px wide, small enough that BLAS stays on one thread


def _sinc(v: np.ndarray) -> np.ndarray:
    p = v * math.pi  # sin(x * pi) / (x * pi), 1 at 0: as Resample.c's sinc_filter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(v == 0.0, 1.0, np.sin(p) / p)


@functools.lru_cache(maxsize=64)
def _weights(in_size: int, out_size: int) -> np.ndarray:
    """(in_size, out_size) float64: Pillow's integer weights for a whole-image box (precompute_coeffs
    and normalize_coeffs_8bpc, operation for operation), one column per output pixel."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = _SUPPORT * filterscale
    ss = 1.0 / filterscale  # multiplied, not divided: the C's rounding
    center = (np.arange(out_size) + 0.5) * scale
    xmin = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
    count = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size) - xmin
    taps = np.arange(int(count.max()))[:, None]  # (taps, out_size)
    x = ((taps + xmin) - center + 0.5) * ss
    used = taps < count
    w = np.where(used & (x >= -_SUPPORT) & (x < _SUPPORT), _sinc(x) * _sinc(x / 3), 0.0)
    total = np.add.reduce(w, axis=0)  # down the taps, one after another, as the C loop adds them
    w = np.where(total != 0.0, w / np.where(total != 0.0, total, 1.0), w)
    fixed = np.trunc(w * (1 << _PRECISION) + np.where(w < 0, -0.5, 0.5))
    out = np.zeros((in_size, out_size))
    rows = np.broadcast_to(taps + xmin, used.shape)
    cols = np.broadcast_to(np.arange(out_size), used.shape)
    out[rows[used], cols[used]] = fixed[used]
    out.flags.writeable = False  # shared by every caller through the cache
    return out


def _pass(pixels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One 8-bit pass along axis 1: clip8((1 << 21) + sum) as float64 values 0..255."""
    sums = np.concatenate([pixels[i : i + _CHUNK] @ weights for i in range(0, len(pixels), _CHUNK)])
    sums += float(1 << (_PRECISION - 1))
    return np.clip(np.floor(sums / (1 << _PRECISION)), 0.0, 255.0)


def _port(grey: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    rows = _pass(grey.astype(np.float64), _weights(grey.shape[1], w))  # (H, w): the row buffer
    return _pass(np.ascontiguousarray(rows.T), _weights(grey.shape[0], h)).T.astype(np.uint8)


def _pillow(grey: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(grey).resize(size, Image.Resampling.LANCZOS))


@functools.cache
def agrees() -> bool:
    """Does the port give Pillow's bits here, on a few fixed images of the shapes it is used for, with
    numpy's sin the C library's (the weights' source; a SIMD sin could differ by an ulp)?"""
    rng = np.random.default_rng(2026)
    probe = rng.uniform(-3 * math.pi, 3 * math.pi, 2000)
    if not np.array_equal(np.sin(probe), [math.sin(v) for v in probe]):
        return False
    for h, w in ((540, 360), (500, 400), (64, 64), (300, 700)):
        yy, xx = np.mgrid[0:h, 0:w]
        for grey in (
            rng.integers(0, 256, (h, w), dtype=np.uint8),
            ((xx * 3 + yy * 5) % 256).astype(np.uint8),
        ):
            if not np.array_equal(_port(grey, (9, 8)), _pillow(grey, (9, 8))):
                return False
    return True


# Image sizes met once: the weights of a size cost ~1 ms to make, more than the port saves on one
# image, so a size goes through the port from its second image on (catalogue photos share a few).
_seen: set[tuple[int, int, int, int]] = set()
_SEEN_MAX = 4096


def reduce_grey(grey: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """np.asarray(grey.resize(size, LANCZOS)) of an 'L' image, through the port where it agrees."""
    w, h = grey.size
    # (>= 2 outputs a side: _weights' in-order sum runs down its taps across >= 2 columns)
    usable = min(w, h) >= _MIN_SIDE and max(w, h) <= _MAX_SIDE and h <= _MAX_TALL * w
    usable = usable and 2 <= size[0] < w and 2 <= size[1] < h
    key = (w, h, *size)
    if usable and key in _seen and agrees():
        return _port(np.asarray(grey), size)
    if usable:
        if len(_seen) >= _SEEN_MAX:
            _seen.clear()
        _seen.add(key)
    return np.asarray(grey.resize(size, Image.Resampling.LANCZOS))
