"""Golden test: our dHash is imagehash.dhash, bit for bit, on real JPEG files."""

from __future__ import annotations

import io
from pathlib import Path

import imagehash
import pytest
from PIL import Image

from common.signals.imaging import decode
from common.signals.signatures import dhash64, from_hex, pack64, to_hex, unpack64

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_JPEGS = sorted((ROOT / "samples").rglob("*.jpg"))
DEVSET = ROOT.parent / "shared" / "devset"


def golden(path: Path) -> None:
    data = path.read_bytes()
    expected = imagehash.dhash(Image.open(io.BytesIO(data)))
    ours = dhash64(decode(data, 100_000_000))
    assert to_hex(ours) == str(expected), path.name
    assert ours == from_hex(str(expected)) == unpack64(pack64(ours))


def test_every_bundled_jpeg_hashes_like_imagehash():
    assert len(SAMPLE_JPEGS) >= 60
    for path in SAMPLE_JPEGS:
        golden(path)


@pytest.mark.skipif(not DEVSET.is_dir(), reason="../shared/devset is absent (evaluation data)")
def test_real_catalogue_photos_hash_like_imagehash():
    photos = (
        sorted((DEVSET / "inventory").glob("*.jpg"))[:150] + sorted((DEVSET / "queries").glob("*.jpg"))[:150]
    )
    assert photos
    for path in photos:
        golden(path)


def test_hash_spelling_and_bytes():
    assert to_hex(0xF) == "000000000000000f"
    assert pack64(1) == b"\x00" * 7 + b"\x01"
    with pytest.raises(ValueError):
        unpack64(b"short")
