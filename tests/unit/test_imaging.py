"""common.signals.imaging.decode: hostile bytes become ImageError, odd encodings become plain RGB, and plain
photos are left exactly as Pillow decodes them (dHash bit-identical to imagehash)."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageFile, features
from PIL.JpegImagePlugin import JpegImageFile

from common.errors import ImageError
from common.signals.imaging import ALLOWED_FORMATS, decode, draft_factor

MAX = 50_000_000


def fails(reason: str, data: bytes, max_pixels: int = MAX) -> ImageError:
    with pytest.raises(ImageError) as info:
        decode(data, max_pixels)
    assert info.value.reason == reason, info.value
    assert info.value.permanent
    return info.value


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height (1-bit grey) but carries almost no pixel data: a bomb as
    far as the header goes, and a decode error if anything ever tried to load it."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def solid(mode: str, colour, size=(32, 32)) -> Image.Image:
    return Image.new(mode, size, colour)


def near(pixel, expected, tolerance: int = 8) -> bool:
    return all(abs(int(a) - int(b)) <= tolerance for a, b in zip(pixel, expected, strict=True))


# --------------------------------------------------------------------------- the common case


@pytest.mark.parametrize("seed", range(5))
def test_dhash_of_a_plain_jpeg_is_bit_identical_to_imagehash(make_photo, encode_image, seed: int) -> None:
    size = [(320, 240), (640, 480), (200, 300), (1024, 768), (97, 131)][seed]
    data = encode_image(make_photo(*size, seed=seed), quality=85 + seed)
    expected = imagehash.dhash(Image.open(io.BytesIO(data)))
    assert imagehash.dhash(decode(data, MAX)) == expected
    assert str(expected) not in ("0000000000000000", "ffffffffffffffff")  # a hash with content


def test_greyscale_becomes_rgb_without_moving_a_dhash_bit(make_photo, encode_image) -> None:
    data = encode_image(make_photo(seed=7).convert("L"), quality=90)
    image = decode(data, MAX)
    assert image.mode == "RGB"
    assert imagehash.dhash(image) == imagehash.dhash(Image.open(io.BytesIO(data)))


def test_l_to_rgb_to_l_is_lossless_for_every_grey_value() -> None:
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    round_trip = Image.fromarray(grey).convert("RGB").convert("L")
    assert np.array_equal(np.asarray(round_trip), grey)


def test_plain_rgb_jpeg_is_returned_without_a_copy(good_jpeg: bytes) -> None:
    image = decode(good_jpeg, MAX)
    assert isinstance(image, JpegImageFile)  # Pillow's own object: no convert(), no copy()
    assert image.mode == "RGB"


@pytest.mark.parametrize("fmt", sorted(ALLOWED_FORMATS))
def test_every_allowed_format_decodes_to_rgb(make_photo, encode_image, fmt: str) -> None:
    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    image = decode(encode_image(make_photo(80, 60, seed=3), fmt), MAX)
    assert image.mode == "RGB"
    assert image.size == (80, 60)


def test_draft_decodes_a_big_jpeg_at_reduced_size(make_photo, encode_image) -> None:
    data = encode_image(make_photo(1600, 1200, seed=4), quality=85)
    assert decode(data, MAX).size == (1600, 1200)
    reduced = decode(data, MAX, draft=(200, 200))
    assert reduced.mode == "RGB"
    assert 200 <= reduced.size[0] <= 800 and reduced.size[0] * 3 == reduced.size[1] * 4


def test_draft_is_ignored_for_other_formats(make_photo, encode_image) -> None:
    data = encode_image(make_photo(400, 300, seed=4), "PNG")
    assert decode(data, MAX, draft=(50, 50)).size == (400, 300)


@pytest.mark.parametrize(
    "size, factor",
    [
        ((360, 540), 1),
        ((800, 1000), 2),
        ((720, 1080), 2),
        ((1080, 1620), 2),
        ((2000, 3000), 4),
        ((6000, 6000), 8),
    ],
)
def test_draft_factor_is_a_power_of_two_never_past_the_working_reduction(size, factor) -> None:
    assert draft_factor(*size, 540) == factor


def test_draft_side_decodes_near_the_working_size_and_keeps_guards(make_photo, encode_image) -> None:
    # Given an 800x1000 JPEG and a 360x540 one
    big = encode_image(make_photo(800, 1000, seed=2), quality=90)
    small = encode_image(make_photo(360, 540, seed=2), quality=90)
    # then the big one decodes at 1/2 scale, the small one at full size, bit for bit the normal decode
    assert decode(big, MAX, draft_side=540).size == (400, 500)
    assert decode(small, MAX, draft_side=540).tobytes() == decode(small, MAX).tobytes()
    # and the pixel cap still applies to the full size, not the reduced one
    with pytest.raises(ImageError) as info:
        decode(big, 500_000, draft_side=540)
    assert info.value.reason == "bomb"


def test_draft_side_applies_exif_orientation(encode_image) -> None:
    stored = Image.new("RGB", (1600, 800), (255, 0, 0))
    stored.paste((0, 0, 255), (800, 0, 1600, 800))
    exif = Image.Exif()
    exif[0x0112] = 6
    image = decode(encode_image(stored, quality=95, exif=exif.tobytes()), MAX, draft_side=540)
    assert image.size == (400, 800)
    assert near(image.getpixel((200, 100)), (255, 0, 0)) and near(image.getpixel((200, 700)), (0, 0, 255))


# --------------------------------------------------------------------------- bad bytes


@pytest.mark.parametrize(
    "name, reason",
    [
        ("zero bytes", "empty"),
        ("html", "not_image"),
        ("json", "not_image"),
        ("random", "not_image"),
        ("ppm (format outside the allowlist)", "not_image"),
        ("jpeg signature then junk", "corrupt"),
        ("png cut inside the header", "corrupt"),
        ("jpeg cut in half", "truncated"),
        ("jpeg cut after 300 bytes", "truncated"),
        ("jpeg missing its last bytes", "truncated"),
        ("png cut in half", "truncated"),
    ],
)
def test_bad_bytes_raise_image_error(make_photo, encode_image, good_jpeg, name: str, reason: str) -> None:
    png = encode_image(make_photo(seed=5), "PNG")
    data = {
        "zero bytes": b"",
        "html": b"<!DOCTYPE html><html><head><title>404</title></head></html>",
        "json": b'{"error": "not found"}',
        "random": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "ppm (format outside the allowlist)": encode_image(make_photo(seed=5), "PPM"),
        "jpeg signature then junk": good_jpeg[:3] + b"\0" * 1000,
        "png cut inside the header": png[:40],
        "jpeg cut in half": good_jpeg[: len(good_jpeg) // 2],
        "jpeg cut after 300 bytes": good_jpeg[:300],
        "jpeg missing its last bytes": good_jpeg[:-10],
        "png cut in half": png[: len(png) // 2],
    }[name]
    fails(reason, data)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # never switched on to "get past" an error


# --------------------------------------------------------------------------- decompression bombs


def test_pixel_cap_is_checked_before_any_pixel_is_decoded() -> None:
    # The PNG's pixel data is bogus: reaching the decoder would give "corrupt", not "bomb".
    error = fails("bomb", png_header(5000, 5000), max_pixels=1_000_000)
    assert "5000x5000" in error.detail


def test_pillow_bomb_error_and_warning_become_bomb_without_noise() -> None:
    limit_before = Image.MAX_IMAGE_PIXELS
    filters_before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # 20000x20000 is past twice Pillow's global cap: Pillow raises DecompressionBombError.
        fails("bomb", png_header(20_000, 20_000), max_pixels=10**10)
        # 10000x10000 sits between 1x and 2x of it: Pillow would only warn (to stderr).
        fails("bomb", png_header(10_000, 10_000), max_pixels=10**10)
    assert [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)] == []
    assert limit_before == Image.MAX_IMAGE_PIXELS
    assert warnings.filters == filters_before


def test_image_at_the_cap_is_accepted(make_photo, encode_image) -> None:
    data = encode_image(make_photo(100, 50, seed=6), "PNG")
    assert decode(data, max_pixels=5000).size == (100, 50)
    fails("bomb", data, max_pixels=4999)


# --------------------------------------------------------------------------- normalisation


def test_cmyk_jpeg_becomes_rgb_with_the_right_colour(encode_image) -> None:
    data = encode_image(solid("CMYK", (0, 255, 255, 0)), quality=95)  # pure red in CMYK
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    image = decode(data, MAX)
    assert image.mode == "RGB"
    assert near(image.getpixel((16, 16)), (255, 0, 0))


def test_16_bit_grey_is_scaled_not_clipped(encode_image) -> None:
    values = np.array([[0, 32896, 65535, 16448]], dtype=np.uint16).repeat(8, axis=0)
    data = encode_image(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode in ("I;16", "I")
    image = decode(data, MAX)
    assert image.mode == "RGB"
    row = [image.getpixel((x, 0)) for x in range(4)]
    assert row == [(0, 0, 0), (128, 128, 128), (255, 255, 255), (64, 64, 64)]  # mid-grey stays mid-grey


def test_rgba_transparency_is_composited_onto_white(encode_image) -> None:
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(0, 0, 0, 0), (0, 0, 255, 255), (0, 0, 0, 128)])
    image = decode(encode_image(rgba, "PNG"), MAX)
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 255, 255)  # transparent -> white, not black
    assert image.getpixel((1, 0)) == (0, 0, 255)
    assert near(image.getpixel((2, 0)), (127, 127, 127), tolerance=1)  # half-transparent black


def test_grey_with_alpha_is_composited_onto_white(encode_image) -> None:
    la = Image.new("LA", (2, 1))
    la.putdata([(0, 0), (50, 255)])
    image = decode(encode_image(la, "PNG"), MAX)
    assert [image.getpixel((x, 0)) for x in range(2)] == [(255, 255, 255), (50, 50, 50)]


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_becomes_white(encode_image, fmt: str) -> None:
    palette_image = Image.new("P", (4, 1))
    palette_image.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
    palette_image.putdata([0, 0, 1, 1])
    data = encode_image(palette_image, fmt, transparency=0)
    assert Image.open(io.BytesIO(data)).mode == "P"
    image = decode(data, MAX)
    assert image.mode == "RGB"
    assert [image.getpixel((x, 0)) for x in range(4)] == [(255, 255, 255)] * 2 + [(255, 0, 0)] * 2


def test_palette_without_transparency_keeps_its_colours(encode_image) -> None:
    palette_image = Image.new("P", (2, 1))
    palette_image.putpalette([10, 20, 30, 200, 100, 50] + [0, 0, 0] * 254)
    palette_image.putdata([0, 1])
    image = decode(encode_image(palette_image, "PNG"), MAX)
    assert [image.getpixel((x, 0)) for x in range(2)] == [(10, 20, 30), (200, 100, 50)]


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animation_gives_its_first_frame(encode_image, fmt: str) -> None:
    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("Pillow built without animated WebP")
    frames = [solid("RGB", colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    params = {"lossless": True} if fmt == "WEBP" else {}
    data = encode_image(
        frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **params
    )
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    image = decode(data, MAX)
    assert image.mode == "RGB"
    assert near(image.getpixel((16, 16)), (255, 0, 0))


def test_exif_orientation_is_applied(encode_image) -> None:
    # Given a 40x20 photo stored sideways (left half red, right half blue) with Orientation=6,
    stored = Image.new("RGB", (40, 20), (255, 0, 0))
    stored.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = encode_image(stored, quality=95, exif=exif.tobytes())
    image = decode(data, MAX)
    # then it comes out upright: dimensions swapped, the stored left half now on top.
    assert image.size == (20, 40)
    assert near(image.getpixel((10, 5)), (255, 0, 0))
    assert near(image.getpixel((10, 35)), (0, 0, 255))
    assert image.mode == "RGB"
