"""Normalising views of an image before hashing: uniform-border trim and fixed crop windows.

Padding and letterboxing add uniform bands that move every global hash; trimming them on both sides
(inventory and query, same rule) restores comparable content. Crop windows give the inventory a few
pre-cropped views so a cropped query still lands near one of them.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from common.match.presets import FIXED

# Crop windows (left, top, right, bottom as fractions) stored per inventory image. Measured on the
# devset: with these, a cropped query's source ranks in the top 8 candidates 0.53 of the time (0.39
# without), at one 64-bit column each.
CROP_WINDOWS: tuple[tuple[float, float, float, float], ...] = (
    (0.075, 0.075, 0.925, 0.925),
    (0.0, 0.0, 1.0, 0.85),
    (0.0, 0.15, 1.0, 1.0),
)

_WORK_SIDE = 256
# The border rule (FIXED.trim_tolerance, trim_keep), the speck limits and the studio-backdrop limits
# are in common.match.presets, with where they were measured.


def trim_box(image: Image.Image | np.ndarray) -> tuple[int, int, int, int]:
    """Box (left, top, right, bottom) inside uniform borders; the whole image when nothing is uniform.

    Each side walks inwards while its lines stay within tolerance of that side's outermost line,
    after a 3x3 median that removes salt-and-pepper specks. `image` may be the (h, w, 3) uint8 RGB
    array of the picture, when the caller already holds one. describe runs the same rule on its
    halved copy instead (halved_trim_box).
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
    return _border_box(small, (fw, fh), scale)


# describe's shared halved copy: exact 2x area steps down to <= this longer side.
HALVED_SIDE = 320


def halved(rgb: np.ndarray) -> np.ndarray:
    """The (h, w, 3) uint8 array reduced by exact 2x INTER_AREA steps until its longer side is <=
    HALVED_SIDE (itself when already that small). describe makes it once; the trim box
    (halved_trim_box) and the thumbnails (photometric.thumbnail) both start from it, instead of each
    area-reducing the working copy on its own (measured: trim 2.0 -> 1.1 ms, thumbnail 0.8 -> 0.35)."""
    out = rgb
    while max(out.shape[:2]) > HALVED_SIDE:
        h, w = out.shape[:2]
        out = cv2.resize(out, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(out)


def halved_trim_box(half: np.ndarray, full_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """trim_box's border rule run on `half` (halved(rgb) of an image of `full_size` = (w, h)) as it is,
    without trim_box's own reduction to 256 px; the box is at full_size's resolution."""
    return _border_box(half, full_size, half.shape[1] / full_size[0])


def _border_box(small: np.ndarray, full_size: tuple[int, int], scale: float) -> tuple[int, int, int, int]:
    """The border rule on `small` (a copy of an image of `full_size` reduced by `scale`), as a box at
    full resolution."""
    fw, fh = full_size
    a = cv2.medianBlur(np.ascontiguousarray(small), 3)
    h, w, _ = a.shape

    def depth(lines: np.ndarray) -> int:
        # lines: (n_lines, n_pixels, 3), outermost first. Only the outer half can be border, and a
        # max over a length-3 axis is slow in numpy, so the channels are folded with np.maximum.
        lines = lines[: max(1, len(lines) // 2)]
        # Lines are judged in growing blocks (1, 4, 16, ... lines) up to the first that is not
        # border: most photos stop at the first line, so the whole half is rarely compared.
        ref = np.median(lines[0], axis=0).astype(np.int16)
        start, step = 0, 1
        while start < len(lines):
            block = lines[start : start + step].astype(np.int16)
            diff = np.abs(block - ref)
            worst = np.maximum(np.maximum(diff[..., 0], diff[..., 1]), diff[..., 2])
            ok = (worst <= FIXED.trim_tolerance).mean(axis=1) >= FIXED.trim_keep
            if not ok.all():
                return start + int(np.flatnonzero(~ok)[0])
            start, step = start + len(block), step * 4
        return len(lines)

    top, bottom = depth(a), depth(a[::-1])
    left, right = depth(a.transpose(1, 0, 2)), depth(a.transpose(1, 0, 2)[::-1])
    if top + bottom >= h - 8 or left + right >= w - 8:
        return (0, 0, fw, fh)  # (almost) blank image: nothing sensible to trim to
    return full_box((left, top, right, bottom), (w, h), (fw, fh), scale)


def full_box(
    margins: tuple[int, int, int, int], small: tuple[int, int], full: tuple[int, int], scale: float
) -> tuple[int, int, int, int]:
    """Border depths (left, top, right, bottom) found on a copy of size `small` = `full` * scale, as
    a box at full resolution, rounding inwards by at most one reduced pixel (never empty)."""
    (left, top, right, bottom), (w, h), (fw, fh) = margins, small, full
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


# Salt-and-pepper noise: single pixels more than FIXED.speck_margin outside the range of their 8
# neighbours, on more than FIXED.speckled_share of the photo.
_RING = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], np.uint8)


def despeckled(image: Image.Image) -> Image.Image:
    """`image` through a 3x3 median when it carries salt-and-pepper noise, else `image` itself.

    The textbook cure, applied only where it helps: a median also softens fine texture, so clean
    photos (every inventory photo, in practice) pass through untouched. About 0.3 ms at 540 px."""
    return despeckled_rgb(image)[0]


def despeckled_rgb(image: Image.Image) -> tuple[Image.Image, np.ndarray]:
    """despeckled(image) and its (h, w, 3) uint8 RGB array (= np.asarray of it), from one copy."""
    rgb = np.ascontiguousarray(np.asarray(image if image.mode == "RGB" else image.convert("RGB")))
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    # uint8 saturating differences: a pixel above its brightest neighbour, below its darkest
    salt = cv2.subtract(grey, cv2.dilate(grey, _RING))
    pepper = cv2.subtract(cv2.erode(grey, _RING), grey)
    spikes = cv2.countNonZero(
        cv2.threshold(cv2.max(salt, pepper), FIXED.speck_margin, 255, cv2.THRESH_BINARY)[1]
    )
    if spikes < FIXED.speckled_share * grey.size:
        return (image if image.mode == "RGB" else Image.fromarray(rgb)), rgb
    clean = cv2.medianBlur(rgb, 3)
    return Image.fromarray(clean), clean


# A studio backdrop: light and nearly neutral (the inventory's white or light grey), FIXED.studio_luma
# and studio_chroma. A query whose border is anything else may show a garment on a replaced background.
_STUDIO_FILL = 248  # the studio white a replaced backdrop is painted with
_BACKDROP_SIDE = 128


def restudioed(image: Image.Image | np.ndarray) -> Image.Image | None:
    """The photo with its backdrop replaced by studio white, when that backdrop is not studio-like
    (a seller's new flat colour or gradient); None when it already is, or when none is found.

    The backdrop is what a flood from the border reaches through small steps between neighbours (so
    a gradient is followed), on a <= 128 px copy; the garment's outline stops it. `image`: a picture,
    or its (h, w, 3) uint8 RGB array (describe has one: no copy)."""
    rgb = np.ascontiguousarray(image if isinstance(image, np.ndarray) else np.asarray(image.convert("RGB")))
    h, w, _ = rgb.shape
    f = min(1.0, _BACKDROP_SIDE / max(h, w))
    small = cv2.resize(rgb, (max(8, round(w * f)), max(8, round(h * f))), interpolation=cv2.INTER_AREA)
    sh, sw, _ = small.shape
    ring = np.concatenate([small[0], small[: sh * 3 // 5, 0], small[: sh * 3 // 5, -1]]).astype(np.int16)
    med = np.median(ring, axis=0)
    luma = 0.299 * med[0] + 0.587 * med[1] + 0.114 * med[2]
    if luma >= FIXED.studio_luma and med.max() - med.min() <= FIXED.studio_chroma:
        return None
    mask = np.zeros((sh + 2, sw + 2), np.uint8)
    step = (FIXED.flood_step,) * 3
    flags = 4 | cv2.FLOODFILL_MASK_ONLY | (255 << 8)
    # Seeds along the top and the upper sides only: garments often touch the bottom edge.
    seeds = [(x, 0) for x in range(0, sw, 4)] + [
        (x, y) for y in range(0, sh * 3 // 5, 4) for x in (0, sw - 1)
    ]
    for x, y in seeds:
        if not mask[y + 1, x + 1]:
            cv2.floodFill(small, mask, (x, y), (0, 0, 0), step, step, flags)
    back: np.ndarray = mask[1:-1, 1:-1].astype(np.float32) / 255.0
    if not FIXED.backdrop_min_share <= back.mean() <= FIXED.backdrop_max_share:
        return None  # no backdrop to speak of, or nothing left of a garment
    flooded = mask[1:-1, 1:-1] > 0
    filled = cv2.inpaint(small, (~flooded).astype(np.uint8), 3, cv2.INPAINT_TELEA)
    # Flat patches of the backdrop's colour enclosed by the garment (between arm and body: the
    # cut-out reached them through gaps the small copy closes): FIXED.key_tol, key_flat_std.
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
    mean = cv2.blur(grey, (3, 3))
    std = np.sqrt(np.maximum(cv2.blur(grey * grey, (3, 3)) - mean * mean, 0.0))
    off = np.abs(small.astype(np.int16) - filled).max(axis=2)
    keyed = np.maximum(back, ((off <= FIXED.key_tol) & (std <= FIXED.key_flat_std)).astype(np.float32))
    if keyed.mean() <= FIXED.backdrop_max_share:  # else the garment itself is of the backdrop's colour
        back = keyed
    colour = cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    full, white = _garment_side(rgb.astype(np.float32), back, colour)
    full[white] = _STUDIO_FILL  # so the soft edge below blends the garment with white, not the backdrop
    soft = cv2.GaussianBlur(white.astype(np.float32), (0, 0), 1.0)[..., None]
    out = full * (1.0 - soft) + _STUDIO_FILL * soft
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def _garment_side(rgb: np.ndarray, back: np.ndarray, colour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the photo with its blended outline unmixed, where to paint studio white) at full size.

    The flood (on the small copy) stops short of the garment's outline, where a seller's cut-out
    blends the new colour into the garment's edge: rim pixels still near that colour go white, and
    pixels = a * garment + (1 - a) * backdrop get the backdrop's share back as studio white (the
    enclosed flat patches are already in `back`: restudioed). Limits: FIXED.rim_tol, unmix_*.
    Only the rim's pixels are unmixed (gathered: a few percent of the photo; whole-array arithmetic
    cost ~60 ms a photo, most of it in sums over the colour axis)."""
    h, w, _ = rgb.shape
    backdrop = cv2.resize(back, (w, h), interpolation=cv2.INTER_LINEAR) > 0.5
    reach = max(1, round(max(h, w) / _BACKDROP_SIDE)) + 1  # the small copy's pixel, and one more
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1))
    rim = (cv2.dilate(backdrop.astype(np.uint8), kernel) > 0) & ~backdrop
    # The garment's own colour at the rim: its pixels beyond the rim, carried outwards.
    inner = (~backdrop & ~rim).astype(np.float32)
    sigma = float(reach)
    weight = cv2.GaussianBlur(inner, (0, 0), sigma)
    carried = cv2.GaussianBlur(rgb * inner[..., None], (0, 0), sigma)
    ys, xs = np.nonzero(rim)
    px, back_px, wt = rgb[ys, xs], colour[ys, xs], weight[ys, xs]
    garment = carried[ys, xs] / np.maximum(wt, 1e-3)[:, None]
    off = np.abs(px - back_px).max(axis=1)
    nearer = np.abs(px - garment).max(axis=1) > off  # nearer the backdrop than the garment
    white_rim = (off <= FIXED.rim_tol) & nearer
    # pixel - backdrop = a (garment - backdrop) + c (white - backdrop): the original's outline is the
    # garment and its light studio halo; the backdrop's share 1 - a - c goes back to studio white.
    u, v, d = garment - back_px, _STUDIO_FILL - back_px, px - back_px
    uu, uv, vv = (u * u).sum(axis=1), (u * v).sum(axis=1), (v * v).sum(axis=1)
    ud, vd = (u * d).sum(axis=1), (v * d).sum(axis=1)
    det = uu * vv - uv * uv
    ok = det > 1e-3 * np.maximum(uu * vv, 1.0)
    safe = np.where(ok, det, 1.0)
    a = np.where(ok, (ud * vv - vd * uv) / safe, 0.0)
    c = np.where(ok, (vd * uu - ud * uv) / safe, vd / np.maximum(vv, 1.0))
    a, c = np.clip(a, 0.0, 1.0), np.clip(c, 0.0, 1.0)
    share = np.clip(a + c, 0.0, 1.0)  # the garment's (and its halo's) share of the pixel
    blended = ~white_rim & (wt > 0.05) & (np.sqrt(uu) >= FIXED.unmix_contrast)
    keep = blended & (share >= FIXED.unmix_min)
    out = rgb.copy()
    out[ys[keep], xs[keep]] += (1.0 - share[keep])[:, None] * (_STUDIO_FILL - back_px[keep])
    white = backdrop.copy()
    painted = white_rim | (blended & (share < FIXED.unmix_min))
    white[ys[painted], xs[painted]] = True
    return out, white


def trimmed(image: Image.Image) -> Image.Image:
    box = trim_box(image)
    return image if box == (0, 0, *image.size) else image.crop(box)


def crop_views(image: Image.Image) -> list[Image.Image]:
    w, h = image.size
    return [
        image.crop((round(a * w), round(b * h), round(c * w), round(d * h))) for a, b, c, d in CROP_WINDOWS
    ]


# A photo inside a screenshot-like frame (query-only): status bar, title, price and button sit on the
# frame's flat page, separated from the photo by flat bands. The limits are FIXED.frame_*.
_FRAME_SIDE = 256


def framed_box(grey: Image.Image) -> tuple[int, int, int, int] | None:
    """Box (left, top, right, bottom) of the photo inside a screenshot-like frame, or None.

    On a <= 256 px copy of the greyscale `grey`: the frame's page is the commonest value on the
    border ring (a flat page repeats one value; a photo reaching the edge spreads over many), and a
    line is page when nearly all of it lies within tolerance of it. The other rows form runs split
    by page bands; the tallest run is the photo when other runs (the frame's text, bars, buttons)
    lie outside it. Its columns are bounded by the first and last non-page column of that run."""
    w, h = grey.size
    f = min(1.0, _FRAME_SIDE / max(w, h))
    small = grey.resize((max(8, round(w * f)), max(8, round(h * f))), Image.Resampling.BOX)
    a = cv2.medianBlur(np.ascontiguousarray(np.asarray(small)), 3)
    sh, sw = a.shape
    ring = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    page = int(np.argmax(np.bincount(ring, minlength=256)))
    off = np.abs(a.astype(np.int16) - page) > FIXED.frame_tolerance  # not the page's colour

    def busy(lines: np.ndarray) -> np.ndarray:  # (n, m) -> (n,): the line is not page
        share: np.ndarray = lines.mean(axis=1)
        return share > 1.0 - FIXED.frame_keep

    rows = busy(off)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], rows.astype(np.int8), [0]])))
    runs = list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))
    if len(runs) < 2:
        return None  # one block of content: no frame around it (trim_box covers uniform borders)
    top, bottom = max(runs, key=lambda r: r[1] - r[0])
    if not FIXED.frame_min_side * sh <= bottom - top <= FIXED.frame_max_side * sh:
        return None
    cols = np.flatnonzero(busy(off[top:bottom].T))
    if not len(cols) or cols[-1] + 1 - cols[0] < FIXED.frame_min_side * sw:
        return None
    left, right = int(cols[0]), int(cols[-1]) + 1
    return full_box((left, top, sw - right, sh - bottom), (sw, sh), (w, h), f)
