"""Local-feature words: a candidate source that follows crops, padding and rescales at catalog scale.

Global hashes move when a photo is cropped; its ORB keypoints mostly do not. Each inventory image
stores the 16-bit "words" of its `WORDS` strongest ORB descriptors (a fixed subset of 16 of the 256
descriptor bits: one LSH function for Hamming space, no training) as `COLUMNS` ordinary 64-bit
scan columns (4 words each, 128 bytes per product). A query worker keeps an inverted index
word -> rows over those columns; a query looks up the words of all its keypoints and the products
with the highest IDF-weighted word agreement go to the verifier as candidates.

Measured on the devset (400 products, cropped/padded/rescaled/noisy queries): the true source is
in the top 16 by weighted votes for 0.88 of criterion-4 queries (plain votes 0.84; the 12-word
longer, 2-function or 12/14-bit variants were no better). Why IDF: ORB bits are biased on studio
photos (one word occurred in 25 % of products), so frequent words say little and cost most; lists
longer than `max_df_share` of the index (common.match.presets.FIXED) are skipped outright.

Exactness: `WordIndex.scores` equals brute-force weighted counting over the snapshot's current
rows. Rows appended or overwritten since the build form a delta counted directly; the index
rebuilds itself when the delta grows.
"""

from __future__ import annotations

import weakref
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from common.index.snapshot import Snapshot
from common.match.presets import FIXED

WORDS = 64  # words stored per product: the strongest keypoints, one word each
WORD_BITS = 16
COLUMNS = tuple(f"orbwords{i}@1" for i in range(WORDS // 4))  # 4 x 16-bit words per 64-bit column
# Descriptor bits that form a word (drawn once, uniformly; fixed: changing them needs a new @version).
BITS = np.array([75, 154, 124, 10, 186, 253, 203, 230, 205, 18, 247, 65, 127, 4, 43, 163])
_SPACE = 1 << WORD_BITS
_WEIGHTS = 1 << np.arange(WORD_BITS - 1, -1, -1, dtype=np.int64)


def words_of(descriptors: np.ndarray, bits_at: np.ndarray = BITS) -> np.ndarray:
    """16-bit words (uint16) of ORB descriptors (n, 32) uint8, in the same order. `bits_at`: where the
    word's bits sit in them (verify.STORED_WORD_BITS for descriptors as the inventory stores them)."""
    if len(descriptors) == 0:
        return np.zeros(0, np.uint16)
    bits = np.unpackbits(np.ascontiguousarray(descriptors, dtype=np.uint8), axis=1)[:, bits_at]
    return (bits @ _WEIGHTS).astype(np.uint16)


def pack_words(words: np.ndarray) -> dict[str, bytes]:
    """The stored columns for one product: its first WORDS distinct words, padded by repeating the
    first one (a repeat of slot 0 marks padding, so every stored word is distinct)."""
    _, first = np.unique(words, return_index=True)
    distinct = words[np.sort(first)][:WORDS]
    slots = np.full(WORDS, distinct[0] if len(distinct) else 0, dtype=">u2")
    slots[: len(distinct)] = distinct
    raw = slots.tobytes()
    return {key: raw[8 * i : 8 * i + 8] for i, key in enumerate(COLUMNS)}


def unpack_columns(columns: list[np.ndarray]) -> np.ndarray:
    """(n, WORDS) uint16 words from the snapshot's uint64 columns (big-endian packing as above)."""
    n = len(columns[0]) if columns else 0
    out = np.empty((n, WORDS), dtype=np.uint16)
    for c, col in enumerate(columns):
        for j in range(4):
            out[:, 4 * c + j] = (col >> np.uint64(48 - 16 * j)) & np.uint64(0xFFFF)
    return out


def _valid(words: np.ndarray) -> npt.NDArray[np.bool_]:
    """Mask of real (non-padding) slots: a later slot equal to slot 0 is padding."""
    ok: npt.NDArray[np.bool_] = words != words[:, :1]
    ok[:, 0] = True
    return ok


@dataclass
class _Built:
    indptr: np.ndarray  # (65537,) int64: rows of word w are rows[indptr[w]:indptr[w+1]]
    rows: np.ndarray  # uint32 row numbers, grouped by word
    n_built: int
    fold: np.ndarray  # per built row: a checksum of its words, to notice in-place overwrites
    dirty: np.ndarray  # bool per built row: overwritten since the build (its postings are stale)
    version: int
    ids_ref: list[str]
    n_docs: int = 0  # live rows at the build (dead rows of removed products hold no postings)


def _fold(columns: list[np.ndarray]) -> np.ndarray:
    acc = np.zeros(len(columns[0]), dtype=np.uint64)
    for i, col in enumerate(columns):
        acc ^= (col << np.uint64(i)) | (col >> np.uint64(64 - i)) if i else col.copy()
    return acc


class WordIndex:
    """Inverted index word -> rows over a Snapshot's word columns, kept current as the snapshot changes."""

    def __init__(self, snap: Snapshot) -> None:
        self._snap = weakref.ref(snap)
        self._built: _Built | None = None
        self._delta: np.ndarray = np.zeros(0, np.int64)  # rows counted by brute force

    def _columns(self, snap: Snapshot, lo: int = 0, hi: int | None = None) -> list[np.ndarray]:
        return [snap.column(k)[lo:hi] for k in COLUMNS]

    def _build(self, snap: Snapshot) -> _Built:
        n = len(snap)
        cols = self._columns(snap)
        words = unpack_columns(cols)
        ok = _valid(words)
        if snap.n_dead:
            ok &= ~snap.dead_mask()[:n, None]
        flat = words[ok]
        row_of = np.broadcast_to(np.arange(n, dtype=np.uint32)[:, None], words.shape)[ok]
        order = np.argsort(flat, kind="stable")  # 16-bit keys: numpy radix-sorts these
        counts = np.bincount(flat, minlength=_SPACE)
        indptr = np.zeros(_SPACE + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        self._built = built = _Built(
            indptr, row_of[order], n, _fold(cols), np.zeros(n, bool), snap.version, snap.ids, snap.live_count
        )
        self._delta = np.zeros(0, np.int64)
        return built

    def _refresh(self, snap: Snapshot) -> _Built:
        """Bring the index to the snapshot's current state (appends and overwrites since the last call)."""
        b = self._built
        n = len(snap)
        if b is None or b.ids_ref is not snap.ids or n < b.n_built:
            return self._build(snap)  # first use, or a bulk reload replaced every row
        if snap.version == b.version and n == b.n_built + int(np.sum(self._delta >= b.n_built)):
            return b
        appended = np.arange(b.n_built, n, dtype=np.int64)
        # The index store bumps the version once per written product: when the bumps equal the
        # appended rows nothing was overwritten, and the O(n) checksum pass is skipped.
        known_appended = int(np.sum(self._delta >= b.n_built))
        if snap.version - b.version != len(appended) - known_appended or snap.version < b.version:
            fold = _fold(self._columns(snap, 0, b.n_built))
            changed = np.flatnonzero((fold != b.fold) & ~b.dirty)
            b.dirty[changed] = True
            overwritten = np.flatnonzero(b.dirty)
        else:
            overwritten = self._delta[self._delta < b.n_built]
        self._delta = np.concatenate([overwritten, appended])
        b.version = snap.version
        if len(self._delta) > 4096 + n // 64:  # counting the delta directly now costs more than a rebuild
            return self._build(snap)
        return b

    def scores(self, query_words: np.ndarray) -> np.ndarray:
        """IDF-weighted agreement (float64, one per row) of the query's words with every row's words."""
        snap = self._snap()
        if snap is None or not len(snap):
            return np.zeros(0)
        b = self._refresh(snap)
        n = len(snap)
        q = np.unique(query_words.astype(np.int64))
        df = b.indptr[q + 1] - b.indptr[q]
        w_of = self.weights(b, df)
        keep = w_of > 0  # words only in the delta (df 0) keep their (highest) weight for it
        q, df, w_of = q[keep], df[keep], w_of[keep]
        starts = b.indptr[q]
        total = int(df.sum())
        # Gather every posting list at once: position = start of its list + offset within it.
        offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(df) - df, df)
        rows = b.rows[np.repeat(starts, df) + offsets]
        out = np.bincount(rows, weights=np.repeat(w_of, df), minlength=n)[:n]
        if len(self._delta):
            out[self._delta] = self._direct(snap, self._delta, q, w_of)
        return out

    @staticmethod
    def weights(b: _Built, df: np.ndarray) -> np.ndarray:
        """IDF of words with built document frequencies `df`; 0 for lists too common to be evidence."""
        n = max(b.n_docs or b.n_built, 1)
        skip = max(FIXED.min_skip, FIXED.max_df_share * n)
        return np.where(df <= skip, np.log1p(n / np.maximum(df, 1)), 0.0)

    def weight_table(self) -> np.ndarray:
        """Weight of every word value as the next `scores` call uses it (for tests and tuning)."""
        snap = self._snap()
        b = self._refresh(snap) if snap is not None and len(snap) else None
        if b is None:
            return np.zeros(_SPACE)
        return self.weights(b, np.diff(b.indptr))

    def _direct(self, snap: Snapshot, rows: np.ndarray, q: np.ndarray, w_of: np.ndarray) -> np.ndarray:
        """Weighted agreement of `rows` counted straight from their current words."""
        words = unpack_columns([snap.column(k)[rows] for k in COLUMNS])
        table = np.zeros(_SPACE)
        table[q] = w_of
        agreement: np.ndarray = (table[words] * _valid(words)).sum(axis=1)
        return agreement

    def top(self, query_words: np.ndarray, m: int, exclude: AbstractSet[int] = frozenset()) -> list[int]:
        """The m rows with the highest score > 0, best first (ties: lower row first)."""
        s = self.scores(query_words)
        if not len(s) or m <= 0:
            return []
        if exclude:
            s[list(exclude)] = 0.0
        # A full argpartition of a million scores costs ~2 ms; the rows with any vote are a fifth
        # of them, and halving a threshold until m survive leaves a few thousand to order.
        nz = np.flatnonzero(s > 0)
        snap = self._snap()
        if snap is not None and snap.n_dead:  # removed products' rows never become candidates
            nz = nz[~snap.dead_mask()[nz]]
        vals = s[nz]
        if len(nz) > m:
            thr = float(vals.max())
            while np.count_nonzero(vals >= thr) < m:
                thr *= 0.5
            keep = np.flatnonzero(vals >= thr)
            nz, vals = nz[keep], vals[keep]
        best = np.lexsort((nz, -vals))[:m]
        return [int(r) for r in nz[best]]


_CACHE: dict[int, tuple[weakref.ref[Snapshot], WordIndex]] = {}


def index_for(snap: Snapshot) -> WordIndex:
    """The word index of this snapshot object (built on first use, current on every later call)."""
    hit = _CACHE.get(id(snap))
    if hit is not None and hit[0]() is snap:
        return hit[1]
    for key in [k for k, (ref, _) in _CACHE.items() if ref() is None]:
        del _CACHE[key]  # snapshots that are gone
    idx = WordIndex(snap)
    _CACHE[id(snap)] = (weakref.ref(snap), idx)
    return idx
