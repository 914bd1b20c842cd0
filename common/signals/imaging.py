"""Safe decode of untrusted image bytes into one normalised RGB picture.

Guards: a format allowlist, a pixel cap checked from the header before any pixel is decoded,
and every Pillow failure turned into an ImageError with a short `reason`. Normalisation makes
different encodings of one photo look alike: EXIF orientation applied, transparency composited
onto white (catalog photos sit on white), palette/CMYK/16-bit/greyscale brought to 8-bit RGB,
the first frame of an animation.

Plain RGB and greyscale pixels are never altered (L -> RGB is exact and RGB -> L recovers the grey
values), so dHash of decode(jpeg) equals imagehash.dhash(Image.open(jpeg)) bit for bit.
"""

from __future__ import annotations

import io
import threading
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from common.errors import ImageError

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"})
# Pillow reports some camera JPEGs (multi-picture) as MPO; they are JPEGs with extra frames.
_JPEG_FORMATS = {"JPEG", "MPO"}
# Order matters only for speed: the common formats are tried first.
_OPEN_ORDER = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_WHITE = (255, 255, 255)
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
_EXIF_ORIENTATION = 0x0112

# Pillow checks its own global Image.MAX_IMAGE_PIXELS inside Image.open and *warns* (to stderr)
# between 1x and 2x of it. We want that as an error we can map to "bomb", but warning filters are
# process-global and catch_warnings is not thread-safe: the lock keeps our own concurrent decodes
# from restoring each other's filters. It is held only for the header parse, which is quick.
_OPEN_LOCK = threading.Lock()


def decode(
    data: bytes,
    max_pixels: int,
    draft: tuple[int, int] | None = None,
    *,
    draft_side: int | None = None,
) -> Image.Image:
    """Decode `data` into an 'RGB' image, or raise ImageError.

    reasons: empty, not_image, corrupt, truncated, bomb (all permanent).
    `draft` asks JPEG for a reduced-size decode (DCT scaling) of at least that size: faster on big
    photos, but it changes pixels, so signatures computed from it differ slightly.
    `draft_side` picks the draft from the header instead: the DCT scale 1/k (k = 1, 2, 4, 8) with
    the largest k <= round(longer side / draft_side), i.e. never much below `draft_side` (see
    draft_factor). Other formats decode at full size either way. The pixel cap always applies to
    the full size, so a reduced decode cannot be used to slip a bomb through.
    """
    if not data:
        raise ImageError("empty", "zero bytes")
    image = _open(data)
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageError("corrupt", f"size {width}x{height}")
    if width * height > max_pixels:
        raise ImageError("bomb", f"{width}x{height} is more than {max_pixels} pixels")
    if draft is None and draft_side is not None:
        k = draft_factor(width, height, draft_side)
        draft = (width // k, height // k) if k > 1 else None
    if draft is not None and image.format in _JPEG_FORMATS:
        image.draft("RGB", draft)
    _load(image)
    image = _upright(image)
    return _to_rgb(image)


def draft_factor(width: int, height: int, side: int) -> int:
    """The JPEG DCT reduction (1, 2, 4 or 8) for a working size near `side`: the largest power of two
    not above round(longer side / side), the whole factor describe.working_copy would reduce by."""
    want = round(max(width, height) / side)
    return next(k for k in (8, 4, 2, 1) if k <= max(1, want))


def _open(data: bytes) -> Image.Image:
    """Identify and parse the header only; no pixel data is decoded here."""
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=_OPEN_ORDER)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError("bomb", str(exc)) from None
    except UnidentifiedImageError:
        # An allowed format's signature whose header then fails to parse is a damaged image.
        if data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
            raise ImageError("corrupt", f"unreadable header (first bytes {data[:8].hex()})") from None
        raise ImageError("not_image", _sniff(data)) from None
    except Exception as exc:  # noqa: BLE001 - a plugin may raise anything on hostile headers
        raise _damaged(exc) from None
    if image.format not in ALLOWED_FORMATS | _JPEG_FORMATS:
        raise ImageError("not_image", f"format {image.format}")
    return image


def _load(image: Image.Image) -> None:
    try:
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, MemoryError) as exc:
        raise ImageError("bomb", f"{type(exc).__name__}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError...
        raise _damaged(exc) from None


def _damaged(exc: Exception) -> ImageError:
    text = f"{type(exc).__name__}: {exc}"
    # Pillow's wordings for data that ends early ("image file is truncated", "Truncated File
    # Read"); LOAD_TRUNCATED_IMAGES stays False on purpose, so such images are errors.
    lowered = text.lower()
    truncated = "truncated" in lowered or "premature end" in lowered
    return ImageError("truncated" if truncated else "corrupt", text)


def _upright(image: Image.Image) -> Image.Image:
    """Apply EXIF orientation; untouched (no copy) when there is none, the common case."""
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block is not worth failing the image for
        return image
    if orientation in (None, 1):
        return image
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - same: keep the pixels as stored
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode.startswith("I") or mode == "F":
        return _to_8bit(image).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        return _onto_white(image.convert("RGBA"))
    try:
        return image.convert("RGB")  # P, L, 1, CMYK, YCbCr, RGBX, ...
    except ValueError as exc:  # e.g. LAB, which Pillow cannot convert without a colour profile
        raise ImageError("unsupported_mode", f"{mode}: {exc}") from None


def _onto_white(rgba: Image.Image) -> Image.Image:
    # paste() with the alpha as mask blends: out = white * (1 - a) + colour * a.
    canvas = Image.new("RGB", rgba.size, _WHITE)
    canvas.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
    return canvas


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit greyscale -> 'L' by scaling the 16-bit range (Pillow's own convert clips
    everything above 255 to white)."""
    pixels = np.asarray(image)
    if image.mode == "F":
        pixels = np.nan_to_num(pixels.astype(np.float64))
        scale = 255.0 if pixels.size and pixels.max() <= 1.0 else 1.0  # [0, 1] floats or [0, 255]
        grey = np.clip(np.rint(pixels * scale), 0, 255)
    else:
        wide = np.clip(pixels.astype(np.int64), 0, 65535)
        grey = (wide * 255 + 32767) // 65535  # rounded, so 65535 -> 255 and 32768 -> 128
    return Image.fromarray(grey.astype(np.uint8))  # 2-D uint8 -> mode "L"


def _sniff(data: bytes) -> str:
    head = data[:64].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<svg")):
        return "markup (HTML/XML/SVG), not an image"
    if head.startswith((b"{", b"[")):
        return "JSON, not an image"
    return f"unrecognised format (first bytes {data[:8].hex()})"
