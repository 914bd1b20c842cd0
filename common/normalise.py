"""Normalising views of an image before hashing: uniform-border trim and fixed crop windows.

Padding and letterboxing add uniform bands that move every global hash; trimming them on both sides
(inventory and query, same rule) restores comparable content. Crop windows give the inventory a few
pre-cropped views so a cropped query still lands near one of them.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

# Crop windows (left, top, right, bottom as fractions) stored per inventory image. Measured on the
# devset: with these, a cropped query's source ranks in the top 8 candidates 0.53 of the time (0.39
# without), at one 64-bit column each.
CROP_WINDOWS: tuple[tuple[float, float, float, float], ...] = (
    (0.075, 0.075, 0.925, 0.925),
    (0.0, 0.0, 1.0, 0.85),
    (0.0, 0.15, 1.0, 1.0),
)

_WORK_SIDE = 256
_TOLERANCE = 10  # per-channel difference still counted as the border colour (JPEG ringing, noise)
_KEEP = 0.97  # share of a line's pixels that must match for the line to count as border


def trim_box(image: Image.Image | np.ndarray) -> tuple[int, int, int, int]:
    """Box (left, top, right, bottom) inside uniform borders; the whole image when nothing is uniform.

    Each side walks inwards while its lines stay within tolerance of that side's outermost line,
    after a 3x3 median that removes salt-and-pepper specks. `image` may be the (h, w, 3) uint8 RGB
    array of the picture, when the caller already holds one (describe does).
    """
    full = np.ascontiguousarray(image if isinstance(image, np.ndarray) else np.asarray(image.convert("RGB")))
    fh, fw, _ = full.shape
    # Work on a reduced copy (<= 256 px): 4-8x cheaper, and area averaging also tames noise.
    scale = min(1.0, _WORK_SIDE / max(fh, fw))
    small = (
        cv2.resize(full, (max(1, round(fw * scale)), max(1, round(fh * scale))), interpolation=cv2.INTER_AREA)
        if scale < 1
        else full
    )
    a = cv2.medianBlur(small, 3)
    h, w, _ = a.shape

    def depth(lines: np.ndarray) -> int:
        # lines: (n_lines, n_pixels, 3), outermost first. Only the outer half can be border, and a
        # max over a length-3 axis is slow in numpy, so the channels are folded with np.maximum.
        # Lines are judged in growing blocks (1, 4, 16, ... lines) up to the first that is not
        # border: most photos stop at the first line, so the whole half is rarely compared.
        lines = lines[: max(1, len(lines) // 2)]
        ref = np.median(lines[0], axis=0).astype(np.int16)
        start, step = 0, 1
        while start < len(lines):
            block = lines[start : start + step].astype(np.int16)
            diff = np.abs(block - ref)
            worst = np.maximum(np.maximum(diff[..., 0], diff[..., 1]), diff[..., 2])
            ok = (worst <= _TOLERANCE).mean(axis=1) >= _KEEP
            if not ok.all():
                return start + int(np.flatnonzero(~ok)[0])
            start, step = start + len(block), step * 4
        return len(lines)

    top, bottom = depth(a), depth(a[::-1])
    left, right = depth(a.transpose(1, 0, 2)), depth(a.transpose(1, 0, 2)[::-1])
    if top + bottom >= h - 8 or left + right >= w - 8:
        return (0, 0, fw, fh)  # (almost) blank image: nothing sensible to trim to
    # Back to full resolution, rounding inwards by at most one reduced pixel.
    box = (
        int(np.ceil(left / scale)),
        int(np.ceil(top / scale)),
        int(np.floor((w - right) / scale)),
        int(np.floor((h - bottom) / scale)),
    )
    return (
        min(box[0], fw),
        min(box[1], fh),
        max(min(box[2], fw), box[0] + 1),
        max(min(box[3], fh), box[1] + 1),
    )


def trimmed(image: Image.Image) -> Image.Image:
    box = trim_box(image)
    return image if box == (0, 0, *image.size) else image.crop(box)


def crop_views(image: Image.Image) -> list[Image.Image]:
    w, h = image.size
    return [
        image.crop((round(a * w), round(b * h), round(c * w), round(d * h))) for a, b, c, d in CROP_WINDOWS
    ]
