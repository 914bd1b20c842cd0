"""common.signals.pdq against Meta's reference as pdqhash computes it: bit for bit.

- always: a committed golden file (golden_pdq.json, written by pdqhash) for every bundled sample
  photo, at the size the pipeline hashes (its working copy), plain and all eight dihedral hashes;
- when pdqhash is installed (the `bench` extra): live comparison on generated photos, their edits,
  odd sizes, flat and random images;
- the dihedral hashes are the hashes of the rotated / mirrored image (accuracy helper's use).

Regenerate the golden file (needs pdqhash):  python tests/unit/test_pdq.py
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))

from common.match import describe
from common.signals import (
    pdq,  # noqa: E402
    signal_set,
)
from tests.support import samplegen  # noqa: E402
from tests.support.images import photo_like  # noqa: E402

GOLDEN = Path(__file__).with_name("golden_pdq.json")
SAMPLES = ROOT / "samples"

# The image operation that each dihedral hash stands for (np.rot90 turns counter-clockwise).
TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "original": lambda a: a,
    "rotate90": lambda a: np.rot90(a, 1),
    "rotate180": lambda a: np.rot90(a, 2),
    "rotate270": lambda a: np.rot90(a, 3),
    "flipx": lambda a: a[::-1],  # upside down
    "flipy": lambda a: a[:, ::-1],  # left-right mirror
    "flipplus1": lambda a: a.transpose(1, 0, 2),
    "flipminus1": lambda a: np.rot90(a, 2).transpose(1, 0, 2),
}


def _working_pixels(path: Path) -> np.ndarray:
    """What pipeline._pdq hashes: the RGB working copy of the decoded photo."""
    with Image.open(path) as im:
        return np.asarray(describe.working_copy(im.convert("RGB")))


def _digest(pixels: np.ndarray) -> str:
    return hashlib.sha256(pixels.tobytes() + str(pixels.shape).encode()).hexdigest()[:16]


def _hex(bits: np.ndarray) -> str:
    return pdq.pack(bits).hex()


def _distance(a: np.ndarray, b: np.ndarray) -> int:
    return int((np.asarray(a, np.uint8) != np.asarray(b, np.uint8)).sum())


def _write_golden() -> None:
    import pdqhash

    entries = []
    for path in sorted(SAMPLES.rglob("*.jpg")):
        pixels = _working_pixels(path)
        bits, quality = pdqhash.compute(pixels)
        dihedral, _ = pdqhash.compute_dihedral(pixels)
        entries.append(
            {
                "file": path.relative_to(SAMPLES).as_posix(),
                "pixels": _digest(pixels),
                "pdq": _hex(bits),
                "quality": int(quality),
                "dihedral": [_hex(h) for h in dihedral],
            }
        )
    doc = {"source": f"pdqhash {pdqhash.__version__} on describe.working_copy of samples/", "images": entries}
    GOLDEN.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {len(entries)} images to {GOLDEN}")


def _golden() -> list[dict]:
    return json.loads(GOLDEN.read_text())["images"] if GOLDEN.exists() else []


def test_golden_covers_the_bundled_samples() -> None:
    assert GOLDEN.exists(), "golden_pdq.json is missing: python tests/unit/test_pdq.py writes it"
    files = {e["file"] for e in _golden()}
    assert len(files) >= 50
    assert files == {p.relative_to(SAMPLES).as_posix() for p in SAMPLES.rglob("*.jpg")}


@pytest.mark.parametrize("entry", _golden(), ids=lambda e: e["file"])
def test_matches_pdqhash_golden(entry: dict) -> None:
    pixels = _working_pixels(SAMPLES / entry["file"])
    if _digest(pixels) != entry["pixels"]:
        pytest.skip("this Pillow/libjpeg decodes the sample to other pixels than the golden's")
    bits, quality = pdq.compute(pixels)
    assert (_hex(bits), quality) == (entry["pdq"], entry["quality"])
    dihedral, dquality = pdq.compute_dihedral(pixels)
    assert [_hex(h) for h in dihedral] == entry["dihedral"] and dquality == entry["quality"]


def test_pipeline_stores_common_pdq() -> None:
    """The stored signal is our hash of the working copy plus the quality byte."""
    image = Image.fromarray(np.asarray(photo_like(400, 600, seed=3)))
    work = describe.working_copy(image)
    bits, quality = pdq.compute(np.asarray(work))
    assert describe.pdq_dihedral(work)[0] == pdq.pack(bits) + bytes([quality])
    assert describe.describe(image)[signal_set.PDQ] == pdq.pack(bits) + bytes([quality])


def test_describe_works_without_pdqhash() -> None:
    """pdqhash is optional (the `bench` extra): a describe with it unimportable still stores PDQ."""
    code = (
        "import sys; sys.modules['pdqhash'] = None\n"  # any `import pdqhash` now raises ImportError
        "from PIL import Image\n"
        "from common.match import describe\n"
        "from common.signals import signal_set\n"
        "sigs = describe.describe(Image.radial_gradient('L').convert('RGB'))\n"
        "print(len(sigs[signal_set.PDQ]))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "33"


def _live_cases() -> list[np.ndarray]:
    rng = np.random.default_rng(29)
    photos = [samplegen.render_product(rng) for _ in range(12)]
    cases = [np.asarray(p) for p in photos]
    cases += [np.asarray(p.resize((p.width * 3 // 2, p.height * 3 // 2))) for p in photos[:3]]  # no reduce
    cases += [np.asarray(describe.working_copy(p.resize((p.width * 3, p.height * 3)))) for p in photos[:3]]
    photo = photo_like(400, 300, seed=4)
    cases += [np.asarray(photo.resize((w, h))) for w, h in ((64, 64), (63, 65), (5, 5), (6, 300), (811, 97))]
    cases += [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((5, 9), (128, 128), (1000, 37))]
    cases += [
        np.zeros((90, 70, 3), np.uint8),
        np.full((90, 90, 3), 255, np.uint8),
    ]  # flat: ties at the median
    cases += [np.asarray(photo.resize((20, 4))), np.asarray(photo.resize((1, 1)))]  # below 5 px: zeros
    return cases


def test_live_identical_to_pdqhash() -> None:
    pdqhash = pytest.importorskip("pdqhash")
    for i, pixels in enumerate(_live_cases()):
        want_bits, want_quality = pdqhash.compute(pixels)
        bits, quality = pdq.compute(pixels)
        assert _distance(bits, want_bits) == 0 and quality == want_quality, (i, pixels.shape)
        want_all, want_dq = pdqhash.compute_dihedral(pixels)
        got_all, dq = pdq.compute_dihedral(pixels)
        assert [_distance(a, b) for a, b in zip(got_all, want_all, strict=True)] == [0] * 8, (i, pixels.shape)
        assert dq == want_dq


# (width, height, most bits a turned image's hash may differ from the dihedral hash). The box
# filter's window is ceil(side / 128): odd windows are centred, so turning the image only permutes
# the filtered samples and the hashes agree exactly; an even window is off-centre by half a pixel,
# so they differ in some bits, in the reference as here (measured: up to 18 at 404 x 540).
TURN_CASES = [(360, 540, 2), (540, 540, 2), (300, 300, 2), (404, 540, 24)]


@pytest.mark.parametrize(("width", "height", "most"), TURN_CASES)
@pytest.mark.parametrize("seed", range(3))
def test_dihedral_hash_is_the_hash_of_the_turned_image(width: int, height: int, most: int, seed: int) -> None:
    """So a mirrored or rotated copy is found by comparing its hash with the stored dihedral ones."""
    pixels = np.asarray(photo_like(width, height, seed=seed))
    dihedral, quality = pdq.compute_dihedral(pixels)
    assert quality > 50
    for name, hashed in zip(pdq.DIHEDRAL, dihedral, strict=True):
        turned, turned_quality = pdq.compute(np.ascontiguousarray(TRANSFORMS[name](pixels)))
        assert _distance(turned, hashed) <= most, name
        assert abs(turned_quality - quality) <= 2, name
    assert min(_distance(dihedral[0], h) for h in dihedral[1:]) > 64  # eight genuinely different hashes


def test_luma_input_and_small_images() -> None:
    pixels = np.asarray(photo_like(200, 150, seed=8))
    assert _hex(pdq.compute(pdq.luma(pixels))[0]) == _hex(pdq.compute(pixels)[0])
    bits, quality = pdq.compute(np.zeros((4, 400, 3), np.uint8))
    assert not bits.any() and quality == 0 and bits.shape == (256,)


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="H x W x 3"):
        pdq.compute(np.zeros((3, 4, 5, 6), np.uint8))
    with pytest.raises(ValueError, match="at least 5 x 5"):
        pdq.float_luma(np.zeros((4, 64), np.float32))


def test_threads_share_a_few_workspaces() -> None:
    """Hashing from many threads gives the same bits and keeps no workspace per thread."""
    from concurrent.futures import ThreadPoolExecutor

    images = [np.asarray(photo_like(300 + 20 * i, 400, seed=i)) for i in range(12)]
    want = [_hex(pdq.compute(a)[0]) for a in images]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda a: _hex(pdq.compute(a)[0]), images * 3))
    assert got == want * 3
    assert len(pdq._idle) <= 8


def _box1d_reference(line: np.ndarray, w: int) -> np.ndarray:
    """box1DFloat from downscaling.cpp, transcribed loop for loop in float32 scalars."""
    f32, n, h = np.float32, len(line), (w + 2) // 2
    out, total, size, ri, li = np.zeros(n, f32), f32(0), 0, 0, 0
    for _ in range(h - 1):  # phase 1
        total, size, ri = f32(total + line[ri]), size + 1, ri + 1
    for oi in range(w - h + 1):  # phase 2
        total, size = f32(total + line[ri]), size + 1
        out[oi], ri = f32(total / f32(size)), ri + 1
    for oi in range(w - h + 1, n - h + 1):  # phase 3
        total = f32(f32(total + line[ri]) - line[li])
        out[oi], ri, li = f32(total / f32(size)), ri + 1, li + 1
    for oi in range(n - h + 1, n):  # phase 4
        total, size = f32(total - line[li]), size - 1
        out[oi], li = f32(total / f32(size)), li + 1
    return out


@pytest.mark.parametrize(("n", "w"), [(5, 1), (9, 2), (40, 3), (77, 4), (200, 5), (130, 6)])
def test_box_filter_rounds_like_the_cpp(n: int, w: int) -> None:
    """The vectorised running sums (np.add.reduce down axis 0, lanes side by side) give the C++'s
    sequential float32 sums exactly: checked here without pdqhash, on this numpy."""
    rng = np.random.default_rng(n * 10 + w)
    x = (rng.random((n, 7)) * 255).astype(np.float32)
    want = np.stack([_box1d_reference(x[:, j], w) for j in range(7)], axis=1)
    assert np.array_equal(pdq._box(x, w, None, pdq._Workspace(), "out"), want)
    keep = np.unique(rng.integers(0, n, 9))
    assert np.array_equal(pdq._box(x, w, keep, pdq._Workspace(), "out"), want[keep])
    # the passes hand in transposed views (read through cv2.transpose): the same sums
    view = np.ascontiguousarray(x.T).T
    assert np.array_equal(pdq._box(view, w, None, pdq._Workspace(), "out"), want)
    assert np.array_equal(pdq._box(view, w, keep, pdq._Workspace(), "out"), want[keep])


def test_cv2_luma_is_numpys_for_every_colour() -> None:
    """The luma pdqhash's binding computes (float64, then float32), through cv2.transform: the same
    bits for all 2**24 colours, in 16 blocks of a million."""
    assert pdq.cv2_luma_agrees()
    ws = pdq._Workspace()
    for block in range(16):
        v = np.arange(block << 20, (block + 1) << 20, dtype=np.uint32)
        rgb = np.stack([v >> 16, (v >> 8) & 255, v & 255], axis=-1).astype(np.uint8).reshape(1024, 1024, 3)
        assert np.array_equal(pdq._cv2_luma(rgb), pdq._numpy_luma(rgb, ws)), block


def test_dct_sums_in_index_order() -> None:
    """Flat input makes every coefficient a cancellation residue, so any other summation order
    shows (it did, with a transposed operand: numpy then summed pairwise)."""
    f32 = np.float32
    for a in (np.full((64, 64), 255, f32), (np.random.default_rng(1).random((64, 64)) * 255).astype(f32)):
        t = np.zeros((16, 64), f32)
        for k in range(64):
            t = t + pdq._D[:, k, None] * a[None, k, :]
        want = np.zeros((16, 16), f32)
        for k in range(64):
            want = want + t[:, k, None] * pdq._D[None, :, k]
        assert np.array_equal(pdq._dct16(a), want)


if __name__ == "__main__":
    _write_golden()
