"""The matching pipeline: which signals describe an image, and how a query becomes matches.

Stages (all but `original`):
  1. exact  — a 64-bit prefix of sha256(raw bytes) scanned at radius 0;
  2. candidates — 64-bit scans: dHash (the rule's radius), pHash, dHash of the trimmed content box
     (both ways, so padding/letterbox is undone), and dHash of a few crop windows; the closest
     `max_candidates` by their best distance go on, joined by the `word_candidates` products that
     share the most (IDF-weighted) ORB words with the query (common.localindex) — crops and pads
     whose global hashes all moved;
  3. verification — PDQ (256-bit, stored as a blob) within `pdq_max` confirms edits of the whole
     photo; otherwise ORB keypoints + RANSAC with plausible crop/pad geometry confirm crops.
     Low-information images (low PDQ quality: flat, mostly blank) need ORB, not PDQ alone.
     ORB passes must also agree photometrically: the stored thumbnail (thumb@1) warped by the fitted
     transform into the query's frame (verify.photometric) — same-template garments fail here.
`verify_pairs` runs stage 3 on pairs of indexed products (neardup dedup).
`original` is the replaced system's rule: dHash distance <= max_distance, nothing else.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import cv2
import imagehash
import numpy as np
from PIL import Image

from common import localindex, matching, normalise, plugins, verify
from common.errors import ConfigError
from common.imaging import decode
from common.presets import Rule
from common.settings import Settings
from common.signatures import DHASH, dhash64, pack64, unpack64
from common.snapshot import Snapshot

log = logging.getLogger(__name__)


def _import_settings() -> Settings:
    """The settings this module's constants depend on. A bad environment must not crash an import:
    the CLI validates it in full and answers with every bad value and exit code 2."""
    try:
        return Settings.from_env()
    except ConfigError:
        return Settings()


_SETTINGS = _import_settings()

SHA = "sha256p64@1"  # first 8 bytes of sha256 of the raw file (of the RGB pixels when raw is absent)
PHASH = "phash64@1"  # imagehash.phash(image), 64 bits
DHASH_TRIM = "dhash64.trim@1"  # dHash of the content box inside uniform borders
DHASH_CROPS = tuple(f"dhash64.crop{i}@1" for i in range(len(normalise.CROP_WINDOWS)))
PDQ = "pdq256@1"  # 32 bytes of PDQ hash + 1 byte PDQ quality (0..100)
ORB = "orb256@1"  # verify.pack: 4-byte header + 36 bytes per keypoint, <= 256 keypoints
THUMB = "thumb@1"  # verify.thumbnail: 64 px luma + 32 px chroma (~4 KB), the photometric check
# Extra per-product signals (criterion 3), chosen by NEARDUP_PLUGINS: stored as blobs, scored per match.
PLUGINS = plugins.load(_SETTINGS.plugins)

# ORB words of the strongest keypoints, 4 x 16 bits per column (common.localindex): crop candidates.
ORB_WORDS = localindex.COLUMNS

# Decode modes (NEARDUP_DECODE). "exact": the primary dHash from the full-resolution image,
# bit-identical to imagehash.dhash (DHASH). "draft": large JPEGs decoded at reduced size (DCT
# scaling) straight to the working size, and every signal taken from that copy with cheap two-step
# reductions; its primary dHash is DHASH_WORK. The primary key versions the whole signal set: the
# store refuses to mix an index of one mode with workers of the other.
EXACT, DRAFT = "exact", "draft"
# dhash64 of the draft working copy: decode(..., draft_side=_WORK_SIDE) then working_copy. Equal to
# dhash64@1 for photos up to ~810 px (no reduction), within a few bits above. Bump if that changes.
DHASH_WORK = "dhash64.work@1"
PRIMARY_OF = {EXACT: DHASH, DRAFT: DHASH_WORK}
DECODE = _SETTINGS.decode


def scan_signals(mode: str = DECODE) -> tuple[str, ...]:
    """The scanned 64-bit columns of an index written in `mode` (the store's signal list)."""
    return (PRIMARY_OF[mode], SHA, PHASH, DHASH_TRIM, *DHASH_CROPS, *ORB_WORDS)


PRIMARY = PRIMARY_OF[DECODE]  # the primary dHash key of this process's mode
SCAN_SIGNALS: tuple[str, ...] = scan_signals(DECODE)
BLOB_SIGNALS: tuple[str, ...] = (PDQ, ORB, THUMB, *(plugins.key(p) for p in PLUGINS))

# Everything but the imagehash-exact dHash is computed on a working copy of about this size: the
# signals all reduce far below it anyway, and it makes large catalogue photos 3-4x cheaper to describe.
_WORK_SIDE = 540
_GAP = 2.0  # Pillow reducing_gap: box-reduce to >= 2x the target first, then LANCZOS (10x cheaper)

_LOW_QUALITY = 50  # PDQ's own quality score; below it (flat images) PDQ agreement is not evidence

Blobs = Callable[[str, list[str]], list[bytes | None]]


@dataclass(frozen=True)
class Match:
    product_id: str
    similarity: float  # dHash similarity percent, the original system's figure
    distance: int  # dHash Hamming distance of 64
    stage: str  # which stage or signal matched it: exact, dhash, pdq, orb
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _pdq(image: Image.Image | np.ndarray) -> bytes:
    import pdqhash  # imported here: only the verified presets need it, and it is a compiled wheel

    rgb = image if isinstance(image, np.ndarray) else np.asarray(image.convert("RGB"))
    bits, quality = pdqhash.compute(rgb)
    return np.packbits(bits.astype(np.uint8)).tobytes() + bytes([max(0, min(100, int(quality)))])


def _phash(image: Image.Image) -> int:
    return int(str(imagehash.phash(image)), 16)


def _phash32(grey32: Image.Image) -> int:
    """imagehash.phash of a 32x32 greyscale image, bit for bit: its own steps minus the conversion,
    the same-size resize (two copies) and the hex round trip."""
    import scipy.fftpack

    dct = scipy.fftpack.dct(scipy.fftpack.dct(np.asarray(grey32), axis=0), axis=1)[:8, :8]
    bits = dct > np.median(dct)
    return int.from_bytes(np.packbits(bits.ravel()).tobytes(), "big")


def _dhash_gap(grey: Image.Image) -> int:
    """dhash64 with a box pre-reduction (draft mode): within a few bits of dhash64, 10x cheaper."""
    small = grey.resize((9, 8), Image.Resampling.LANCZOS, reducing_gap=_GAP)
    pixels = np.asarray(small)
    return int.from_bytes(np.packbits((pixels[:, 1:] > pixels[:, :-1]).ravel()).tobytes(), "big")


def working_copy(image: Image.Image) -> Image.Image:
    """The image reduced by a whole factor (a cheap box filter) so its longer side is near _WORK_SIDE."""
    factor = round(max(image.size) / _WORK_SIDE)
    return image.reduce(factor) if factor >= 2 else image


def decode_for(data: bytes, max_pixels: int, mode: str = DECODE) -> Image.Image:
    """Guarded decode of image bytes as `mode` describes them (draft: JPEG at reduced size)."""
    return decode(data, max_pixels, draft_side=_WORK_SIDE if mode == DRAFT else None)


def describe_bytes(data: bytes, max_pixels: int, mode: str = DECODE) -> dict[str, bytes]:
    """Decode (guarded) and describe: what ingest and queries both run, so they always agree."""
    return describe(decode_for(data, max_pixels, mode), data, mode)


def describe(image: Image.Image, raw: bytes | None = None, mode: str = DECODE) -> dict[str, bytes]:
    """Every signal stored for one inventory image (and computed for a query).

    In draft mode `image` is best decoded by decode_for (it then arrives near the working size);
    any image works, the signals are defined on its working copy."""
    image = image if image.mode == "RGB" else image.convert("RGB")
    work = working_copy(image)
    # One RGB array and one greyscale copy of the working copy, shared by every signal below.
    rgb, grey = np.asarray(work), work.convert("L")
    digest = hashlib.sha256(raw if raw is not None else image.tobytes()).digest()
    if mode == DRAFT:
        sigs = _draft_hashes(work, rgb, grey)
    else:
        content = normalise.trimmed(work)
        sigs = {
            DHASH: pack64(dhash64(image)),  # from full resolution: bit-identical to imagehash.dhash
            PHASH: pack64(_phash(work)),
            DHASH_TRIM: pack64(dhash64(content)),
            PDQ: _pdq(work),
        }
        for key, view in zip(DHASH_CROPS, normalise.crop_views(work), strict=True):
            sigs[key] = pack64(dhash64(view))
    sigs[SHA] = digest[:8]
    features = verify.extract(grey)
    sigs[ORB] = verify.pack(features)
    sigs[THUMB] = verify.thumbnail(rgb)
    sigs.update(localindex.pack_words(localindex.words_of(features.descriptors)))
    for plugin in PLUGINS:
        sigs[plugins.key(plugin)] = plugin.describe(work)
    return sigs


def _draft_hashes(work: Image.Image, rgb: np.ndarray, grey: Image.Image) -> dict[str, bytes]:
    """The global hashes of draft mode: the same views as exact mode, from one greyscale copy (crop
    and trim commute with the greyscale conversion). The candidate-only views (pHash, trim, crops)
    take a box pre-reduction (10x cheaper; measured: no change on any preset); the primary dHash does
    not, as the `original` rule and the similarity figure depend on it alone (the pre-reduced dHash
    cost that rule 0.04 recall on the devset). PDQ stays on the working copy: on a halved copy it
    confirmed more distractors (loose P 0.985 -> 0.963). `rgb` and `grey`: the working copy's RGB
    array and greyscale copy."""
    box = normalise.trim_box(rgb)
    sigs = {
        DHASH_WORK: pack64(dhash64(grey)),
        # imagehash.phash of an image already 32x32 skips its own (costly) LANCZOS
        PHASH: pack64(_phash32(grey.resize((32, 32), Image.Resampling.LANCZOS, reducing_gap=_GAP))),
        DHASH_TRIM: pack64(_dhash_gap(grey if box == (0, 0, *grey.size) else grey.crop(box))),
        PDQ: _pdq(rgb),
    }
    for key, view in zip(DHASH_CROPS, normalise.crop_views(grey), strict=True):
        sigs[key] = pack64(_dhash_gap(view))
    return sigs


def primary_key(sigs: dict[str, bytes]) -> str:
    """The primary dHash key a set of signatures carries (exact or draft mode)."""
    return DHASH_WORK if DHASH_WORK in sigs else DHASH


def _scan(snap: Snapshot, key: str, query: int, radius: int) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(snap, "scan"):  # the fast Snapshot (another module's job) may bring its own scan
        return snap.scan(key, query, radius)
    return matching.scan(snap.column(key), query, radius)


def _pdq_distance(a: bytes, b: bytes) -> int:
    x = np.frombuffer(a[:32], np.uint8) ^ np.frombuffer(b[:32], np.uint8)
    return int(np.unpackbits(x).sum())


def find_matches(
    query: dict[str, bytes],
    snap: Snapshot,
    rule: Rule,
    exclude: str | None = None,
    blobs: Blobs | None = None,
) -> list[Match]:
    """Products matching the query, best first (dHash distance), ties by productId, never `exclude`."""
    if not len(snap):
        return []
    primary = primary_key(query)
    q_dh = unpack64(query[primary])
    if not rule.verified:
        rows, dist = _scan(snap, primary, q_dh, rule.max_distance)
        dh_of = dict(zip(rows.tolist(), dist.tolist(), strict=True))
        return _ranked(snap, {r: ("dhash", {}) for r in dh_of}, dh_of, exclude)

    # Every accepted row reports its dHash distance (the original's similarity): computed for the
    # few rows that need it, never for the whole column.
    dh_all = _RowDistances(snap.column(primary), q_dh)
    accepted: dict[int, tuple[str, dict]] = {}
    if SHA in query and SHA in snap.signal_keys:
        rows, _ = _scan(snap, SHA, unpack64(query[SHA]), 0)
        accepted.update({r: ("exact", {}) for r in rows.tolist()})

    # Candidates: best distance over every view pairing; dHash keeps the rule's (overridable) radius.
    near, near_d = _scan(snap, primary, q_dh, rule.max_distance)
    best: dict[int, int] = dict(zip(near.tolist(), near_d.tolist(), strict=True))
    views = [(PHASH, PHASH), (DHASH_TRIM, DHASH_TRIM), (primary, DHASH_TRIM)]
    views += [(key, primary) for key in DHASH_CROPS]
    for column, qkey in views:
        if column not in snap.signal_keys or qkey not in query:
            continue
        rows, dist = _scan(snap, column, unpack64(query[qkey]), rule.candidate_radius)
        for r, d in zip(rows.tolist(), dist.tolist(), strict=True):
            if d < best.get(r, 65):
                best[r] = d
    excluded_row = snap.rows.get(exclude) if exclude is not None else None
    order = sorted(
        (r for r in best if r not in accepted and r != excluded_row),
        key=lambda r: (best[r], int(dh_all[r]), snap.ids[r]),
    )[: rule.max_candidates]
    # Local-feature words: crops and pads whose global hashes all moved still share keypoints.
    order += _word_candidates(query, snap, rule, {*order, *accepted, excluded_row})

    if blobs is None:
        # No blob store (library use without Redis): only two agreeing scans are trusted.
        ph_rows, ph_dist = _scan(snap, PHASH, unpack64(query[PHASH]), 6)
        ph_of = dict(zip(ph_rows.tolist(), ph_dist.tolist(), strict=True))
        for r in order:
            if dh_all[r] <= 6 and r in ph_of:
                accepted[r] = ("dhash+phash", {"phash": ph_of[r]})
        return _ranked(snap, accepted, _distances_of(accepted, dh_all), exclude)

    accepted.update(_verify(query, [snap.ids[r] for r in order], order, rule, blobs))
    return _ranked(snap, accepted, _distances_of(accepted, dh_all), exclude)


def _word_candidates(query: dict[str, bytes], snap: Snapshot, rule: Rule, taken: set) -> list[int]:
    if rule.word_candidates <= 0 or ORB not in query or not set(ORB_WORDS) <= set(snap.signal_keys):
        return []
    words = localindex.words_of(verify.unpack(query[ORB]).descriptors)  # every query keypoint votes
    if not len(words):
        return []
    taken_rows = {r for r in taken if r is not None}
    top = localindex.index_for(snap).top(words, rule.word_candidates + len(taken_rows), taken_rows)
    return [r for r in top if r not in taken_rows][: rule.word_candidates]


class _RowDistances:
    """dHash distance of one query to single rows, on demand: `d[row]`."""

    def __init__(self, column: np.ndarray, query: int) -> None:
        self.column, self.query = column, np.uint64(query)

    def __getitem__(self, row: int) -> int:
        return int(np.bitwise_count(self.column[row] ^ self.query))


def _distances_of(accepted: dict[int, tuple[str, dict]], dh_all: _RowDistances) -> dict[int, int]:
    return {r: int(dh_all[r]) for r in accepted}


def _pdq_confirms(q_pdq: bytes | None, t_pdq: bytes | None, rule: Rule) -> dict | None:
    if q_pdq is None or t_pdq is None or len(t_pdq) != 33 or len(q_pdq) != 33:
        return None  # missing, or damaged: never evidence
    d = _pdq_distance(q_pdq, t_pdq)
    informative = min(q_pdq[32], t_pdq[32]) >= _LOW_QUALITY
    return {"pdq": d} if d <= rule.pdq_max and informative else None


def _orb_confirms(
    q_feat: verify.Features,
    q_thumb: verify.Thumb | None,
    t_orb: bytes | None,
    thumb_of: Callable[[], bytes | None],
    rule: Rule,
) -> dict | None:
    """ORB + RANSAC with plausible geometry, then the photometric check of the aligned thumbnails.

    A product stored without a thumbnail (an index written before thumb@1) is judged on ORB alone."""
    if t_orb is None:
        return None
    verdict = verify.verify(q_feat, verify.unpack(t_orb))
    if not verdict.passes(rule.orb_min_inliers):
        return None
    extra = {"orb_inliers": verdict.inliers, "orb_matches": verdict.good}
    t_thumb = thumb_of()
    if q_thumb is None or t_thumb is None:
        return extra
    t_feat_size = verify.unpack_size(t_orb)
    photo = verify.photometric(q_thumb, verify.unpack_thumb(t_thumb), verdict.model, q_feat.size, t_feat_size)
    if not photo.passes(rule.photo_min):
        return None
    return {**extra, "photo": round(photo.luma, 3), "chroma": round(photo.chroma_corr, 3)}


@contextlib.contextmanager
def _skip_damaged(what: str) -> Iterator[None]:
    """A stored blob that does not unpack (damaged, foreign) is no evidence: skip that candidate,
    leave a trace, and answer the query from the others."""
    try:
        yield
    except (ValueError, IndexError, TypeError, cv2.error) as exc:
        log.warning("skipping %s: damaged signature blob (%s: %s)", what, type(exc).__name__, exc)


def _verify(
    query: dict[str, bytes], ids: list[str], rows: list[int], rule: Rule, blobs: Blobs
) -> dict[int, tuple[str, dict]]:
    if not ids:
        return {}
    found: dict[int, tuple[str, dict]] = {}
    pending: list[int] = []
    q_pdq = query.get(PDQ)
    stored = blobs(PDQ, ids) if q_pdq else [None] * len(ids)
    for i, blob in enumerate(stored):
        extra = _pdq_confirms(q_pdq, blob, rule)
        if extra is not None:
            found[rows[i]] = ("pdq", extra)
        else:
            pending.append(i)
    if not pending or ORB not in query:
        return found
    q_feat = verify.unpack(query[ORB])
    q_thumb = verify.unpack_thumb(query[THUMB]) if THUMB in query else None
    passed: list[tuple[int, bytes, verify.Verdict]] = []
    for i, blob in zip(pending, blobs(ORB, [ids[i] for i in pending]), strict=True):
        if blob is None:
            continue
        with _skip_damaged(ids[i]):
            verdict = verify.verify(q_feat, verify.unpack(blob))
            if verdict.passes(rule.orb_min_inliers):
                passed.append((i, blob, verdict))
    # Thumbnails only for the few ORB passes: one more bulk fetch, none when nothing passed.
    thumbs = blobs(THUMB, [ids[i] for i, _, _ in passed]) if passed and q_thumb is not None else []
    for k, (i, blob, verdict) in enumerate(passed):
        extra = {"orb_inliers": verdict.inliers, "orb_matches": verdict.good}
        t_thumb = thumbs[k] if thumbs else None
        with _skip_damaged(ids[i]):
            if t_thumb is not None:
                photo = verify.photometric(
                    q_thumb,
                    verify.unpack_thumb(t_thumb),
                    verdict.model,
                    q_feat.size,
                    verify.unpack_size(blob),
                )
                if not photo.passes(rule.photo_min):
                    continue
                extra.update(photo=round(photo.luma, 3), chroma=round(photo.chroma_corr, 3))
            found[rows[i]] = ("orb", extra)
    return found


def verify_pairs(pairs: list[tuple[str, str]], rule: Rule, blobs: Blobs) -> list[tuple[str, dict] | None]:
    """For each pair of indexed product ids, the (stage, extra) that confirms them as near-duplicates
    (PDQ within rule.pdq_max on informative images, else ORB + RANSAC + the photometric check), or None.

    Blobs are fetched in bulk: one `blobs(key, ids)` call per signal (PDQ, ORB, and the thumbnail)
    over the unique ids of all pairs. Cost per pair: a PDQ comparison (~5 us); pairs PDQ does not
    confirm add one ORB verification (~0.4-0.5 ms: stored 256 x 256 descriptors, ratio test, RANSAC)
    and, for ORB passes, the photometric check (~0.1 ms). The first id plays the query's part.
    """
    if not pairs:
        return []
    uniq = list(dict.fromkeys(pid for pair in pairs for pid in pair))
    pdq = dict(zip(uniq, blobs(PDQ, uniq), strict=True))
    orb = dict(zip(uniq, blobs(ORB, uniq), strict=True))
    thumbs = dict(zip(uniq, blobs(THUMB, uniq), strict=True))
    features: dict[str, verify.Features] = {}
    thumb_cache: dict[str, verify.Thumb | None] = {}

    def feat(pid: str) -> verify.Features:
        if pid not in features:
            features[pid] = verify.unpack(orb[pid])
        return features[pid]

    def thumb(pid: str) -> verify.Thumb | None:
        if pid not in thumb_cache:
            thumb_cache[pid] = verify.unpack_thumb(thumbs[pid]) if thumbs[pid] is not None else None
        return thumb_cache[pid]

    out: list[tuple[str, dict] | None] = []
    for a, b in pairs:
        extra = _pdq_confirms(pdq[a], pdq[b], rule)
        if extra is not None:
            out.append(("pdq", extra))
            continue
        if orb[a] is None or orb[b] is None:
            out.append(None)
            continue
        extra = None
        with _skip_damaged(f"{a}/{b}"):
            extra = _orb_confirms(feat(a), thumb(a), orb[b], lambda b=b: thumbs[b], rule)
        out.append(("orb", extra) if extra is not None else None)
    return out


def _ranked(
    snap: Snapshot, accepted: dict[int, tuple[str, dict]], dh_of: dict[int, int], exclude: str | None
) -> list[Match]:
    out = []
    for row, (stage, extra) in accepted.items():
        pid = snap.ids[row]
        if pid == exclude:
            continue
        dist = dh_of[row]
        out.append(Match(pid, matching.similarity(dist), dist, stage, {"dhash": dist, **extra}))
    out.sort(key=lambda m: (m.distance, m.product_id))
    return out
