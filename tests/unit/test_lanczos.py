"""common.signals.lanczos against Pillow itself: LANCZOS reductions of greyscale images (9x8, what
dHash asks of it; 32x32 too, as a second shape of the same arithmetic), bit for bit, on every shape
it is used for; Pillow for the rest."""

from __future__ import annotations

import imagehash
import numpy as np
import pytest
from PIL import Image

from common.signals import lanczos
from common.signals.signatures import dhash64
from tests.support.images import photo_like


def _pillow(grey: Image.Image, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(grey.resize(size, Image.Resampling.LANCZOS))


def test_the_port_agrees_here() -> None:
    assert lanczos.agrees()  # else every call below is Pillow's own and the test proves nothing


@pytest.mark.parametrize("seed", range(6))
def test_port_is_pillow_on_the_shapes_describe_reduces(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for k in range(12):
        w = int(rng.integers(64, 667))
        h = int(rng.integers(64, int(w * 1.5) + 1)) if k % 3 else int(w * 1.5)  # the tall edge too
        noise = rng.integers(0, 256, (h, w), dtype=np.uint8)
        photo = np.asarray(photo_like(w, h, seed=seed * 100 + w).convert("L"))
        for grey in (noise, photo):
            image = Image.fromarray(grey)
            for size in ((9, 8), (32, 32)):
                assert np.array_equal(lanczos._port(grey, size), _pillow(image, size)), (h, w, size)
                for _ in range(2):  # Pillow for a size met first, the port from the second time on
                    assert np.array_equal(lanczos.reduce_grey(image, size), _pillow(image, size))


def test_tall_tiny_and_upscaled_images_go_to_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_port(*_: object) -> np.ndarray:
        raise AssertionError("outside the port's shapes")

    monkeypatch.setattr(lanczos, "_port", no_port)
    rng = np.random.default_rng(9)
    # much taller than wide; over 1000 px; tiny; a 9x8 upscale
    for h, w in ((1000, 300), (800, 1200), (40, 30), (8, 120)):
        image = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8))
        assert np.array_equal(lanczos.reduce_grey(image, (9, 8)), _pillow(image, (9, 8)))


def test_dhash64_stays_imagehash_dhash() -> None:
    for seed in range(8):
        image = photo_like(360 + 20 * seed, 540, seed=seed)
        assert dhash64(image) == int(str(imagehash.dhash(image)), 16)
