"""describe's stored and query signatures, byte for byte as committed in golden_describe.json.

A cheaper describe must not move a single stored bit (an index written before it would silently
stop matching what is computed after it): every signal of a varied set of images (bundled samples,
a large noisy photo, padded, letterboxed, speckled, a coloured backdrop, tiny, greyscale), in both
decode modes, for inventory and query (lazy views made), is compared with the digests written by
the code before the change. A deliberate signal change bumps the signal's version, and the new key
makes this test fail until the file is regenerated:

    python tests/unit/test_describe_golden.py      # rewrites golden_describe.json
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))

from common.match import describe, photometric  # noqa: E402
from common.signals import signal_set as sig  # noqa: E402
from common.signals.signal_set import DRAFT, EXACT, SignalSet  # noqa: E402
from tests.support.images import photo_like  # noqa: E402

GOLDEN = Path(__file__).with_name("golden_describe.json")
SAMPLES = ROOT / "samples"
_LIMIT = 60_000_000


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


@functools.cache
def _cases() -> dict[str, bytes]:
    """name -> encoded image. Deterministic: fixed seeds, lossless where an edit must stay exact."""
    files = [
        *sorted((SAMPLES / "inventory").glob("*.jpg"))[:4],
        *sorted((SAMPLES / "queries").glob("*.jpg"))[:4],
    ]
    cases = {f"{p.parent.name}/{p.name}": p.read_bytes() for p in files}
    rng = np.random.default_rng(77)
    big = np.asarray(photo_like(800, 1000, seed=3), np.float64) + rng.normal(0, 8, (1000, 800, 3))
    cases["noisy_800x1000"] = _jpeg(Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)))
    cases["large_1700x2300"] = _jpeg(photo_like(1700, 2300, seed=4))
    base = np.asarray(photo_like(360, 540, seed=5))
    padded = np.full((640, 460, 3), 250, np.uint8)
    padded[50:590, 50:410] = base
    cases["padded_png"] = _png(Image.fromarray(padded))
    letter = np.zeros((540, 600, 3), np.uint8)
    letter[:, 120:480] = base
    cases["letterbox_png"] = _png(Image.fromarray(letter))
    speck = base.copy()
    where = rng.random(base.shape[:2]) < 0.04
    speck[where] = rng.choice([0, 255], size=(int(where.sum()), 1)).astype(np.uint8)
    cases["salt_pepper_png"] = _png(Image.fromarray(speck))
    backdrop = np.empty((540, 360, 3), np.uint8)
    backdrop[:] = (40, 120, 200)
    backdrop[120:460, 80:280] = np.asarray(photo_like(200, 340, seed=6))
    cases["blue_backdrop_png"] = _png(Image.fromarray(backdrop))
    cases["tiny_70x50_png"] = _png(photo_like(70, 50, seed=7))
    cases["grey_jpeg"] = _jpeg(photo_like(400, 300, seed=8).convert("L"))
    cases["wide_1100x800_png"] = _png(photo_like(1100, 800, seed=9))  # reduced by working_copy
    return cases


@functools.cache  # the golden digests and the stored-thumbnail check read the same describes
def _described(data: bytes) -> dict[tuple[str, bool], dict[str, bytes]]:
    """(mode, query) -> every signal describe gives (a query's lazy views made)."""
    return {
        (mode, query): dict(
            describe.describe_bytes(data, _LIMIT, SignalSet(decode=mode), query=query).items()
        )
        for mode in (DRAFT, EXACT)
        for query in (False, True)
    }


def _digests(data: bytes) -> dict[str, dict[str, str]]:
    """'mode/use' -> signal -> the first 12 hex digits of the sha256 of its bytes.

    The stored thumbnail is lossy WebP, whose bytes depend on the libwebp that OpenCV bundles: it is
    pinned by the exact planes it encodes, which are the query's own thumbnail of the same image
    (describe shares every step up to the encoding), and test_the_stored_thumbnail_is_its_planes
    checks the encoding keeps them."""
    out = {}
    described = _described(data)
    for (mode, query), sigs in described.items():
        if not query:
            sigs = {**sigs, sig.THUMB: described[mode, True][sig.THUMB]}
        tag = f"{mode}/{'query' if query else 'inventory'}"
        out[tag] = {key: hashlib.sha256(sigs[key]).hexdigest()[:12] for key in sorted(sigs)}
    return out


def _write_golden() -> None:
    cases = {
        name: {"input": hashlib.sha256(data).hexdigest()[:16], "signals": _digests(data)}
        for name, data in _cases().items()
    }
    golden = {"source": "describe before the shared-reduction rewrite (qcost2)", "cases": cases}
    GOLDEN.write_text(json.dumps(golden, indent=0, sort_keys=True) + "\n")


_GOLDEN = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {"cases": {}}


@pytest.mark.parametrize("name", sorted(_GOLDEN["cases"]))
def test_describe_gives_the_committed_bytes(name: str) -> None:
    data = _cases()[name]
    want = _GOLDEN["cases"][name]
    # Given the same input bytes as when the file was written
    assert hashlib.sha256(data).hexdigest()[:16] == want["input"], "test input changed, not describe"
    # Then every signal of every mode is the committed one, and no signal is added or lost
    got = _digests(data)
    for tag, signals in want["signals"].items():
        assert sorted(got[tag]) == sorted(signals), tag
        assert {k: v for k, v in got[tag].items() if signals[k] != v} == {}, tag
    assert sorted(got) == sorted(want["signals"])


MAX_LUMA_ERROR = 24  # WebP quality 85 of these thumbnails: <= 15 grey levels at any pixel, ~1-2 on average


@pytest.mark.parametrize("name", sorted(_GOLDEN["cases"]))
def test_the_stored_thumbnail_is_its_planes(name: str) -> None:
    """What the golden digests pin for the stored thumbnail (its exact planes) is what it holds, up to
    WebP's loss on the luma: the same header and sizes, the luma within a few grey levels, the chroma
    exact."""
    described = _described(_cases()[name])
    for mode in (DRAFT, EXACT):
        blob, exact_blob = described[mode, False][sig.THUMB], described[mode, True][sig.THUMB]
        assert blob[:4] == exact_blob[:4] and (blob[4], exact_blob[4]) == (1, 0)  # lossy, exact forms
        stored, exact = photometric.unpack_thumb(blob), photometric.unpack_thumb(exact_blob)
        error = np.abs(stored.luma.astype(float) - exact.luma)
        assert error.mean() < 3.0 and error.max() <= MAX_LUMA_ERROR, (error.mean(), error.max())
        assert np.array_equal(stored.chroma, exact.chroma)


def test_the_golden_file_covers_every_case() -> None:
    assert sorted(_GOLDEN["cases"]) == sorted(_cases())


if __name__ == "__main__":
    _write_golden()
    print(f"wrote {GOLDEN}")
