"""dHash from a reduced-size JPEG decode: 4-5x faster than imagehash on large photos, not bit-exact.

libjpeg can decode a JPEG at 1/2, 1/4 or 1/8 scale straight from the DCT coefficients (Pillow's
``Image.draft``), skipping most of the inverse DCT, the colour conversion and the big LANCZOS
reduction that dominate ``imagehash.dhash`` on an 800x1000 photo. Asking for greyscale decodes the
luma plane only. The 9x8 LANCZOS step then runs on a ~100x125 image. The price: the reduced image is
not the full one downsampled the same way, so a few bits near the left<right threshold move
(<= 4 of 64 on generated 800x1000 photos, up to 6 on small noisy ones: benchmarks/bench_hash.py).
Hence its own signature key: it must never be compared with, or stored under, the exact ``dhash64@1``.

Non-JPEG inputs (PNG, WebP...) have no draft mode and hash exactly like ``dhash64``.

When simplejpeg is installed, JPEG bytes are decoded by it instead of Pillow: the same libjpeg-turbo
scaled integer IDCT (JDCT_ISLOW, greyscale output), so the same pixels and bits (checked in
tests/unit/test_fastdhash.py), without Pillow's per-open overhead (2.6x faster on 224x224 images).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from common.signals.signatures import dhash64

DHASH_FAST = "dhash64-draft@1"  # dhash64 of Pillow's draft("L", (9, 8)) decode; bump if that changes

_HASH_SIZE = (9, 8)

try:  # optional: a faster front end to the same decoder
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - depends on the environment
    _simplejpeg = None


def open_reduced(data: bytes) -> Image.Image:
    """Open image bytes, set up a greyscale decode at the smallest JPEG scale still >= 9x8 (not loaded).

    Callers that add their own guards (size caps, EXIF transpose) can open through this and pass the
    image on; the draft must be set before the first pixel access."""
    image = Image.open(io.BytesIO(data))
    reduce_draft(image)
    return image


def reduce_draft(image: Image.Image) -> Image.Image:
    """Configure a just-opened JPEG for a reduced greyscale decode; a no-op for other formats."""
    if image.format == "JPEG":
        image.draft("L", _HASH_SIZE)
    return image


def dhash64_fast_image(image: Image.Image) -> int:
    """The DHASH_FAST signature of an image opened by ``open_reduced`` (or with ``reduce_draft``)."""
    return dhash64(image)


def dhash64_fast(data: bytes, *, use_simplejpeg: bool = True) -> int:
    """The DHASH_FAST signature of encoded image bytes, as an int (first bit = MSB, like dhash64)."""
    if use_simplejpeg and _simplejpeg is not None and data[:3] == b"\xff\xd8\xff":
        try:
            grey = _simplejpeg.decode_jpeg(data, colorspace="GRAY", min_height=8, min_width=9)
        except ValueError:
            pass  # CMYK, arithmetic coding, ...: let Pillow handle (or reject) it
        else:
            return dhash64(Image.fromarray(np.ascontiguousarray(grey[..., 0])))
    return dhash64(open_reduced(data))
