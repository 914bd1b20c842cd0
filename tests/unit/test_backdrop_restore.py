"""normalise.restudioed: a garment on a seller's new backdrop restores close to its studio original.

The swap here is the seller-edits generator's (benchmarks/seller_edits.bgswap): the backdrop pixels
connected to the border, feathered, replaced by a flat colour or a gradient."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from common.signals import normalise
from tests.support import samplegen


def _mask(studio: np.ndarray, tol: float = 22.0) -> np.ndarray:
    """The border-connected studio backdrop (float 0..1, feathered), as the generator cuts it."""
    arr = studio.astype(np.int16)
    diff = np.abs(arr - np.median(arr[2, :], axis=0)).max(axis=2)
    _, lab = cv2.connectedComponents((diff <= tol).astype(np.uint8), connectivity=4)
    edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    return cv2.GaussianBlur(np.isin(lab, edge[edge > 0]).astype(np.float32), (0, 0), 1.0)


def _swapped(studio: np.ndarray, c1: tuple[int, int, int], c2: tuple[int, int, int] | None) -> np.ndarray:
    h, w, _ = studio.shape
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    back = np.asarray(c1, np.float32) * (1 - t) + np.asarray(c2 or c1, np.float32) * t
    m = _mask(studio)[..., None]
    return np.clip(studio * (1 - m) + back * m, 0, 255).astype(np.uint8)


def _error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


@pytest.mark.parametrize(
    ("seed", "c1", "c2"),
    [
        (2, (40, 90, 200), (200, 60, 40)),
        (7, (20, 20, 20), None),
        (13, (230, 200, 40), None),
        (4, (0, 0, 255), None),
    ],
)
def test_a_top_on_a_new_backdrop_restores_close_to_its_studio_original(
    seed: int, c1: tuple[int, int, int], c2: tuple[int, int, int] | None
) -> None:
    """The garment is untouched, the backdrop is studio white again, and the outline (blended with
    the new colour, which the flood stops short of) is unmixed or painted white: before the rim
    step, a tenth of its pixels stayed 110-175 levels off the original."""
    studio = np.asarray(samplegen.render_product(np.random.default_rng(seed)).convert("RGB"))
    query = _swapped(studio, c1, c2)
    restored = normalise.restudioed(Image.fromarray(query))
    assert restored is not None
    got = np.asarray(restored)
    assert got.shape == studio.shape
    assert _error(got, studio) < 0.5 * _error(query, studio)  # (studio white is not its grey)
    off = np.abs(got.astype(np.float32) - studio).max(axis=2)
    m = _mask(studio)
    assert off[m < 0.01].mean() < 2.0  # the garment
    assert np.percentile(off[(m > 0.05) & (m < 0.95)], 90) < 80  # its outline


def test_an_enclosed_patch_of_the_backdrop_colour_goes_white() -> None:
    """A flat patch of the new colour inside the garment (the cut-out reached it through a gap the
    small copy closes) is painted studio white like the backdrop."""
    studio = np.asarray(samplegen.render_product(np.random.default_rng(6)).convert("RGB")).copy()
    query = _swapped(studio, (60, 180, 60), None)
    h, w, _ = query.shape
    box = (slice(h // 2 - 12, h // 2 + 12), slice(w // 2 - 12, w // 2 + 12))
    query[box] = (60, 180, 60)
    got = np.asarray(normalise.restudioed(Image.fromarray(query))).astype(np.int16)
    inner = got[h // 2 - 6 : h // 2 + 6, w // 2 - 6 : w // 2 + 6]
    assert inner.min() >= 230


def test_a_studio_photo_has_no_restored_view() -> None:
    studio = samplegen.render_product(np.random.default_rng(7)).convert("RGB")
    assert normalise.restudioed(studio) is None
