"""The photometric check on a zoomed query (a re-crop, as of a turned photo): the target's warp is an
upsampling, so the query's detail is matched to it; another photo still disagrees."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from common.match import photometric
from tests.support import samplegen


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    rng = np.random.default_rng(77)
    return [samplegen.render_product(rng) for _ in range(6)]


def _zoomed(im: Image.Image, zoom: float) -> tuple[Image.Image, np.ndarray]:
    """The centre 1/zoom of `im` blown up to its size, and the model (query px -> target px)."""
    w, h = im.size
    x0, y0 = w * (1 - 1 / zoom) / 2, h * (1 - 1 / zoom) / 2
    query = im.crop((round(x0), round(y0), round(w - x0), round(h - y0))).resize(
        im.size, Image.Resampling.BICUBIC
    )
    return query, np.array([[1 / zoom, 0.0, x0], [0.0, 1 / zoom, y0]])


def _check(query: Image.Image, target: Image.Image, model: np.ndarray) -> photometric.Photometric:
    tq = photometric.unpack_thumb(photometric.thumbnail(query))
    tt = photometric.unpack_thumb(photometric.thumbnail(target))
    return photometric.photometric(tq, tt, model, query.size, target.size)


def test_a_zoomed_query_is_reduced_to_the_targets_detail(photos: list[Image.Image]) -> None:
    query, model = _zoomed(photos[0], 1.45)
    luma = photometric.unpack_thumb(photometric.thumbnail(query)).luma
    target_shape = photometric.unpack_thumb(photometric.thumbnail(photos[0])).luma.shape
    matched = photometric._matched_detail(luma, model, query.size, photos[0].size, target_shape)
    assert matched.shape == luma.shape
    detail = [float(np.abs(np.diff(a.astype(np.float32), axis=1)).mean()) for a in (luma, matched)]
    assert detail[1] < 0.9 * detail[0], detail  # the query's finer detail is gone
    same = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # no zoom: the query as it is
    assert np.array_equal(photometric._matched_detail(luma, same, query.size, query.size, luma.shape), luma)


def test_a_zoomed_copy_agrees(photos: list[Image.Image]) -> None:
    for im in photos:
        query, model = _zoomed(im, 1.45)
        assert _check(query, im, model).passes(0.6)


def test_a_zoomed_copy_of_another_photo_still_disagrees(photos: list[Image.Image]) -> None:
    for i, im in enumerate(photos):
        query, model = _zoomed(photos[(i + 1) % len(photos)], 1.45)
        assert not _check(query, im, model).passes(0.6)
