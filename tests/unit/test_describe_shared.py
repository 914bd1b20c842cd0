"""The cheaper describe steps give the bits the plain ones gave: shared arrays, the blockwise border
walk, and pHash straight from the 32x32 copy."""

from __future__ import annotations

import cv2
import imagehash
import numpy as np
import pytest
from PIL import Image, ImageOps

from common.match import describe, photometric, verify
from common.signals import normalise
from common.signals import signal_set as sig
from tests.support import samplegen

_TOL, _KEEP = 10, 0.97


def _depth_reference(lines: np.ndarray) -> int:
    """The border walk as it was: every line of the outer half compared at once."""
    lines = lines[: max(1, len(lines) // 2)].astype(np.int16)
    diff = np.abs(lines - np.median(lines[0], axis=0).astype(np.int16))
    worst = np.maximum(np.maximum(diff[..., 0], diff[..., 1]), diff[..., 2])
    ok = (worst <= _TOL).mean(axis=1) >= _KEEP
    if not ok[0]:
        return 0
    bad = np.flatnonzero(~ok)
    return int(bad[0]) if len(bad) else len(ok)


def _bordered(rng: np.random.Generator, w: int, h: int, top: int, left: int, colour: int) -> np.ndarray:
    a = np.full((h, w, 3), colour, np.uint8)
    a[top : h - top // 2, left : w - left * 2] = rng.integers(0, 256, (h - top // 2 - top, w - 3 * left, 3))
    return a


def _trim_box_reference(a: np.ndarray) -> tuple[int, int, int, int]:
    """trim_box as it was (full comparison per side), for RGB arrays: a deliberate oracle of the border
    walk, kept apart from the code it checks; only the mapping back to full resolution is shared."""
    fh, fw, _ = a.shape
    scale = min(1.0, 256 / max(fh, fw))
    size = (max(1, round(fw * scale)), max(1, round(fh * scale)))
    small = cv2.resize(a, size, interpolation=cv2.INTER_AREA) if scale < 1 else a
    m = cv2.medianBlur(small, 3)
    h, w, _ = m.shape
    top, bottom = _depth_reference(m), _depth_reference(m[::-1])
    left, right = _depth_reference(m.transpose(1, 0, 2)), _depth_reference(m.transpose(1, 0, 2)[::-1])
    if top + bottom >= h - 8 or left + right >= w - 8:
        return (0, 0, fw, fh)
    return normalise.full_box((left, top, right, bottom), (w, h), (fw, fh), scale)


@pytest.mark.parametrize("seed", range(30))
def test_blockwise_border_walk_finds_the_box_the_full_comparison_found(seed: int) -> None:
    # Given images with borders of many depths (none, one line, tens of lines, almost all), any size
    rng = np.random.default_rng(seed)
    w, h = int(rng.integers(20, 700)), int(rng.integers(20, 700))
    top, left = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 3))
    a = _bordered(rng, w, h, top, left, int(rng.integers(200, 256)))
    # When trimmed (from the array, or from the picture), Then the box is the one found before
    assert normalise.trim_box(a) == _trim_box_reference(a)
    assert normalise.trim_box(Image.fromarray(a)) == _trim_box_reference(a)


@pytest.mark.parametrize("seed", range(20))
def test_phash_from_the_32px_copy_is_imagehash_phash(seed: int) -> None:
    rng = np.random.default_rng(seed)
    grey = Image.fromarray(rng.integers(0, 256, (int(rng.integers(40, 400)), 300), dtype=np.uint8))
    small = grey.resize((32, 32), Image.Resampling.LANCZOS, reducing_gap=2.0)
    assert describe._phash32(small) == int(str(imagehash.phash(small)), 16)


def test_signals_take_the_shared_copies_without_changing_a_bit() -> None:
    rng = np.random.default_rng(9)
    image = Image.fromarray(_bordered(rng, 400, 500, 30, 20, 250))
    rgb, grey = np.asarray(image), image.convert("L")
    assert normalise.trim_box(rgb) == normalise.trim_box(image)
    assert photometric.thumbnail(rgb) == photometric.thumbnail(image)
    assert verify.pack(verify.extract(grey)) == verify.pack(verify.extract(image))
    assert describe.pdq_dihedral(rgb) == describe.pdq_dihedral(image)


def test_describe_halves_the_working_copy_once_for_the_trim_box_and_the_thumbnails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a photo padded with a saturated colour (so the query also makes its backdrop views), When
    # described as a query with every lazy view made, Then describe halved its working copy once, the
    # draft trim box came from that copy (trim_box itself never ran), and every thumbnail started
    # from an array of <= 320 px (none re-reduced the 500 px working copy).
    photo = samplegen.render_product(np.random.default_rng(5))  # 360 x 540, studio white
    image = ImageOps.expand(photo, (20, 30, 20, 30), fill=(40, 90, 200))  # 400 x 600: the working copy
    a = np.asarray(image)
    halvings: list[tuple[int, ...]] = []
    thumb_inputs: list[tuple[int, ...]] = []
    real_halved = normalise.halved

    def counting_halved(rgb: np.ndarray) -> np.ndarray:
        halvings.append(rgb.shape)
        return real_halved(rgb)

    def spying_halved(rgb: np.ndarray) -> np.ndarray:
        thumb_inputs.append(rgb.shape)
        return real_halved(rgb)

    def no_trim_box(*_: object) -> None:
        raise AssertionError("draft describe must take the trim box from the halved copy")

    monkeypatch.setattr(normalise, "halved", counting_halved)
    monkeypatch.setattr(normalise, "trim_box", no_trim_box)
    monkeypatch.setattr(photometric, "halved", spying_halved)
    query = describe.describe(image, query=True)
    dict(query.items())  # the lazy views (mirror keypoints, fine thumbnail) made too
    assert sig.THUMB_BACKDROP in query  # the backdrop's thumbnail was made too
    assert halvings == [(600, 400, 3)]
    # thumb, the restored backdrop's and the fine one; only the backdrop's (another image, made
    # from the working copy) is halved inside thumbnail
    assert len(thumb_inputs) == 3
    assert [s for s in thumb_inputs if max(s[:2]) > normalise.HALVED_SIDE] == [(600, 400, 3)]
    half = real_halved(a)
    assert photometric.thumbnail(half) == photometric.thumbnail(a)
    # a query's thumbnails are exact (never stored): the planes the stored form encodes
    assert query[sig.THUMB] == photometric.thumbnail(half, lossless=True)
    _same_pixels(query[sig.THUMB_FINE], photometric.thumbnail(a, photometric.FINE_SIDE, lossless=True))
    assert len(query[sig.THUMB]) > len(photometric.thumbnail(half))  # nothing spent on compression


def _same_pixels(a: bytes, b: bytes) -> None:
    ta, tb = photometric.unpack_thumb(a), photometric.unpack_thumb(b)
    assert np.array_equal(ta.luma, tb.luma) and np.array_equal(ta.chroma, tb.chroma)
