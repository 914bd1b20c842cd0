"""The matching pipeline: which signals describe an image, and how a query becomes matches.

Stages (all but `original`):
  1. exact  — a 64-bit prefix of sha256(raw bytes) scanned at radius 0;
  2. candidates — 64-bit scans: dHash (the rule's radius), pHash, dHash of the trimmed content box
     (both ways, so padding/letterbox is undone), and dHash of a few crop windows; the closest
     `max_candidates` by their best distance go on, joined by the `word_candidates` products that
     share the most (IDF-weighted) ORB words with the query (common.index.orb_words) — crops and pads
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

from common.config.settings import Settings
from common.errors import ConfigError
from common.index import embeddings, hamming, orb_words
from common.index.snapshot import Snapshot
from common.match import verify
from common.match.presets import Rule
from common.signals import embedding, normalise, pdq, plugins
from common.signals.imaging import decode
from common.signals.signatures import DHASH, dhash64, pack64, unpack64

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
PDQ = "pdq256@1"  # 32 bytes of PDQ hash + 1 byte PDQ quality (0..100): common.signals.pdq, = pdqhash 0.2.8
ORB = "orb256@1"  # verify.pack: 4-byte header + 36 bytes per keypoint, <= 256 keypoints
THUMB = "thumb@1"  # verify.thumbnail: 64 px luma + 32 px chroma (~4 KB), the photometric check
# Query-side views of the left-right mirror (never stored: a mirrored query is compared with the
# stored columns and blobs as they are, so mirrors cost the index nothing).
DHASH_MIRROR = "dhash64.mirror@1"  # dHash (box pre-reduced) of the mirrored working copy
PHASH_MIRROR = "phash64.mirror@1"  # pHash of the mirrored working copy
PDQ_MIRROR_KEY = "pdq256.mirror@1"  # PDQ of the mirrored working copy (same layout as PDQ)
ORB_MIRROR = "orb256.mirror@1"  # ORB of the mirrored working copy (verify.pack)
THUMB_FINE = "thumb.fine@1"  # the query's thumbnail at twice thumb@1's size (verify.thumbnail)
# A query on a non-studio backdrop (a seller's new background) also describes itself with the backdrop
# replaced by studio white (normalise.restudioed): these views, scanned and verified as the mirror's.
DHASH_BACKDROP = "dhash64.backdrop@1"
PHASH_BACKDROP = "phash64.backdrop@1"
PDQ_BACKDROP = "pdq256.backdrop@1"
ORB_BACKDROP = "orb256.backdrop@1"
THUMB_BACKDROP = "thumb.backdrop@1"
# Extra per-product signals (criterion 3), chosen by NEARDUP_PLUGINS: stored as blobs beside the signatures.
PLUGINS = plugins.load(_SETTINGS.plugins)

# ORB words of the strongest keypoints, 4 x 16 bits per column (common.index.orb_words): crop candidates.
ORB_WORDS = orb_words.COLUMNS

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
# emb: the learned embedding (NEARDUP_EMBEDDING_MODEL, common/embedding.py); None, and nothing added
# anywhere, unless a model is named. Its key carries the model file's sha256 and is part of the index's
# recorded signal set (IDENTITY_SIGNALS), so vectors of two models never share an index.
EMBEDDING: str | None = (
    embedding.signal_for(_SETTINGS.embedding_model) if _SETTINGS.embedding_model is not None else None
)
IDENTITY_SIGNALS: tuple[str, ...] = (EMBEDDING,) if EMBEDDING is not None else ()
BLOB_SIGNALS: tuple[str, ...] = (PDQ, ORB, THUMB, *(plugins.key(p) for p in PLUGINS), *IDENTITY_SIGNALS)

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


# Index of the left-right mirror among the eight dihedral PDQ hashes (pdqhash.compute_dihedral order).
PDQ_MIRROR = 5


def pdq_dihedral(image: Image.Image | np.ndarray) -> list[bytes]:
    """PDQ of `image` (or its (h, w, 3) uint8 RGB array) and of its seven rotations/mirrors (one DCT),
    as 33-byte blobs; [0] is the stored PDQ. common.signals.pdq is bit-identical to pdqhash
    (tests/unit/test_pdq.py): pdq256@1."""
    rgb = image if isinstance(image, np.ndarray) else np.asarray(image.convert("RGB"))
    hashes, quality = pdq.compute_dihedral(rgb)
    q = bytes([max(0, min(100, int(quality)))])
    return [pdq.pack(h) + q for h in hashes]


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


def describe_bytes(data: bytes, max_pixels: int, mode: str = DECODE, query: bool = False) -> dict[str, bytes]:
    """Decode (guarded) and describe: what ingest and queries both run, so they always agree."""
    return describe(decode_for(data, max_pixels, mode), data, mode, query)


def describe(
    image: Image.Image, raw: bytes | None = None, mode: str = DECODE, query: bool = False
) -> dict[str, bytes]:
    """Every signal stored for one inventory image (and computed for a query).

    In draft mode `image` is best decoded by decode_for (it then arrives near the working size);
    any image works, the signals are defined on its working copy. `query` adds the query-only views
    (mirror, fine thumbnail: ~3 ms), which ingest never stores."""
    image = image if image.mode == "RGB" else image.convert("RGB")
    work = normalise.despeckled(working_copy(image))
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
        }
        for key, view in zip(DHASH_CROPS, normalise.crop_views(work), strict=True):
            sigs[key] = pack64(dhash64(view))
    pdq_views = pdq_dihedral(rgb)  # one DCT: the stored PDQ, and the mirror's for a query
    sigs[PDQ] = pdq_views[0]
    sigs[SHA] = digest[:8]
    features = verify.extract(grey)
    sigs[ORB] = verify.pack(features)
    sigs[THUMB] = verify.thumbnail(rgb)
    sigs.update(orb_words.pack_words(orb_words.words_of(features.descriptors)))
    for plugin in PLUGINS:
        sigs[plugins.key(plugin)] = plugin.describe(work)
    if EMBEDDING is not None:  # emb: EmbeddingError (stage "embed") fails this product only
        sigs[EMBEDDING] = embedding.encoder(_SETTINGS.embedding_model, EMBEDDING).embed(work)
    if query:
        sigs.update(_query_views(work, pdq_views))
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
        PHASH: pack64(_phash32(_phash_grey(grey))),
        DHASH_TRIM: pack64(_dhash_gap(grey if box == (0, 0, *grey.size) else grey.crop(box))),
    }
    for key, view in zip(DHASH_CROPS, normalise.crop_views(grey), strict=True):
        sigs[key] = pack64(_dhash_gap(view))
    return sigs


def _phash_grey(grey: Image.Image) -> Image.Image:
    # imagehash.phash of an image already 32x32 skips its own (costly) LANCZOS
    return grey.resize((32, 32), Image.Resampling.LANCZOS, reducing_gap=_GAP)


def _query_views(work: Image.Image, pdq_views: list[bytes]) -> dict[str, bytes]:
    """What only a query needs (never stored): its mirror's hashes and ORB keypoints, for mirrored
    copies, and a finer thumbnail, for a photo shown small inside a larger frame (a screenshot)."""
    mirror = work.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    grey = mirror.convert("L")
    out = {
        DHASH_MIRROR: pack64(_dhash_gap(grey)),
        PHASH_MIRROR: pack64(_phash32(_phash_grey(grey))),
        PDQ_MIRROR_KEY: pdq_views[PDQ_MIRROR],
        ORB_MIRROR: verify.pack(verify.extract(mirror)),
        THUMB_FINE: verify.thumbnail(work, verify.FINE_SIDE),
    }
    studio = normalise.restudioed(work)  # None for a studio photo (nearly every query): no cost
    if studio is not None:
        grey = studio.convert("L")
        out.update({
            DHASH_BACKDROP: pack64(dhash64(grey)),
            PHASH_BACKDROP: pack64(_phash32(_phash_grey(grey))),
            PDQ_BACKDROP: pdq_dihedral(studio)[0],
            ORB_BACKDROP: verify.pack(verify.extract(studio)),
            THUMB_BACKDROP: verify.thumbnail(studio),
        })  # fmt: skip
    return out


def primary_key(sigs: dict[str, bytes]) -> str:
    """The primary dHash key a set of signatures carries (exact or draft mode)."""
    return DHASH_WORK if DHASH_WORK in sigs else DHASH


def _scan(snap: Snapshot, key: str, query: int, radius: int) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(snap, "scan"):  # the fast Snapshot (another module's job) may bring its own scan
        return snap.scan(key, query, radius)
    return hamming.scan(snap.column(key), query, radius)


def _pdq_distance(a: bytes, b: bytes) -> int:
    x = np.frombuffer(a[:32], np.uint8) ^ np.frombuffer(b[:32], np.uint8)
    return int(np.unpackbits(x).sum())


def find_matches(
    query: dict[str, bytes],
    snap: Snapshot,
    rule: Rule,
    exclude: str | None = None,
    blobs: Blobs | None = None,
    scored: dict[str, float] | None = None,
) -> list[Match]:
    """Products matching the query, best first (dHash distance), ties by productId, never `exclude`.

    With the learned embedding on, `scored` (when given) receives the cosine of every candidate."""
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

    best, alt_rows = _hash_candidates(query, snap, rule, primary, q_dh)
    excluded_row = snap.rows.get(exclude) if exclude is not None else None
    order = sorted(
        (r for r in best if r not in accepted and r != excluded_row),
        key=lambda r: (best[r], int(dh_all[r]), snap.ids[r]),
    )[: rule.max_candidates]
    # Local-feature words: crops and pads whose global hashes all moved still share keypoints.
    order += _word_candidates(query, snap, rule, {*order, *accepted, excluded_row})
    # emb: the embedding's nearest products join the candidates (None: no model, nothing changes).
    q_emb = embeddings.query_vector(query, EMBEDDING, snap.embeddings) if blobs is not None else None
    if q_emb is not None:
        taken = {*order, *accepted, excluded_row}
        order += [r for r, _ in snap.embeddings.top(q_emb, rule.embedding_candidates, taken)]

    if blobs is None:
        # No blob store (library use without Redis): only two agreeing scans are trusted.
        ph_rows, ph_dist = _scan(snap, PHASH, unpack64(query[PHASH]), 6)
        ph_of = dict(zip(ph_rows.tolist(), ph_dist.tolist(), strict=True))
        for r in order:
            if dh_all[r] <= 6 and r in ph_of:
                accepted[r] = ("dhash+phash", {"phash": ph_of[r]})
        return _ranked(snap, accepted, _distances_of(accepted, dh_all), exclude)

    accepted.update(_verify(query, [snap.ids[r] for r in order], order, rule, blobs, alt_rows))
    if q_emb is not None:
        _embedding_tier(q_emb, snap, rule, order, accepted, excluded_row, scored)
    return _ranked(snap, accepted, _distances_of(accepted, dh_all), exclude)


def _hash_candidates(
    query: dict[str, bytes], snap: Snapshot, rule: Rule, primary: str, q_dh: int
) -> tuple[dict[int, int], dict[str, set[int]]]:
    """Rows within reach of any 64-bit view pairing, with their best distance; and which rows the
    mirrored or restored-backdrop views found closer than the query's own views."""
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
    # The mirrored query's views against the stored columns: a left-right flip moves every global
    # hash, so a seller's mirrored copy is found by these alone (few rows, small radius).
    # The same for a query on a replaced backdrop, restored to studio white (only such queries).
    alt_rows: dict[str, set[int]] = {"mirrored": set(), "backdrop": set()}  # found closer by that view
    alt_scans = [("mirrored", primary, DHASH_MIRROR, rule.mirror_radius)]
    alt_scans += [("mirrored", PHASH, PHASH_MIRROR, rule.mirror_radius)]
    alt_scans += [("backdrop", primary, DHASH_BACKDROP, rule.max_distance)]
    alt_scans += [("backdrop", PHASH, PHASH_BACKDROP, rule.candidate_radius)]
    for view, column, qkey, radius in alt_scans:
        if radius < 0 or column not in snap.signal_keys or qkey not in query:
            continue
        rows, dist = _scan(snap, column, unpack64(query[qkey]), radius)
        for r, d in zip(rows.tolist(), dist.tolist(), strict=True):
            if d < best.get(r, 65):
                best[r] = d
                alt_rows[view].add(r)
    return best, alt_rows


def _embedding_tier(
    q_emb: np.ndarray,
    snap: Snapshot,
    rule: Rule,
    order: list[int],
    accepted: dict[int, tuple[str, dict]],
    excluded_row: int | None,
    scored: dict[str, float] | None,
) -> None:
    """emb: the cosine of every candidate goes into its details; a candidate no other stage accepted
    is a match (stage "embedding") when its cosine reaches the calibrated `rule.embedding_min`."""
    rows = [r for r in dict.fromkeys([*order, *accepted]) if r != excluded_row]
    cosines = dict(zip(rows, snap.embeddings.cosines(q_emb, rows).tolist(), strict=True))
    for r, c in cosines.items():
        if not np.isfinite(c):
            continue
        c = round(c, 4)
        if scored is not None:
            scored[snap.ids[r]] = c
        if r in accepted:
            stage, extra = accepted[r]
            accepted[r] = (stage, {**extra, "cosine": c})
        elif rule.embedding_min is not None and c >= rule.embedding_min:
            accepted[r] = ("embedding", {"cosine": c})


def _word_candidates(query: dict[str, bytes], snap: Snapshot, rule: Rule, taken: set) -> list[int]:
    if rule.word_candidates <= 0 or ORB not in query or not set(ORB_WORDS) <= set(snap.signal_keys):
        return []
    words = orb_words.words_of(verify.unpack(query[ORB]).descriptors)  # every query keypoint votes
    if not len(words):
        return []
    taken_rows = {r for r in taken if r is not None}
    top = orb_words.index_for(snap).top(words, rule.word_candidates + len(taken_rows), taken_rows)
    return [r for r in top if r not in taken_rows][: rule.word_candidates]


class _RowDistances:
    """dHash distance of one query to single rows, on demand: `d[row]`."""

    def __init__(self, column: np.ndarray, query: int) -> None:
        self.column, self.query = column, np.uint64(query)

    def __getitem__(self, row: int) -> int:
        return int(np.bitwise_count(self.column[row] ^ self.query))


def _distances_of(accepted: dict[int, tuple[str, dict]], dh_all: _RowDistances) -> dict[int, int]:
    return {r: int(dh_all[r]) for r in accepted}


def _pdq_confirms(
    q_pdq: bytes | None, t_pdq: bytes | None, rule: Rule, limit: int | None = None
) -> dict | None:
    if q_pdq is None or t_pdq is None or len(t_pdq) != 33 or len(q_pdq) != 33:
        return None  # missing, or damaged: never evidence
    d = _pdq_distance(q_pdq, t_pdq)
    informative = min(q_pdq[32], t_pdq[32]) >= _LOW_QUALITY
    return {"pdq": d} if d <= (rule.pdq_max if limit is None else limit) and informative else None


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


def _pdq_flat_close(q_pdq: bytes | None, t_pdq: bytes | None, rule: Rule) -> bool:
    """PDQ within rule.pdq_flat_max where either photo is low-information (not evidence alone)."""
    if q_pdq is None or t_pdq is None or len(t_pdq) != 33 or len(q_pdq) != 33:
        return False
    return min(q_pdq[32], t_pdq[32]) < _LOW_QUALITY and _pdq_distance(q_pdq, t_pdq) <= rule.pdq_flat_max


def _same_frame(qsize: tuple[int, int], tsize: tuple[int, int]) -> verify.Verdict:
    """The transform of two framings of one photo (PDQ agrees): scale each axis to the other's size."""
    model = np.array([[tsize[0] / qsize[0], 0.0, 0.0], [0.0, tsize[1] / qsize[1], 0.0]])
    return verify.Verdict(0, 0, True, model)


def _mirrored_thumb(thumb: verify.Thumb | None) -> verify.Thumb | None:
    if thumb is None:
        return None
    luma, chroma = thumb.luma[:, ::-1], thumb.chroma[:, ::-1]
    return verify.Thumb(np.ascontiguousarray(luma), np.ascontiguousarray(chroma))


@dataclass
class _View:
    """One way of looking at the query: straight, mirrored, or on a restored studio backdrop.
    Blobs are unpacked on first use: most queries never need a thumbnail or the mirror's keypoints."""

    name: str  # "" for the straight view; else the flag a match by it carries in its signals
    pdq: bytes | None
    orb: bytes | None
    thumb_blob: bytes | None
    fine_blob: bytes | None
    rows: set[int] | None  # candidates whose ORB it may verify (None: all)
    pdq_max: int | None = None
    flip: bool = False  # the thumbnails are the straight query's, mirrored on use
    _cache: dict = field(default_factory=dict)

    def _get(self, key: str, make: Callable[[], object]) -> object:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def features(self) -> verify.Features:
        return self._get("orb", lambda: verify.unpack(self.orb))

    def _thumb(self, blob: bytes | None) -> verify.Thumb | None:
        thumb = verify.unpack_thumb(blob) if blob is not None else None
        return _mirrored_thumb(thumb) if self.flip else thumb

    def thumb(self) -> verify.Thumb | None:
        return self._get("thumb", lambda: self._thumb(self.thumb_blob))

    def fine(self) -> verify.Thumb | None:
        return self._get("fine", lambda: self._thumb(self.fine_blob))


def _views(query: dict[str, bytes], rule: Rule, alt_rows: dict[str, set[int]]) -> list[_View]:
    thumb, fine = query.get(THUMB), query.get(THUMB_FINE)
    views = [_View("", query.get(PDQ), query.get(ORB), thumb, fine, None)]
    if PDQ_MIRROR_KEY in query or ORB_MIRROR in query:
        # ORB is not flip-invariant, and trying the mirror on every candidate would double the ORB
        # cost: its keypoints only for the candidates the mirrored views brought.
        mirrored = alt_rows.get("mirrored", set())
        views.append(
            _View("mirrored", query.get(PDQ_MIRROR_KEY), query.get(ORB_MIRROR), thumb, fine, mirrored,
                  rule.pdq_mirror_max, flip=True)
        )  # fmt: skip
    if ORB_BACKDROP in query:
        rows = alt_rows.get("backdrop", set())
        views.append(
            _View(
                "backdrop",
                query.get(PDQ_BACKDROP),
                query[ORB_BACKDROP],
                query.get(THUMB_BACKDROP),
                None,
                rows,
            )
        )
    return views


def _verify(
    query: dict[str, bytes],
    ids: list[str],
    rows: list[int],
    rule: Rule,
    blobs: Blobs,
    alt_rows: dict[str, set[int]] | None = None,
) -> dict[int, tuple[str, dict]]:
    """Stage 3 for the candidates: PDQ first (cheap, confirms most), ORB + RANSAC for the rest, then
    the photometric check of the aligned thumbnails for the few ORB passes."""
    if not ids:
        return {}
    views = _views(query, rule, alt_rows or {})
    stored = blobs(PDQ, ids) if views[0].pdq else [None] * len(ids)
    found, pending, flat = _pdq_stage(views, stored, rows, rule)
    if not pending or views[0].orb is None:
        return found
    passed = _orb_stage(views, pending, blobs(ORB, [ids[i] for i in pending]), ids, rows, rule, flat)
    # Thumbnails only for the few ORB passes: one more bulk fetch, none when nothing passed.
    thumbs = (
        blobs(THUMB, [ids[i] for i, _, _, _ in passed]) if passed and views[0].thumb_blob is not None else []
    )
    found.update(_photo_stage(views, passed, thumbs, ids, rows, rule))
    return found


def _pdq_stage(
    views: list[_View], stored: list[bytes | None], rows: list[int], rule: Rule
) -> tuple[dict[int, tuple[str, dict]], list[int], dict[int, _View]]:
    """(confirmed by PDQ, indexes left for ORB, flat ones among those: index -> the view to judge).
    Low-information photos (flat, dark, blurred) whose PDQ is very close: ORB finds too few corners
    there, so the photometric check on the thumbnails decides instead."""
    found: dict[int, tuple[str, dict]] = {}
    pending: list[int] = []
    flat: dict[int, _View] = {}
    for i, blob in enumerate(stored):
        for view in views:
            extra = _pdq_confirms(view.pdq, blob, rule, view.pdq_max)
            if extra is not None:
                found[rows[i]] = ("pdq", {**extra, view.name: True} if view.name else extra)
                break
        else:
            pending.append(i)
            for view in views[:2]:  # straight or mirrored: the same photo, so the same framing
                if _pdq_flat_close(view.pdq, blob, rule):
                    flat.setdefault(i, view)
    return found, pending, flat


def _orb_stage(
    views: list[_View],
    pending: list[int],
    orb_blobs: list[bytes | None],
    ids: list[str],
    rows: list[int],
    rule: Rule,
    flat: dict[int, _View],
) -> list[tuple[int, bytes, verify.Verdict, _View]]:
    """The candidates whose keypoints agree with some view's (or flat ones, for the thumbnails)."""
    passed: list[tuple[int, bytes, verify.Verdict, _View]] = []
    for i, blob in zip(pending, orb_blobs, strict=True):
        if blob is None:
            continue
        with _skip_damaged(ids[i]):
            t_feat = verify.unpack(blob)
            for view in views:
                if view.orb is None or (view.rows is not None and rows[i] not in view.rows):
                    continue
                verdict = verify.verify(view.features(), t_feat, min_inliers=rule.orb_min_inliers)
                if verdict.passes(rule.orb_min_inliers):
                    passed.append((i, blob, verdict, view))
                    break
            else:
                if i in flat:
                    passed.append((i, blob, _same_frame(views[0].features().size, t_feat.size), flat[i]))
    return passed


def _photo_stage(
    views: list[_View],
    passed: list[tuple[int, bytes, verify.Verdict, _View]],
    thumbs: list[bytes | None],
    ids: list[str],
    rows: list[int],
    rule: Rule,
) -> dict[int, tuple[str, dict]]:
    """ORB passes (and flat photos) that the aligned thumbnails also agree on."""
    found: dict[int, tuple[str, dict]] = {}
    for k, (i, blob, verdict, view) in enumerate(passed):
        extra = {"orb_inliers": verdict.inliers, "orb_matches": verdict.good}
        t_thumb = thumbs[k] if thumbs else None
        by_photo = not verdict.passes(rule.orb_min_inliers)  # a flat photo: the thumbnails decide
        if by_photo and t_thumb is None:
            continue
        with _skip_damaged(ids[i]):
            if t_thumb is not None and view.thumb_blob is not None:
                photo = verify.photometric(
                    view.thumb(),
                    verify.unpack_thumb(t_thumb),
                    verdict.model,
                    views[0].features().size,
                    verify.unpack_size(blob),
                    fine=view.fine(),
                )
                # Six degrees of freedom fit chance matches more easily: the pixels must agree more.
                if not photo.passes(rule.photo_min_affine if verdict.affine else rule.photo_min):
                    continue
                extra.update(photo=round(photo.luma, 3), chroma=round(photo.chroma_corr, 3))
            if view.name:
                extra[view.name] = True
            found[rows[i]] = ("pdq+photo" if by_photo else "orb", extra)
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
        out.append(Match(pid, hamming.similarity(dist), dist, stage, {"dhash": dist, **extra}))
    out.sort(key=lambda m: (m.distance, m.product_id))
    return out
