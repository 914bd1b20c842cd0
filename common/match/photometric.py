"""The photometric check after alignment: stored thumbnails and whether aligned pixels agree.

Split from common.match.verify (ORB + RANSAC), whose fitted transform this check applies.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from common.match.presets import FIXED
from common.signals.normalise import halved

Size = tuple[int, int]  # (width, height) of an image in the ORB frame

# ORB + RANSAC confirms that keypoints line up; different garments photographed on the same template
# (same silhouette, pose and framing) line up too. The thumbnail check warps the candidate's stored
# thumbnail into the query's frame with the fitted transform and asks whether the pixels agree:
#   luma   — the share of textured 8x8 blocks (64 px long side) whose local NCC >= 0.5 (local zero
#            mean and scale: brightness, contrast, gamma, JPEG and noise keep it; another print does not);
#   chroma — the chroma plane (Cr + i*Cb, 32 px) compared as one complex signal: |corr| is unchanged
#            by a hue rotation or a saturation scale; a colourful garment against a grey one, or a
#            different colour pattern, fails (energy ratio or correlation).
# The thresholds (texture, agreement, chroma, fine thumbnail, swapped backdrop, inserts) are FIXED in
# common.match.presets, with where they were measured; the luma share is the presets' photo_min.

THUMB_SIDE = 64  # luma thumbnail, longer side (<= 64 x 64 bytes)
CHROMA_SIDE = 32  # chroma thumbnails, longer side (2 planes)
_BLOCK = 8
FINE_SIDE = 128  # a query's fine thumbnail (twice the size), used when the candidate is small in it


@dataclass(frozen=True)
class Thumb:
    luma: np.ndarray  # (h, w) uint8
    chroma: np.ndarray  # (h2, w2, 2) float32, Cr and Cb around 0


@dataclass(frozen=True)
class Photometric:
    luma: float  # share of textured blocks that agree (1.0 when nothing is textured)
    chroma_corr: float  # |complex NCC| of the chroma planes (1.0 when both are grey)
    chroma_ratio: float  # smaller / larger chroma std (1.0 when both are grey)

    def passes(self, min_luma: float) -> bool:
        return (
            self.luma >= min_luma
            and self.chroma_corr >= FIXED.chroma_min_corr
            and self.chroma_ratio >= FIXED.chroma_min_ratio
        )


def _resized(arr: np.ndarray, side: int) -> np.ndarray:
    h, w = arr.shape[:2]
    f = side / max(h, w)
    return cv2.resize(arr, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)


# A stored thumbnail keeps its luma lossy, as WebP (quality STORED_QUALITY), and its chroma exact:
# ~0.75 KB where both planes kept exactly took ~1.6-1.8 KB, a third of an indexed product. The luma
# check compares 8x8 blocks by local NCC, which WebP's mean error of ~1.4 grey levels leaves as it was
# (an image against its own stored thumbnail: 1.0 on every devset photo); on the seller-edit tune sets
# quality 85 and 75 matched as lossless did and 50 lost recall (benchmarks/README, bench_footprint).
# The chroma planes are faint (a few levels around 128): WebP's error there took an image's colour
# correlation with itself below 0.94 for one devset photo in 20 (0.89 at worst), so they stay exact,
# zlib'd (~0.33 KB).
STORED_QUALITY = 85


def thumbnail(image: Image.Image | np.ndarray, side: int = THUMB_SIDE, lossless: bool = False) -> bytes:
    """The thumbnail blob: luma (64 px long side) and Cr, Cb (32 px), uint8 planes (4.1 KB of pixels
    for a 2:3 catalogue photo). Stored form: luma as WebP, chroma exact, ~0.75 KB (pack_lossy);
    `lossless`: the planes as they are (pack_thumb), for a query's own. `image`: a picture, or its
    (h, w, 3) uint8 RGB array. `side` FINE_SIDE: a query's fine one.

    Made from the photo's halved copy (normalise.halved: exact 2x area steps to <= 320 px, >= 160 px
    so >= FINE_SIDE when it reduces at all), which describe passes in already made (then halving it
    again is a no-op), and one area resize of that."""
    rgb = halved(image if isinstance(image, np.ndarray) else np.asarray(image.convert("RGB")))
    small = _resized(rgb, side)
    luma = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    ycc = cv2.cvtColor(_resized(small, side * CHROMA_SIDE // THUMB_SIDE), cv2.COLOR_RGB2YCrCb)
    chroma = np.ascontiguousarray(ycc[..., 1:].transpose(2, 0, 1))
    return pack_thumb(luma, chroma) if lossless else pack_lossy(luma, chroma)


_EXACT, _LOSSY = 0, 1  # the form byte of a thumbnail blob's header


def _header(luma: np.ndarray, chroma: np.ndarray, form: int) -> bytes:
    return bytes([luma.shape[1], luma.shape[0], chroma.shape[2], chroma.shape[1], form])


def pack_thumb(luma: np.ndarray, chroma: np.ndarray) -> bytes:
    """Exact: a 5-byte header (luma w, h; chroma w, h; form 0), then the luma (h, w) and chroma
    (2, h2, w2) bytes."""
    return _header(luma, chroma, _EXACT) + luma.tobytes() + chroma.tobytes()


def pack_lossy(luma: np.ndarray, chroma: np.ndarray, quality: int = STORED_QUALITY) -> bytes:
    """The header (form 1), the CRC-32 of the rest (WebP has no checksum: a damaged blob is refused, not
    misread), the luma plane as a greyscale WebP image (its length, uint16, first), then zlib of the
    chroma planes, each row as its difference from the row above (PNG's "up" filter: smooth colour
    leaves mostly zeros)."""
    ok, webp = cv2.imencode(".webp", luma, [cv2.IMWRITE_WEBP_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not encode WebP (an OpenCV built without it)")
    up = chroma.copy()
    up[:, 1:] -= chroma[:, :-1]  # uint8: wraps modulo 256, undone by a uint8 cumsum
    body = len(webp).to_bytes(2, "little") + webp.tobytes() + zlib.compress(up.tobytes(), 6)
    return _header(luma, chroma, _LOSSY) + zlib.crc32(body).to_bytes(4, "little") + body


def unpack_thumb(blob: bytes) -> Thumb:
    """The planes of a pack_thumb or pack_lossy blob; ValueError when it does not unpack (damaged)."""
    if len(blob) < 5:
        raise ValueError(f"thumbnail blob of {len(blob)} bytes has no header")
    lw, lh, cw, ch, form = blob[:5]
    luma: np.ndarray
    chroma: np.ndarray
    if not (lw and lh and cw and ch):
        raise ValueError(f"thumbnail blob of a zero-sized plane ({lw}x{lh}, {cw}x{ch})")
    if form == _EXACT:
        if len(blob) != 5 + lw * lh + 2 * cw * ch:
            raise ValueError(f"thumbnail blob of {len(blob)} bytes is not {lw}x{lh} + 2x{cw}x{ch} planes")
        body = np.frombuffer(blob, np.uint8, offset=5)
        luma = body[: lw * lh].reshape(lh, lw)
        chroma = body[lw * lh :].reshape(2, ch, cw)
    elif form == _LOSSY:
        if len(blob) < 11 or zlib.crc32(blob[9:]) != int.from_bytes(blob[5:9], "little"):
            raise ValueError("thumbnail blob is damaged (its checksum does not match)")
        end = 11 + int.from_bytes(blob[9:11], "little")
        plane = cv2.imdecode(np.frombuffer(blob[11:end], np.uint8), cv2.IMREAD_GRAYSCALE)
        if plane is None or plane.shape != (lh, lw):
            raise ValueError(f"thumbnail blob's luma does not decode to {lw}x{lh}")
        luma = plane
        chroma = np.cumsum(_inflated(blob[end:], 2 * cw * ch).reshape(2, ch, cw), axis=1, dtype=np.uint8)
    else:
        raise ValueError(f"thumbnail blob of an unknown form {form}")
    return Thumb(luma, chroma.transpose(1, 2, 0).astype(np.float32) - 128.0)


def _inflated(data: bytes, size: int) -> np.ndarray:
    """zlib data that holds exactly `size` bytes and nothing after them, as uint8."""
    inflate = zlib.decompressobj()
    try:
        out = inflate.decompress(data, size + 1)
    except zlib.error as exc:
        raise ValueError(f"thumbnail blob's chroma does not decompress: {exc}") from None
    if len(out) != size or not inflate.eof or inflate.unused_data:
        raise ValueError(f"thumbnail blob's chroma does not hold exactly {size} bytes")
    return np.frombuffer(out, np.uint8)


_RING = np.ones((5, 5), np.uint8)


def _warp(
    model: np.ndarray,
    qsize: Size,
    tsize: Size,
    qshape: tuple[int, ...],
    tshape: tuple[int, ...],
    plane: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """`plane` (target thumbnail) resampled into the query thumbnail's frame, and the valid mask.

    When the target is shown smaller in the query (a screenshot, a pad), the plane is first reduced
    by area averaging, as the query's own thumbnail was: a bilinear warp alone would alias."""
    scale = float(np.hypot(model[0, 0], model[1, 0])) * (tshape[1] / tsize[0]) / (qshape[1] / qsize[0])
    if scale > 1.25:
        h, w = plane.shape[:2]
        small = (max(1, round(w / scale)), max(1, round(h / scale)))
        plane = cv2.resize(plane.astype(np.float32), small, interpolation=cv2.INTER_AREA)
        tshape = plane.shape
    sqx, sqy = qshape[1] / qsize[0], qshape[0] / qsize[1]
    stx, sty = tshape[1] / tsize[0], tshape[0] / tsize[1]
    q_inv = np.array([[1 / sqx, 0, 0.5 / sqx - 0.5], [0, 1 / sqy, 0.5 / sqy - 0.5], [0, 0, 1]])
    t_fwd = np.array([[stx, 0, 0.5 * stx - 0.5], [0, sty, 0.5 * sty - 0.5], [0, 0, 1]])
    m = (t_fwd @ np.vstack([model, [0.0, 0.0, 1.0]]) @ q_inv)[:2].astype(np.float32)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    size = (qshape[1], qshape[0])
    out = cv2.warpAffine(plane.astype(np.float32), m, size, flags=flags, borderValue=0)
    ones = np.ones(tshape[:2], np.float32)
    valid = cv2.warpAffine(ones, m, size, flags=flags, borderValue=0) > 0.999
    # Where the target's edge falls inside the query (a frame, a pad), the step to the surround is
    # the query's alone: keep a pixel's margin off it (the image's own border is not such an edge).
    valid = cv2.erode(valid.astype(np.uint8), _RING, borderType=cv2.BORDER_CONSTANT, borderValue=1) > 0
    return out, valid


def _background(thumb: Thumb) -> np.ndarray:
    """float32 mask (luma frame) of the thumbnail's studio backdrop: near the border colour, in
    luma and chroma, and connected to the border."""
    luma = thumb.luma.astype(np.float32)
    ch, cw = thumb.chroma.shape[:2]
    small = cv2.resize(luma, (cw, ch), interpolation=cv2.INTER_AREA)
    planes = [small, thumb.chroma[..., 0], thumb.chroma[..., 1]]
    near = np.ones((ch, cw), bool)
    for plane, tol in zip(planes, (FIXED.bg_near, FIXED.bg_near_chroma, FIXED.bg_near_chroma), strict=True):
        border = np.concatenate([plane[0], plane[-1], plane[:, 0], plane[:, -1]])
        near &= np.abs(plane - np.median(border)) <= tol
    _, lab = cv2.connectedComponents(near.astype(np.uint8), connectivity=4)
    edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    mask = np.isin(lab, edge[edge > 0]) & near
    lh, lw = thumb.luma.shape
    return cv2.resize(mask.astype(np.float32), (lw, lh), interpolation=cv2.INTER_NEAREST)


def _footprint(model: np.ndarray, qsize: Size, tsize: Size) -> float:
    """The candidate's long side as a share of the query's, once mapped into the query's frame."""
    scale = float(np.hypot(model[0, 0], model[1, 0]))  # query -> target
    return max(tsize) / max(scale, 1e-6) / max(qsize)


def _block_agreement(
    q: np.ndarray, t: np.ndarray, valid: np.ndarray, exclude: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    """Share of textured blocks that agree, and the per-pixel mask of textured blocks that do not."""
    q = cv2.GaussianBlur(q.astype(np.float32), (0, 0), 0.7)
    t = cv2.GaussianBlur(t, (0, 0), 0.7)
    h, w = q.shape
    h2, w2 = h // _BLOCK * _BLOCK, w // _BLOCK * _BLOCK
    y0, x0 = (h - h2) // 2, (w - w2) // 2

    def blocks(a: np.ndarray) -> np.ndarray:
        a = a[y0 : y0 + h2, x0 : x0 + w2]
        a = a.reshape(h2 // _BLOCK, _BLOCK, w2 // _BLOCK, _BLOCK)
        return a.transpose(0, 2, 1, 3).reshape(-1, _BLOCK**2)

    qb, tb, vb = blocks(q), blocks(t), blocks(valid.astype(np.float32))
    inside = vb.mean(axis=1) > 0.99
    if exclude is not None:  # blocks that are mostly swapped backdrop say nothing about the garment
        inside &= blocks(exclude.astype(np.float32)).mean(axis=1) < FIXED.bg_block_max
    qc = qb - qb.mean(axis=1, keepdims=True)
    tc = tb - tb.mean(axis=1, keepdims=True)
    sq, st = np.sqrt((qc**2).mean(axis=1)), np.sqrt((tc**2).mean(axis=1))
    textured = inside & (np.maximum(sq, st) > FIXED.block_texture)
    n = int(textured.sum())
    ncc = (qc * tc).mean(axis=1) / np.maximum(sq * st, 1e-6)
    disagree = np.zeros(q.shape, bool)
    grid = (textured & (ncc < FIXED.block_agree)).reshape(h2 // _BLOCK, w2 // _BLOCK)
    disagree[y0 : y0 + h2, x0 : x0 + w2] = grid.repeat(_BLOCK, 0).repeat(_BLOCK, 1)
    if not n:
        return 1.0, disagree
    return float(np.count_nonzero(textured & (ncc >= FIXED.block_agree)) / n), disagree


def photometric(
    query: Thumb, target: Thumb, model: np.ndarray, qsize: Size, tsize: Size, fine: Thumb | None = None
) -> Photometric:
    """Agreement of the query's thumbnail with the target's, warped by `model` (query -> target, in
    the ORB frames of sizes `qsize` and `tsize`). About 0.1-0.2 ms.

    `fine`: the query's fine thumbnail (FINE_SIDE), used when the target is small in the query."""
    if fine is not None and _footprint(model, qsize, tsize) < FIXED.fine_below:
        query = fine
    warped, valid = _warp(model, qsize, tsize, query.luma.shape, target.luma.shape, target.luma)
    qc, tc = query.chroma, target.chroma
    cr, cvalid = _warp(model, qsize, tsize, qc.shape, tc.shape, tc[..., 0])
    cb, _ = _warp(model, qsize, tsize, qc.shape, tc.shape, tc[..., 1])
    swapped = _swapped_backdrop(query, target, model, qsize, tsize, warped, valid, cr, cb, cvalid)
    luma, disagree = _block_agreement(query.luma, warped, valid, swapped[0] if swapped else None)
    cvalid = cv2.erode(cvalid.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    if swapped:
        cvalid &= ~swapped[1]
    # Local inserts (badge, logo): leave their blocks out of the colour comparison, within a bound.
    insert = cv2.resize(
        cv2.dilate(disagree.astype(np.uint8), np.ones((2 * _BLOCK + 1,) * 2, np.uint8)),
        (qc.shape[1], qc.shape[0]),
        interpolation=cv2.INTER_AREA,
    )
    drop = cvalid & (insert > 0)
    if 0 < drop.sum() <= FIXED.insert_max * cvalid.sum():
        cvalid &= ~drop
    if cvalid.sum() < 20:
        return Photometric(luma, 1.0, 1.0)
    a = (qc[..., 0] + 1j * qc[..., 1])[cvalid]
    b = (cr + 1j * cb)[cvalid]
    corr, ratio = _chroma_agreement(a, b)
    return Photometric(luma, corr, ratio)


def _chroma_agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """|complex NCC| and energy ratio of two chroma signals (1, 1 when both are nearly grey)."""
    a, b = a - a.mean(), b - b.mean()
    ea, eb = float(np.mean(np.abs(a) ** 2)), float(np.mean(np.abs(b) ** 2))
    sa, sb = np.sqrt(ea), np.sqrt(eb)
    if max(sa, sb) < FIXED.chroma_flat:
        return 1.0, 1.0
    corr = float(np.abs(np.vdot(b, a)) / np.sqrt(ea * eb * len(a) ** 2 + 1e-9))
    return corr, float(min(sa, sb) / max(sa, sb))


def _swapped_backdrop(
    query: Thumb,
    target: Thumb,
    model: np.ndarray,
    qsize: Size,
    tsize: Size,
    warped: np.ndarray,
    valid: np.ndarray,
    cr: np.ndarray,
    cb: np.ndarray,
    cvalid: np.ndarray,
) -> tuple[np.ndarray, np.ndarray] | None:
    """(luma-frame mask, chroma-frame mask) of the target's backdrop in the query's frame when the
    query shows it in another colour (a replaced background), else None."""
    bg = _background(target)
    if bg.mean() < 0.05:
        return None  # no studio backdrop to speak of
    bgl, _ = _warp(model, qsize, tsize, query.luma.shape, target.luma.shape, bg)
    bgl = (bgl > 0.5) & valid
    ch = query.chroma.shape[:2]
    bgc = cv2.resize(bgl.astype(np.uint8), (ch[1], ch[0]), interpolation=cv2.INTER_NEAREST) > 0
    bgc &= cvalid
    if bgl.sum() < 20 or bgc.sum() < 10:
        return None
    d_luma = np.abs(query.luma[bgl].astype(np.float32) - warped[bgl])
    qcb = query.chroma[bgc]
    d_chroma = np.hypot(qcb[:, 0] - cr[bgc], qcb[:, 1] - cb[bgc])
    # A gradient may match the old backdrop in part: the share of backdrop that moved decides.
    moved = max(float(np.mean(d_luma > FIXED.bg_swap_luma)), float(np.mean(d_chroma > FIXED.bg_swap_chroma)))
    if moved < FIXED.bg_moved:
        return None
    grow = np.ones((5, 5), np.uint8)  # the garment's soft edge blends into the new backdrop
    return cv2.dilate(bgl.astype(np.uint8), grow) > 0, cv2.dilate(bgc.astype(np.uint8), grow) > 0
