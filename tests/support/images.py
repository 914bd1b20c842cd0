"""Generated test images: photo-like pictures (dHash bits not trivial, unrelated across seeds), their
encodings, decompression bombs, and the unusual-but-valid images real catalogs carry. Shared by the
unit tests (through tests/unit/conftest.py's fixtures), the misbehaving server and the fault tests."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def photo_like(width: int = 240, height: int = 180, seed: int = 0) -> Image.Image:
    """A deterministic RGB picture with gradients, blocks and noise: dHash bits are not trivial and two
    seeds give unrelated hashes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    fx, fy, phase = rng.uniform(0.01, 0.08, 3)
    base = 128 + 60 * np.sin(x * fx + phase) * np.cos(y * fy) + 40 * (x / width - y / height)
    channels = [base + rng.uniform(-40, 40) + rng.normal(0, 6, base.shape) for _ in range(3)]
    pixels = np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)
    for _ in range(4):  # a few flat blocks, like a garment on a background
        x0, y0 = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
        size_y, size_x = int(rng.integers(10, 40)), int(rng.integers(10, 40))
        pixels[y0 : y0 + size_y, x0 : x0 + size_x] = rng.integers(0, 256, 3)
    return Image.fromarray(pixels)


def encode(image: Image.Image, fmt: str = "JPEG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def jpeg(seed: int) -> bytes:
    return encode(photo_like(seed=seed), quality=88)


# The good image the misbehaving server answers with (/image, and what its lying routes cut or pad).
GOOD_JPEG = encode(photo_like(320, 240, seed=1), quality=90)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid PNG header claiming width x height (8-bit RGB) with a few hundred bytes of pixel data:
    the classic decompression bomb shape, a tiny file that would need gigabytes to decode."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 4096, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def gif_bomb(width: int = 65_535, height: int = 65_535) -> bytes:
    """A GIF whose logical screen and only frame claim 65535 x 65535 pixels, in about 40 bytes."""
    header = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return header + frame + b"\x3b"


def unusual_images(seed: int = 500) -> dict[str, tuple[bytes, str]]:
    """Valid images in the modes and containers catalogs really carry: each must be indexed, not fail.
    name -> (bytes, content type)."""
    photo = photo_like(seed=seed)
    grey16 = (np.asarray(photo.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    frames = [photo_like(seed=seed + i) for i in range(3)]
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, shown upright
    bad_exif = Image.Exif()
    bad_exif[0x0112] = 99  # an orientation value that does not exist
    palette_alpha = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return {
        "cmyk_jpeg": (encode(photo.convert("CMYK"), quality=90), "image/jpeg"),
        "grey_jpeg": (encode(photo.convert("L"), quality=90), "image/jpeg"),
        "progressive_jpeg": (encode(photo, quality=85, progressive=True), "image/jpeg"),
        "exif_rotated_jpeg": (encode(photo, quality=90, exif=exif.tobytes()), "image/jpeg"),
        "bad_exif_orientation": (encode(photo, quality=90, exif=bad_exif.tobytes()), "image/jpeg"),
        "grey16_png": (encode(Image.fromarray(grey16), "PNG"), "image/png"),
        "palette_png": (encode(photo.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), "image/png"),
        "palette_alpha_png": (encode(palette_alpha, "PNG", transparency=0), "image/png"),
        "rgba_png": (encode(rgba, "PNG"), "image/png"),
        "la_png": (encode(rgba.convert("LA"), "PNG"), "image/png"),
        "bilevel_png": (encode(photo.convert("1"), "PNG"), "image/png"),
        "animated_gif": (
            encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0),
            "image/gif",
        ),
        "animated_webp": (
            encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=80, lossless=True),
            "image/webp",
        ),
        "webp": (encode(photo, "WEBP", quality=80), "image/webp"),
        "tiff": (encode(photo, "TIFF"), "image/tiff"),
        "bmp": (encode(photo, "BMP"), "image/bmp"),
        "tiny_1x1_png": (encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"), "image/png"),
        "octet_stream_jpeg": (encode(photo, quality=80), "application/octet-stream"),
    }
