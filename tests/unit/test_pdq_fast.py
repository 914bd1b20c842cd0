"""pdq_fast: pdqhash's C++ when it gives common.signals.pdq's exact bits, the numpy port otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.match import describe
from common.signals import pdq, pdq_fast
from tests.support import samplegen

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


@pytest.fixture(autouse=True)
def _fresh_choice() -> Iterator[None]:
    pdq_fast.implementation.cache_clear()
    yield
    pdq_fast.implementation.cache_clear()


def test_without_pdqhash_the_numpy_port_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "pdqhash", None)  # import pdqhash now fails
    assert pdq_fast.implementation() is pdq.compute_dihedral


def test_an_implementation_with_other_bits_is_refused() -> None:
    def off_by_one_bit(rgb: np.ndarray) -> tuple[list[np.ndarray], int]:
        hashes, quality = pdq.compute_dihedral(rgb)
        hashes[0] = hashes[0].copy()
        hashes[0][17] ^= 1
        return hashes, quality

    def other_quality(rgb: np.ndarray) -> tuple[list[np.ndarray], int]:
        hashes, quality = pdq.compute_dihedral(rgb)
        return hashes, quality + 1

    assert pdq_fast.agrees(pdq.compute_dihedral)
    assert not pdq_fast.agrees(off_by_one_bit)
    assert not pdq_fast.agrees(other_quality)


def test_pdqhash_is_used_and_stores_the_numpy_bits() -> None:
    pdqhash = pytest.importorskip("pdqhash")
    assert pdq_fast.implementation() is pdqhash.compute_dihedral
    rng = np.random.default_rng(41)
    images = [samplegen.render_product(rng) for _ in range(4)]
    images += [Image.open(p).convert("RGB") for p in sorted(SAMPLES.rglob("*.jpg"))[:6]]
    for image in images:
        work = np.asarray(describe.working_copy(image))
        hashes, quality = pdq.compute_dihedral(work)
        q = bytes([quality])
        assert describe.pdq_dihedral(work) == [pdq.pack(h) + q for h in hashes]


def test_small_or_grey_input_stays_with_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(rgb: np.ndarray) -> tuple[list[np.ndarray], int]:
        raise AssertionError("not for this input")

    monkeypatch.setattr(pdq_fast, "implementation", lambda: refuse)
    for image in (np.zeros((40, 300, 3), np.uint8), np.zeros((100, 100), np.uint8)):
        assert pdq_fast.compute_dihedral(image)[1] == pdq.compute_dihedral(image)[1]
