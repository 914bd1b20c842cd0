"""Every signal's name and version, and the set of them an index is written with.

A `SignalSet` is built from Settings (`SignalSet.from_settings`) by whoever runs the pipeline (ingest,
queries, the worker's index cache, the producer's store) and passed in: nothing here reads the
environment. Its `scan` columns, `blobs` and `identity` signals are what the store records and checks,
so an index written with one set is never mixed with signatures of another (another decode mode,
plugin or embedding model).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from common.index import orb_words
from common.signals import embedding, normalise
from common.signals import plugins as plugin_registry
from common.signals.signatures import DHASH

if TYPE_CHECKING:
    from common.config.settings import Settings

SHA = "sha256p64@1"  # first 8 bytes of sha256 of the raw file (of the RGB pixels when raw is absent)
PHASH = "phash64@1"  # imagehash.phash(image), 64 bits
DHASH_TRIM = "dhash64.trim@2"  # dHash of the content box inside uniform borders (halved_trim_box)
DHASH_CROPS = tuple(f"dhash64.crop{i}@1" for i in range(len(normalise.CROP_WINDOWS)))
PDQ = "pdq256@1"  # 32 bytes of PDQ hash + 1 byte PDQ quality (0..100): common.signals.pdq, = pdqhash 0.2.8
ORB = "orb124x128@1"  # verify.pack of verify.stored: the 124 strongest keypoints, 128 bits each (~2.5 KB)
THUMB = "thumb@4"  # photometric.thumbnail (halved copy): 64 px luma as WebP + 32 px chroma exact (~0.75 KB)
# The left-right mirror. An image query describes its own mirror and compares it with the stored
# columns and blobs as they are. The mirror's two hashes (scan columns, 16 bytes) and its PDQ (a blob,
# one DCT shared with the straight PDQ) are stored too, so a query by productId and the whole-inventory
# dedup find mirrored uploads as well; its ORB keypoints are query-only (ORB is not flip-invariant,
# and storing a second set would double the biggest blob).
DHASH_MIRROR = "dhash64.mirror@1"  # dHash (box pre-reduced) of the mirrored working copy
PHASH_MIRROR = "phash64.mirror@1"  # pHash of the mirrored working copy
PDQ_MIRROR_KEY = "pdq256.mirror@1"  # PDQ of the mirrored working copy (same layout as PDQ)
ORB_MIRROR = "orb256.mirror@2"  # ORB of the mirrored working copy (verify.pack): query-only
THUMB_FINE = "thumb.fine@3"  # the query's thumbnail at twice thumb@4's size (photometric.thumbnail)
# A query on a non-studio backdrop (a seller's new background) also describes itself with the backdrop
# replaced by studio white (normalise.restudioed): these views, scanned and verified as the mirror's.
DHASH_BACKDROP = "dhash64.backdrop@2"
PHASH_BACKDROP = "phash64.backdrop@2"
PDQ_BACKDROP = "pdq256.backdrop@2"
ORB_BACKDROP = "orb256.backdrop@3"
THUMB_BACKDROP = "thumb.backdrop@4"  # backdrop@2's restoration, thumbnail as thumb@4 (exact)
# A query that shows a photo inside a screenshot-like frame (normalise.framed_box) also hashes the photo
# alone: scanned against the stored primary, trimmed and pHash columns; its PDQ confirms like the
# query's own (a flat photo in a frame has too few keypoints for ORB), else the query itself verifies.
DHASH_FRAME = "dhash64.frame@1"
PHASH_FRAME = "phash64.frame@1"
PDQ_FRAME = "pdq256.frame@1"
# A query that looks turned by a few degrees (common.signals.rotation) also hashes itself turned back:
# scanned against the stored primary and centre-crop columns (a re-cropped turn is zoomed in); its PDQ
# confirms like the query's own (a flat garment turned has too few keypoints for ORB to fit the turn).
DHASH_ROTATED = "dhash64.rotated@1"
PDQ_ROTATED = "pdq256.rotated@1"
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


def scan_signals(mode: str) -> tuple[str, ...]:
    """The scanned 64-bit columns of an index written in `mode` (the store's signal list)."""
    return (PRIMARY_OF[mode], SHA, PHASH, DHASH_TRIM, *DHASH_CROPS, *ORB_WORDS, DHASH_MIRROR, PHASH_MIRROR)


@dataclass(frozen=True)
class SignalSet:
    """What one process computes, and so what an index written by it holds."""

    decode: str = DRAFT
    plugin_names: tuple[str, ...] = ()  # NEARDUP_PLUGINS: extra per-product signals (stored as blobs)
    embedding_model: Path | None = None  # NEARDUP_EMBEDDING_MODEL (common.signals.embedding)

    @classmethod
    def from_settings(cls, settings: Settings) -> SignalSet:
        return cls(settings.decode, tuple(settings.plugins), settings.embedding_model)

    @cached_property
    def plugins(self) -> tuple[plugin_registry.SignalPlugin, ...]:
        return tuple(plugin_registry.load(self.plugin_names))

    @cached_property
    def embedding(self) -> str | None:
        """The embedding's signal: named after the model file's sha256, so vectors of two models never
        share an index; None (and nothing added anywhere) unless a model is named."""
        return embedding.signal_for(self.embedding_model) if self.embedding_model is not None else None

    @property
    def primary(self) -> str:
        """The primary dHash key of this decode mode."""
        return PRIMARY_OF[self.decode]

    @property
    def scan(self) -> tuple[str, ...]:
        return scan_signals(self.decode)

    @property
    def identity(self) -> tuple[str, ...]:
        """Blob signals that are part of the index's recorded identity (the embedding model)."""
        return (self.embedding,) if self.embedding is not None else ()

    @property
    def verified(self) -> tuple[str, ...]:
        """The blobs verification reads: recorded with the index, so a version change of any refuses an
        index written before it (it must be re-ingested) instead of verifying without them."""
        return (PDQ, ORB, THUMB, PDQ_MIRROR_KEY)

    @property
    def blobs(self) -> tuple[str, ...]:
        plugin_blobs = (plugin_registry.key(p) for p in self.plugins)
        return (*self.verified, *plugin_blobs, *self.identity)


# Draft decode, no plugins, no embedding: what an unconfigured process computes.
DEFAULT = SignalSet()


def from_env() -> SignalSet:
    """For scripts (benchmarks) that take their configuration from NEARDUP_* variables."""
    from common.config.settings import Settings

    return of(Settings.from_env())


def of(settings: Settings) -> SignalSet:
    """The SignalSet of these settings, one per process and configuration (its embedding signal hashes
    the model file once)."""
    return _cached(settings.decode, tuple(settings.plugins), settings.embedding_model)


@lru_cache(maxsize=8)
def _cached(decode: str, plugin_names: tuple[str, ...], embedding_model: Path | None) -> SignalSet:
    return SignalSet(decode, plugin_names, embedding_model)
