"""A seller's copy turned by a few degrees (issue #10): the query's tilt is estimated from its edges,
its turned-back view is hashed (query-only) and finds the product; other garments stay out."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from common.match import describe, pipeline, presets
from common.signals import rotation
from common.signals import signal_set as sig
from common.signals.signatures import unpack64
from tests.support import samplegen
from tests.unit.test_pipeline import Index

BALANCED = presets.PRESETS["balanced"]


def _described(im: Image.Image, query: bool) -> dict[str, bytes]:
    data = samplegen.jpeg_bytes(im)
    return describe.describe(Image.open(io.BytesIO(data)).convert("RGB"), data, query=query)


def _turned(im: Image.Image, angle: float, recrop: bool) -> Image.Image:
    """As a seller turns a photo: the corners filled with the backdrop, or re-cropped away."""
    out = im.rotate(angle, Image.Resampling.BICUBIC, fillcolor=im.getpixel((0, 0)))
    if not recrop:
        return out
    w, h = im.size
    box = (round(0.12 * w), round(0.12 * h), round(0.88 * w), round(0.88 * h))
    return out.crop(box).resize(im.size, Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def tops() -> dict[str, Image.Image]:
    rng = np.random.default_rng(41)
    return {f"00000041{i:02d}": samplegen.render_product(rng) for i in range(8)}


def _work_grey(im: Image.Image) -> Image.Image:
    return describe.working_copy(im.convert("RGB")).convert("L")


@pytest.mark.parametrize("angle", [-9.0, -5.0, 4.0, 8.0])
def test_tilt_undoes_the_turn(tops: dict[str, Image.Image], angle: float) -> None:
    estimates = [rotation.tilt(_work_grey(_turned(im, angle, recrop=False))) for im in tops.values()]
    close = [a for a in estimates if a is not None and abs(a + angle) <= 2.0]
    assert len(close) >= 6, estimates  # most photos, within 2 degrees


def test_an_upright_photo_has_no_rotated_view(tops: dict[str, Image.Image]) -> None:
    tilted = [rotation.tilt(_work_grey(im)) for im in tops.values()]
    assert sum(a is not None for a in tilted) <= 1, tilted
    query = _described(next(iter(tops.values())), query=True)
    assert sig.DHASH_ROTATED not in query and sig.PDQ_ROTATED not in query


def test_turned_back_view_is_closer_and_never_stored(tops: dict[str, Image.Image]) -> None:
    closer = 0
    for im in tops.values():
        stored = _described(im, query=False)
        assert sig.DHASH_ROTATED not in stored and sig.PDQ_ROTATED not in stored
        query = _described(_turned(im, 8.0, recrop=True), query=True)
        if sig.DHASH_ROTATED not in query:
            continue
        own = unpack64(query[sig.DHASH_WORK]) ^ unpack64(stored[sig.DHASH_CROPS[0]])
        back = unpack64(query[sig.DHASH_ROTATED]) ^ unpack64(stored[sig.DHASH_CROPS[0]])
        closer += int(back).bit_count() < int(own).bit_count()
    assert closer >= 5


def test_turned_copies_find_their_product_and_no_other(tops: dict[str, Image.Image]) -> None:
    ids = list(tops)
    indexed = ids[:5]  # the last three are not indexed: their copies match nothing
    index = Index({pid: _described(tops[pid], query=False) for pid in indexed})
    found = 0
    for n, pid in enumerate(ids):
        for angle, recrop in ((7.0 if n % 2 else -7.0, False), (-8.0 if n % 2 else 8.0, True)):
            query = _described(_turned(tops[pid], angle, recrop), query=True)
            matches = {
                m.product_id for m in pipeline.find_matches(query, index.snap, BALANCED, blobs=index.blobs)
            }
            assert matches <= {pid}, (pid, angle, recrop, matches)
            found += pid in matches
    assert found >= 8  # of the 10 turned copies of indexed tops


def test_the_turned_back_view_brings_its_product_as_an_extra_candidate(tops: dict[str, Image.Image]) -> None:
    ids = list(tops)[:5]
    index = Index({pid: _described(tops[pid], query=False) for pid in ids})
    brought = 0
    for pid in ids:
        query = _described(_turned(tops[pid], -8.0, recrop=True), query=True)
        extra = pipeline._rotated_candidates(query, index.snap, BALANCED, sig.DHASH_WORK, set())
        assert len(extra) <= pipeline.ROTATED_CANDIDATES
        brought += index.snap.rows[pid] in extra
        upright = _described(tops[pid], query=True)  # no rotated view: no extra candidates
        assert pipeline._rotated_candidates(upright, index.snap, BALANCED, sig.DHASH_WORK, set()) == []
    assert brought >= 2  # the rest are beyond the scans' radius
