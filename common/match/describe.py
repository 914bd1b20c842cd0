"""Describe an image: every signal stored for an inventory photo (and computed for a query), from one
decode into a working copy that every signal reads. Which signals: the SignalSet passed in."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import imagehash
import numpy as np
from PIL import Image

from common.index import orb_words
from common.match import photometric, verify
from common.signals import embedding, normalise, pdq, pdq_fast, rotation
from common.signals import plugins as plugin_registry
from common.signals import signal_set as sig
from common.signals.imaging import decode
from common.signals.lazy import LazySignatures
from common.signals.signatures import DHASH, dhash64, dhash_bits, pack64

# Everything but the imagehash-exact dHash is computed on a working copy of about this size: the
# signals all reduce far below it anyway, and it makes large catalogue photos 3-4x cheaper to describe.
_WORK_SIDE = 540
_GAP = 2.0  # Pillow reducing_gap: box-reduce to >= 2x the target first, then LANCZOS (10x cheaper)

# Index of the left-right mirror among the eight dihedral PDQ hashes (pdqhash.compute_dihedral order).
PDQ_MIRROR = 5


def pdq_dihedral(image: Image.Image | np.ndarray) -> list[bytes]:
    """PDQ of `image` (or its (h, w, 3) uint8 RGB array) and of its seven rotations/mirrors (one DCT),
    as 33-byte blobs; [0] is the stored PDQ. common.signals.pdq is bit-identical to pdqhash
    (tests/unit/test_pdq.py): pdq256@1; pdqhash itself runs it when installed (pdq_fast)."""
    rgb = image if isinstance(image, np.ndarray) else np.asarray(image.convert("RGB"))
    hashes, quality = pdq_fast.compute_dihedral(rgb)
    q = bytes([max(0, min(100, int(quality)))])
    return [pdq.pack(h) + q for h in hashes]


def _phash(image: Image.Image) -> int:
    return int(str(imagehash.phash(image)), 16)


def _phash32(grey32: Image.Image | np.ndarray) -> int:
    """imagehash.phash of a 32x32 greyscale image, bit for bit: its own steps minus the conversion,
    the same-size resize (two copies) and the hex round trip."""
    import scipy.fftpack

    dct = scipy.fftpack.dct(scipy.fftpack.dct(np.asarray(grey32), axis=0), axis=1)[:8, :8]
    bits = dct > np.median(dct)
    return int.from_bytes(np.packbits(bits.ravel()).tobytes(), "big")


def _dhash_gap(grey: Image.Image) -> int:
    """dhash64 with a box pre-reduction (draft mode): within a few bits of dhash64, 10x cheaper."""
    return dhash64(grey, reducing_gap=_GAP)


def working_copy(image: Image.Image) -> Image.Image:
    """The image reduced by a whole factor (a cheap box filter) so its longer side is near _WORK_SIDE."""
    factor = round(max(image.size) / _WORK_SIDE)
    return image.reduce(factor) if factor >= 2 else image


def decode_for(data: bytes, max_pixels: int, mode: str = sig.DRAFT) -> Image.Image:
    """Guarded decode of image bytes as `mode` describes them (draft: JPEG at reduced size)."""
    return decode(data, max_pixels, draft_side=_WORK_SIDE if mode == sig.DRAFT else None)


def describe_bytes(
    data: bytes, max_pixels: int, signals: sig.SignalSet = sig.DEFAULT, query: bool = False
) -> dict[str, bytes]:
    """Decode (guarded) and describe: what ingest and queries both run, so they always agree."""
    return describe(decode_for(data, max_pixels, signals.decode), data, signals, query)


def describe(
    image: Image.Image, raw: bytes | None = None, signals: sig.SignalSet = sig.DEFAULT, query: bool = False
) -> dict[str, bytes]:
    """Every signal stored for one inventory image (and computed for a query).

    In draft mode `image` is best decoded by decode_for (it then arrives near the working size);
    any image works, the signals are defined on its working copy. `query` adds the query-only views
    (mirror, restored backdrop, screenshot frame, tilt; some made on first use: _query_views), which
    ingest never stores."""
    image = image if image.mode == "RGB" else image.convert("RGB")
    work, rgb = normalise.despeckled_rgb(working_copy(image))
    # One RGB array and one greyscale copy of the working copy, shared by every signal below, and
    # the greyscale copy's 32x32 (pHash) and box-reduced 9x8 (dHash) reductions, which the straight
    # and the mirrored hashes both read.
    grey = work.convert("L")
    grey32 = np.asarray(_phash_grey(grey))
    grey9 = np.asarray(grey.resize((9, 8), Image.Resampling.LANCZOS, reducing_gap=_GAP))
    # The RGB array halved (exact 2x area steps, <= 320 px): the trim box and the thumbnails start
    # from it, one reduction instead of one each (~1.5 ms of the working copy's ~8).
    half = normalise.halved(rgb)
    digest = hashlib.sha256(raw if raw is not None else image.tobytes()).digest()
    if signals.decode == sig.DRAFT:
        sigs = _draft_hashes(half, grey, grey32, grey9)
    else:
        content = normalise.trimmed(work)
        sigs = {
            DHASH: pack64(dhash64(image)),  # from full resolution: bit-identical to imagehash.dhash
            sig.PHASH: pack64(_phash(work)),
            sig.DHASH_TRIM: pack64(dhash64(content)),
        }
        for key, view in zip(sig.DHASH_CROPS, normalise.crop_views(work), strict=True):
            sigs[key] = pack64(dhash64(view))
    pdq_views = pdq_dihedral(rgb)  # one DCT: the stored PDQ and its mirror's
    sigs[sig.PDQ] = pdq_views[0]
    sigs.update(_mirror_hashes(grey32, grey9, pdq_views))
    sigs[sig.SHA] = digest[:8]
    features = verify.extract(grey)  # a query keeps every keypoint whole; the inventory part (verify.stored)
    sigs[sig.ORB] = verify.pack(features if query else verify.stored(features))
    if not query:  # a query's is made on first use (_query_views): most never get to the photometric check
        sigs[sig.THUMB] = photometric.thumbnail(half)
    sigs.update(orb_words.pack_words(orb_words.words_of(features.descriptors)))
    for plugin in signals.plugins:
        sigs[plugin_registry.key(plugin)] = plugin.describe(work)
    if signals.embedding is not None:  # emb: EmbeddingError (stage "embed") fails this product only
        assert signals.embedding_model is not None
        sigs[signals.embedding] = embedding.encoder(signals.embedding_model, signals.embedding).embed(work)
    if query:
        ready, later = _query_views(work, grey, rgb, half)
        return LazySignatures({**sigs, **ready}, later)
    return sigs


def _draft_hashes(
    half: np.ndarray, grey: Image.Image, grey32: np.ndarray, grey9: np.ndarray
) -> dict[str, bytes]:
    """The global hashes of draft mode: the same views as exact mode, from one greyscale copy (crop
    and trim commute with the greyscale conversion). The candidate-only views (pHash, trim, crops)
    take a box pre-reduction (10x cheaper; measured: no change on any preset); the primary dHash does
    not, as the `original` rule and the similarity figure depend on it alone (the pre-reduced dHash
    cost that rule 0.04 recall on the devset). PDQ stays on the working copy: on a halved copy it
    confirmed more distractors (loose P 0.985 -> 0.963). `half` and `grey`: the working copy's halved
    RGB array (normalise.halved) and greyscale copy; `grey32`, `grey9`: grey's pHash and box-reduced
    dHash reductions."""
    box = normalise.halved_trim_box(half, grey.size)
    untrimmed = box == (0, 0, *grey.size)  # then grey's own reduced copy is the trim view's
    sigs = {
        sig.DHASH_WORK: pack64(dhash64(grey)),
        sig.PHASH: pack64(_phash32(grey32)),
        sig.DHASH_TRIM: dhash_bits(grey9) if untrimmed else pack64(_dhash_gap(grey.crop(box))),
    }
    for key, view in zip(sig.DHASH_CROPS, normalise.crop_views(grey), strict=True):
        sigs[key] = pack64(_dhash_gap(view))
    return sigs


def _phash_grey(grey: Image.Image) -> Image.Image:
    # imagehash.phash of an image already 32x32 skips its own (costly) LANCZOS
    return grey.resize((32, 32), Image.Resampling.LANCZOS, reducing_gap=_GAP)


def _mirror_hashes(grey32: np.ndarray, grey9: np.ndarray, pdq_views: list[bytes]) -> dict[str, bytes]:
    """The left-right mirror's scanned hashes and PDQ (stored: by-id queries and dedup find mirrored
    uploads with them; an image query compares its own with the stored straight columns)."""
    # The reduced copies flipped, not the working copy (within a bit of each other, half the cost);
    # the query side runs this same code, so both sides agree exactly.
    return {
        sig.DHASH_MIRROR: dhash_bits(grey9[:, ::-1]),
        sig.PHASH_MIRROR: pack64(_phash32(grey32[:, ::-1])),
        sig.PDQ_MIRROR_KEY: pdq_views[PDQ_MIRROR],
    }


def _query_views(
    work: Image.Image, grey: Image.Image, rgb: np.ndarray, half: np.ndarray
) -> tuple[dict[str, bytes], dict[str, Callable[[], bytes]]]:
    """What only a query needs (never stored). Made on first use, as only a candidate that needs them
    reads them (common.signals.lazy): its thumbnail (about one query in four reaches the photometric
    check), its mirror's ORB keypoints, for mirrored copies, and a finer thumbnail, for a photo shown
    small inside a larger frame (a screenshot). Made now: the restored backdrop's scanned views (its
    keypoints and thumbnail on use) and the photo inside a screenshot-like frame. `grey`, `rgb`,
    `half`: describe's greyscale copy of `work`, its RGB array and that array halved. A query's
    thumbnails are kept exact (lossless: never stored)."""
    out: dict[str, bytes] = {}
    later: dict[str, Callable[[], bytes]] = {
        sig.THUMB: lambda: photometric.thumbnail(half, lossless=True),
        # the greyscale copy flipped: what extract would make of the flipped working copy
        sig.ORB_MIRROR: lambda: verify.pack(verify.extract(grey.transpose(Image.Transpose.FLIP_LEFT_RIGHT))),
        sig.THUMB_FINE: lambda: photometric.thumbnail(half, photometric.FINE_SIDE, lossless=True),
    }
    studio = normalise.restudioed(rgb)  # None for a studio photo (nearly every query; ~1 ms to tell)
    if studio is not None:
        studio_grey = studio.convert("L")
        out.update({
            sig.DHASH_BACKDROP: pack64(dhash64(studio_grey)),
            sig.PHASH_BACKDROP: pack64(_phash32(_phash_grey(studio_grey))),
            sig.PDQ_BACKDROP: pdq_dihedral(studio)[0],
        })  # fmt: skip
        later[sig.ORB_BACKDROP] = lambda: verify.pack(verify.extract(studio))
        later[sig.THUMB_BACKDROP] = lambda: photometric.thumbnail(studio, lossless=True)
    out.update(_frame_hashes(work, grey))
    angle = rotation.tilt(grey)  # None for an upright photo (nearly every query): no view
    if angle is not None:
        upright = rotation.turned_back(work, angle)
        out[sig.DHASH_ROTATED] = pack64(dhash64(upright.convert("L")))
        out[sig.PDQ_ROTATED] = pdq_dihedral(upright)[0]
    return out, later


def _frame_hashes(work: Image.Image, grey: Image.Image) -> dict[str, bytes]:
    """The hashes of the photo alone when the query shows it inside a screenshot-like frame (else none).
    `grey`: the working copy's greyscale copy, describe's own."""
    box = normalise.framed_box(grey)
    if box is None:
        return {}
    photo = grey.crop(box)
    return {
        sig.DHASH_FRAME: pack64(_dhash_gap(photo)),
        sig.PHASH_FRAME: pack64(_phash32(_phash_grey(photo))),
        sig.PDQ_FRAME: pdq_dihedral(np.asarray(work.crop(box)))[0],
    }
