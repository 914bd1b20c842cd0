"""Vectorised Hamming scans over uint64 signatures (never a per-row Python loop).

Two exact methods:

* brute force: XOR + popcount over the whole column (``scan``), ~0.4 ns per row here;
* multi-index hashing (``MultiIndex``): the 64 bits are cut into m blocks; by the generalised
  pigeonhole principle, if d(a, b) <= r and block i is given a sub-radius s_i with
  sum(s_i + 1) >= r + 1, then at least one block i has d_i(a, b) <= s_i. Each block is a CSR
  bucket table (hashes sorted by block value + offsets), so a probe is a contiguous slice of the
  hashes themselves: no random gather per candidate. Every candidate is then verified with the
  full 64-bit distance, so results are exact; duplicates across blocks are removed.

Which m (and sub-radii) to use depends on r and N: ``plan_for`` picks the cheapest by a cost model
fitted on this machine, and says when brute force is cheaper.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np
import numpy.typing as npt

BITS = 64
_EMPTY_ROWS = np.zeros(0, dtype=np.int64)
_EMPTY_DIST = np.zeros(0, dtype=np.uint8)

# Cost model (nanoseconds), fitted on the 2-core dev VM (benchmarks/bench_scan.py prints the real
# figures). Only ratios matter: it decides m and brute-force vs MIH, never correctness.
NS_PER_ROW_BRUTE = 0.45
NS_PER_ROW_GATHERED = 2.5  # brute force over rows picked by index (a delta of overwritten rows)
_NS_FIXED_MIH = 17_000.0
_NS_PER_PROBE = 15.0
_NS_PER_CANDIDATE = 2.5
_MAX_BLOCK_BITS = 22  # offsets table of 2**22 entries per block (16 MB as int32) at most


def distances(index: np.ndarray, query: int) -> npt.NDArray[np.uint8]:
    """Hamming distance from `query` to every row of `index` (uint64 array)."""
    dist: npt.NDArray[np.uint8] = np.bitwise_count(index ^ np.uint64(query)).astype(np.uint8)
    return dist


# Brute force runs over the column in blocks of this many rows, its temporaries (XOR, popcount,
# mask: 640 KB) reused and kept in cache: 1.07 -> 0.70 ms at 1M rows, 5.2 -> 2.7 ms at 4M, against
# the whole column at once (whose 8 MB XOR goes out to memory and back), same rows.
_BLOCK_ROWS = 65_536


def scan(index: np.ndarray, query: int, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows within `radius` of `query`: (row positions, distances), unsorted. Brute force."""
    q = np.uint64(query)
    n = len(index)
    if n <= _BLOCK_ROWS:  # one block: the plain expression (3 us at 1,000 rows, the blocked loop 10 us)
        dist = np.bitwise_count(index ^ q)
        rows = np.flatnonzero(dist <= radius)
        return rows, dist[rows].astype(np.uint8)
    xor = np.empty(_BLOCK_ROWS, np.uint64)
    count = np.empty(_BLOCK_ROWS, np.uint8)
    near = np.empty(_BLOCK_ROWS, bool)
    found_rows, found_dist = [], []
    for start in range(0, n, _BLOCK_ROWS):
        block = index[start : start + _BLOCK_ROWS]
        k = len(block)
        np.bitwise_xor(block, q, out=xor[:k])
        np.bitwise_count(xor[:k], out=count[:k])
        np.less_equal(count[:k], radius, out=near[:k])
        hits = np.flatnonzero(near[:k])
        if hits.size:
            found_rows.append(hits + start)
            found_dist.append(count[hits])
    if not found_rows:
        return _EMPTY_ROWS, _EMPTY_DIST
    return np.concatenate(found_rows), np.concatenate(found_dist)


def scan_batch(index: np.ndarray, queries: np.ndarray, radius: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Brute-force `scan` for each query (one pass over `index` per query: memory-bound anyway)."""
    return [scan(index, int(q), radius) for q in np.asarray(queries, dtype=np.uint64)]


def similarity(distance: int, bits: int = BITS) -> float:
    """The original system's similarity percent: (bits - distance) * 100 / bits."""
    return round((bits - distance) * 100.0 / bits, 2)


def distance_for_similarity(percent: float, bits: int = BITS) -> int:
    """Largest distance whose similarity is still >= percent (90 % -> 6 of 64)."""
    return int(np.floor(bits * (100.0 - percent) / 100.0 + 1e-9))


# --------------------------------------------------------------------------------------------------
# Block layout and probe plans


@cache
def block_layout(m: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(widths, shifts) of m blocks covering 64 bits, most significant first, widths as even as possible."""
    base, extra = divmod(BITS, m)
    widths = tuple(base + 1 if i < extra else base for i in range(m))
    shifts = tuple(BITS - sum(widths[: i + 1]) for i in range(m))
    return widths, shifts


@cache
def sub_radii(m: int, radius: int) -> tuple[int, ...]:
    """Per-block sub-radius s_i with sum(s_i + 1) = radius + 1; -1 means the block is not probed."""
    units = [0] * m
    for u in range(radius + 1):
        units[u % m] += 1
    return tuple(u - 1 for u in units)


@cache
def flip_masks(width: int, s: int) -> np.ndarray:
    """All width-bit values with popcount <= s (XOR them onto a block value to probe its s-ball)."""
    if s < 0:
        return np.zeros(0, dtype=np.uint64)
    out = [0]
    for k in range(1, min(s, width) + 1):
        out.extend(sum(1 << b for b in combo) for combo in itertools.combinations(range(width), k))
    return np.array(out, dtype=np.uint64)


def ball_size(width: int, s: int) -> int:
    return sum(math.comb(width, k) for k in range(0, min(s, width) + 1)) if s >= 0 else 0


@dataclass(frozen=True)
class Plan:
    """How to answer radius-r queries over n rows: brute force (m == 0) or MIH with m blocks."""

    m: int
    radius: int
    est_ns: float

    @property
    def brute(self) -> bool:
        return self.m == 0


def estimate_mih_ns(n: int, m: int, radius: int) -> float:
    widths, _ = block_layout(m)
    probes = candidates = 0.0
    for w, s in zip(widths, sub_radii(m, radius), strict=True):
        v = ball_size(w, s)
        probes += v
        candidates += v * n / (1 << w)
    return _NS_FIXED_MIH + _NS_PER_PROBE * probes + _NS_PER_CANDIDATE * candidates


@lru_cache(maxsize=4096)
def plan_for(n: int, radius: int, max_m: int = 8) -> Plan:
    """The cheapest exact method for one radius-`radius` query over n uniform-ish rows."""
    brute = Plan(0, radius, NS_PER_ROW_BRUTE * n)
    lo_m = math.ceil(BITS / _MAX_BLOCK_BITS)
    mih = min(
        (
            Plan(m, radius, estimate_mih_ns(n, m, radius))
            for m in range(lo_m, max(lo_m, min(max_m, radius + 1)) + 1)
        ),
        key=lambda p: p.est_ns,
    )
    # Prefer brute force (no tables to build or keep) unless MIH is clearly faster.
    return mih if mih.est_ns < 0.5 * brute.est_ns else brute


@dataclass(frozen=True)
class _Probes:
    """Flattened probes of every block for one (m, radius): one vectorised lookup per query."""

    shift: np.ndarray  # uint64, per probe: shift of its block
    mask: np.ndarray  # uint64, per probe: width mask of its block
    flip: np.ndarray  # uint64, per probe: bits flipped in the block value
    base: np.ndarray  # int64, per probe: where its block's offsets start in the global table
    multi_block: bool  # more than one block probed: a row can be found twice


# --------------------------------------------------------------------------------------------------
# Multi-index hashing


class MultiIndex:
    """Exact radius search over a fixed uint64 array, by multi-index hashing with m blocks.

    Memory: m x (8-byte hash copy + 4-byte row) per row, plus sum(2**w_i + 1) int64 offsets.
    Immutable once built: callers (``Snapshot``) keep a delta for later writes and rebuild.
    """

    def __init__(self, hashes: np.ndarray, m: int) -> None:
        hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
        n = len(hashes)
        if n >= 2**31:
            raise ValueError("MultiIndex holds at most 2**31 - 1 rows")
        self.m = m
        self.n = n
        self.widths, self.shifts = block_layout(m)
        self.sorted_hashes = np.empty(m * n, dtype=np.uint64)
        self.sorted_rows = np.empty(m * n, dtype=np.int32)
        sizes = [(1 << w) + 1 for w in self.widths]
        self.bases = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.offsets = np.empty(sum(sizes), dtype=np.int64)
        rows = np.arange(n, dtype=np.uint64)
        for i, (w, sh) in enumerate(zip(self.widths, self.shifts, strict=True)):
            key = (hashes >> np.uint64(sh)) & np.uint64((1 << w) - 1)
            # One uint64 sort of (key, row) is ~15x faster here than a stable argsort of 21-bit keys.
            packed = np.sort((key << np.uint64(32)) | rows)
            order = (packed & np.uint64(0xFFFFFFFF)).astype(np.int64)
            self.sorted_rows[i * n : (i + 1) * n] = order
            self.sorted_hashes[i * n : (i + 1) * n] = hashes[order]
            counts = np.bincount(key.astype(np.int64), minlength=1 << w)
            off = self.offsets[self.bases[i] : self.bases[i] + sizes[i]]
            off[0] = i * n
            np.cumsum(counts, out=off[1:])
            off[1:] += i * n
        self._probe_cache: dict[int, _Probes] = {}

    @property
    def nbytes(self) -> int:
        return self.sorted_hashes.nbytes + self.sorted_rows.nbytes + self.offsets.nbytes

    def _probes(self, radius: int) -> _Probes:
        p = self._probe_cache.get(radius)
        if p is None:
            shift, mask, flip, base = [], [], [], []
            radii = sub_radii(self.m, radius)
            for i, (w, sh, s) in enumerate(zip(self.widths, self.shifts, radii, strict=True)):
                f = flip_masks(w, s)
                flip.append(f)
                shift.append(np.full(len(f), sh, dtype=np.uint64))
                mask.append(np.full(len(f), (1 << w) - 1, dtype=np.uint64))
                base.append(np.full(len(f), self.bases[i], dtype=np.int64))
            p = _Probes(
                np.concatenate(shift),
                np.concatenate(mask),
                np.concatenate(flip),
                np.concatenate(base),
                sum(s >= 0 for s in radii) > 1,
            )
            self._probe_cache[radius] = p
        return p

    def _ranges(self, queries: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
        """(start, length) of every probed bucket, shape (len(queries), probes)."""
        p = self._probes(radius)
        keys = ((queries[:, None] >> p.shift) & p.mask) ^ p.flip
        g = keys.astype(np.int64) + p.base
        start = self.offsets[g]
        return start, self.offsets[g + 1] - start

    def candidate_count(self, query: int, radius: int) -> int:
        """How many (not necessarily distinct) candidates a query would verify."""
        _, length = self._ranges(np.array([query], dtype=np.uint64), radius)
        return int(length.sum())

    def scan(
        self, query: int, radius: int, max_candidates: int | None = None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(rows, dists) within radius of query, rows ascending; None if over `max_candidates`."""
        q = np.uint64(query)
        start, length = self._ranges(np.array([q]), radius)
        start, length = start[0], length[0]
        total = int(length.sum())
        if max_candidates is not None and total > max_candidates:
            return None  # clustered data: the caller's brute force is cheaper
        if total == 0:
            return _EMPTY_ROWS, _EMPTY_DIST
        ends = np.cumsum(length)
        idx = np.arange(total, dtype=np.int64) + np.repeat(start - (ends - length), length)
        dist = np.bitwise_count(self.sorted_hashes[idx] ^ q)
        hit = np.flatnonzero(dist <= radius)
        rows = self.sorted_rows[idx[hit]].astype(np.int64)
        dist = dist[hit].astype(np.uint8)
        if self._probes(radius).multi_block and len(rows) > 1:
            rows, first = np.unique(rows, return_index=True)
            dist = dist[first]
        else:
            order = np.argsort(rows)
            rows, dist = rows[order], dist[order]
        return rows, dist

    def scan_batch(
        self, queries: np.ndarray, radius: int, max_candidates: int | None = None, chunk: int = 1 << 21
    ) -> list[tuple[np.ndarray, np.ndarray] | None]:
        """`scan` for many queries, vectorised across them; None for a query over `max_candidates`.

        Queries are processed in groups of at most `chunk` candidates, so memory stays bounded."""
        queries = np.ascontiguousarray(queries, dtype=np.uint64)
        out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(queries)
        if len(queries) == 0:
            return out
        start, length = self._ranges(queries, radius)
        per_query = length.sum(axis=1)
        todo = (
            np.arange(len(queries)) if max_candidates is None else np.flatnonzero(per_query <= max_candidates)
        )
        lo = 0
        while lo < len(todo):
            # Largest group from lo whose candidates fit the chunk (always at least one query).
            csum = np.cumsum(per_query[todo[lo:]])
            hi = lo + max(1, int(np.searchsorted(csum, chunk, side="right")))
            sel = todo[lo:hi]
            for q_i, res in zip(
                sel.tolist(), self._verify(queries[sel], start[sel], length[sel], radius), strict=True
            ):
                out[q_i] = res
            lo = hi
        return out

    def _verify(
        self, queries: np.ndarray, start: np.ndarray, length: np.ndarray, radius: int
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        nq = len(queries)
        per_query = length.sum(axis=1)
        start, length = start.ravel(), length.ravel()
        total = int(per_query.sum())
        ends = np.cumsum(length)
        idx = np.arange(total, dtype=np.int64) + np.repeat(start - (ends - length), length)
        dist = np.bitwise_count(self.sorted_hashes[idx] ^ np.repeat(queries, per_query))
        hit = np.flatnonzero(dist <= radius)
        qid = np.searchsorted(np.cumsum(per_query), hit, side="right")
        # (query, row) pairs as one int64 key: sorting it dedupes and groups by query at once.
        key = qid * self.n + self.sorted_rows[idx[hit]]
        dist = dist[hit].astype(np.uint8)
        key, first = np.unique(key, return_index=True)
        dist = dist[first]
        q_of = key // max(self.n, 1)
        rows = key - q_of * self.n
        cuts = np.searchsorted(q_of, np.arange(1, nq))
        return list(zip(np.split(rows, cuts), np.split(dist, cuts), strict=True))
