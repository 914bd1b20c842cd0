"""Image signatures: dHash bit-identical to imagehash.dhash, and the codec between int, hex and bytes.

A signature is stored under a versioned key ("dhash64@1") so a different algorithm, or a faster
variant that moves a few bits, can never be mixed into an existing index by accident.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from common.signals import lanczos

DHASH = "dhash64@1"  # imagehash.dhash(image, 8) exactly: LANCZOS to 9x8 greyscale, left<right bits


def dhash64(image: Image.Image, reducing_gap: float | None = None) -> int:
    """64-bit dHash, bit for bit what imagehash.dhash(image) gives, as an int (first bit = MSB).
    With `reducing_gap` (Pillow's box pre-reduction) it is within a few bits of that, much cheaper."""
    grey = image if image.mode == "L" else image.convert("L")
    if reducing_gap is None:  # Pillow's own bits, ~0.3 ms cheaper (common.signals.lanczos)
        return int.from_bytes(dhash_bits(lanczos.reduce_grey(grey, (9, 8))), "big")
    small = grey.resize((9, 8), Image.Resampling.LANCZOS, reducing_gap=reducing_gap)
    return int.from_bytes(dhash_bits(np.asarray(small)), "big")


def dhash_bits(pixels: np.ndarray) -> bytes:
    """The 8 packed bytes of dHash from its (8, 9) greyscale reduction: left < right, row by row."""
    return np.packbits((pixels[:, 1:] > pixels[:, :-1]).ravel()).tobytes()


def pack64(value: int) -> bytes:
    return value.to_bytes(8, "big")


def unpack64(data: bytes) -> int:
    if len(data) != 8:
        raise ValueError(f"a 64-bit signature is 8 bytes, got {len(data)}")
    return int.from_bytes(data, "big")


def to_hex(value: int) -> str:
    """Same spelling as str(imagehash.ImageHash) for 64 bits."""
    return f"{value:016x}"


def from_hex(text: str) -> int:
    return int(text, 16)


def pack_many64(blobs: list[bytes]) -> np.ndarray:
    """Packed 8-byte signatures -> native uint64 array for scanning."""
    return np.frombuffer(b"".join(blobs), dtype=">u8").astype(np.uint64)
