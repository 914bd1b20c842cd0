"""Whole-inventory dedup: every pair of uint64 hashes within Hamming radius r, and the groups they form.

Exact, by the k-of-m pigeonhole: cut 64 bits into m = r + k blocks. A pair at distance <= r differs
in at most r blocks, so it agrees exactly on at least k of them. For each k-subset ("combo") of
blocks, sort the hashes by those blocks packed into one key; pairs agreeing on the combo are then
neighbours in equal-key runs, and each is verified with the full 64-bit popcount. A pair agreeing
on several combos is kept only by its *owner*, the combo made of its first k agreeing blocks, so
combos (and shards) produce disjoint outputs and nothing has to be deduped globally.

Robustness on clustered data:
* exact duplicates are collapsed first (one representative per value); they are reported as groups
  and expanded into pairs only on request;
* runs are processed with a loop over offsets whose length is bounded (``_SMALL_RUN``); longer runs
  are compared block-wise in dense chunks of bounded memory. Work stays proportional to the
  candidate pairs, which on clustered data is of the order of the output.

Work splits into independent shards (``shard_plan``): a shard is a set of (combo, key-range part)
units; any process can run ``pairs_for_shard`` on the same hash array, and the union of all shards'
pairs is exactly ``all_pairs``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from common.index.hamming import block_layout

_SMALL_RUN = 64  # runs up to this long: offset loop; longer ones: dense chunked comparison
_DENSE_CELLS = 1 << 22  # cells of one dense chunk (32 MB of uint64)
# Cost model in ns, fitted on the dev VM: a sort pass per combo versus the candidate pairs it verifies.
_NS_PER_ROW_PER_COMBO = 20.0
_NS_PER_CANDIDATE = 12.0


@dataclass(frozen=True)
class Config:
    """m blocks, pairs found by agreeing exactly on k of them (m = radius + k)."""

    radius: int
    m: int
    k: int

    @cached_property
    def combos(self) -> tuple[tuple[int, ...], ...]:
        return tuple(itertools.combinations(range(self.m), self.k)) if self.radius > 0 else ()


def choose_config(radius: int, n: int = 1_000_000) -> Config:
    """The k (hence m) with the least estimated time for n uniform-ish hashes."""
    if radius < 0:
        raise ValueError("radius must be >= 0")
    if radius == 0:
        return Config(0, 1, 1)  # exact duplicates only: no combos needed
    best: tuple[float, Config] | None = None
    for k in range(1, 9):
        m = radius + k
        if m > 64:
            break
        widths, _ = block_layout(m)
        key_bits = sum(sorted(widths)[:k])  # the narrowest combo bounds the candidates
        if key_bits > 32:
            break
        combos = math.comb(m, k)
        cost = combos * (n * _NS_PER_ROW_PER_COMBO + _NS_PER_CANDIDATE * n * n / 2.0 ** (key_bits + 1))
        if best is None or cost < best[0]:
            best = (cost, Config(radius, m, k))
    assert best is not None
    return best[1]


@dataclass(frozen=True)
class Shard:
    """A part of the work: (combo, part) units, each the hashes of one combo whose key falls in one
    of `parts` equal key ranges. Shard 0 also reports the exact duplicates."""

    index: int
    config: Config
    parts: int
    units: tuple[tuple[int, int], ...]


def shard_plan(n_shards: int, radius: int, n: int = 1_000_000) -> list[Shard]:
    """Split the dedup of n hashes at `radius` into n_shards independent, roughly equal shards."""
    config = choose_config(radius, n)
    n_combos = max(1, len(config.combos))
    parts = 1
    while n_combos * parts < n_shards:
        parts *= 2
    units = [(c, p) for c in range(len(config.combos)) for p in range(parts)]
    return [Shard(s, config, parts, tuple(units[s::n_shards])) for s in range(n_shards)]


# --------------------------------------------------------------------------------------------------
# Exact duplicates


@dataclass(frozen=True)
class _Groups:
    order: npt.NDArray[np.intp]  # original indices grouped by value
    starts: npt.NDArray[np.intp]  # per distinct value, its group's start in `order`
    counts: npt.NDArray[np.intp]


@dataclass(frozen=True)
class _Unique:
    values: np.ndarray  # uint64, one per distinct hash (not necessarily sorted)
    rep: np.ndarray  # int64: the smallest original index holding that value
    groups: _Groups | None  # None: no duplicates at all


def _unique(hashes: np.ndarray) -> _Unique:
    s = np.sort(hashes)
    if len(s) < 2 or not np.any(s[1:] == s[:-1]):
        # The common case: skip the 10x dearer argsort, keep the rows as they are.
        return _Unique(hashes, np.arange(len(hashes), dtype=np.int64), None)
    order = np.argsort(hashes, kind="stable")  # stable: each group's first entry is its smallest index
    sh = hashes[order]
    new = np.empty(len(sh), dtype=bool)
    new[0] = True
    np.not_equal(sh[1:], sh[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, len(sh)))
    return _Unique(sh[starts], order[starts], _Groups(order, starts, counts))


# --------------------------------------------------------------------------------------------------
# Pairs within runs of a sorted array


def _run_pairs(run_starts: np.ndarray, run_lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (a, b), a < b, positions inside the same run. Only used where every pair is output."""
    out_a, out_b = [], []
    small = run_lens <= _SMALL_RUN
    for a, b in _pairs_by_offset(run_starts[small], run_lens[small]):
        out_a.append(a)
        out_b.append(b)
    for st, ln in zip(run_starts[~small].tolist(), run_lens[~small].tolist(), strict=True):
        a, b = np.triu_indices(ln, 1)
        out_a.append(a + st)
        out_b.append(b + st)
    if not out_a:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(out_a), np.concatenate(out_b)


def _pairs_by_offset(starts: np.ndarray, lens: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every (a, b), a < b, of positions inside the same run, one offset b - a = 1, 2, ... at a time
    (vectorised over all runs: for short runs, where dense comparison would waste work)."""
    pos = np.repeat(starts, lens) + _ramp(lens)
    rem = np.repeat(starts + lens, lens) - pos - 1  # how many later positions share the run
    active, rem = pos[rem >= 1], rem[rem >= 1]
    t = 1
    while len(active):
        yield active, active + t
        t += 1
        more = rem >= t
        active, rem = active[more], rem[more]


def _ramp(lengths: np.ndarray) -> npt.NDArray[np.int64]:
    """concat(arange(l) for l in lengths), vectorised."""
    total = int(lengths.sum())
    ends = np.cumsum(lengths)
    ramp: npt.NDArray[np.int64] = np.arange(total, dtype=np.int64) - np.repeat(ends - lengths, lengths)
    return ramp


# --------------------------------------------------------------------------------------------------
# One unit of work: one combo, one key range


def _zero_block_mask(x: np.ndarray, m: int) -> np.ndarray:
    widths, shifts = block_layout(m)
    z = np.zeros(len(x), dtype=np.int64)
    for b, (w, sh) in enumerate(zip(widths, shifts, strict=True)):
        z |= (((x >> np.uint64(sh)) & np.uint64((1 << w) - 1)) == 0).astype(np.int64) << b
    return z


def _owned(x: np.ndarray, config: Config, combo_mask: int) -> npt.NDArray[np.bool_]:
    """Which pairs (by XOR) belong to this combo: their first k agreeing blocks are exactly it."""
    z = _zero_block_mask(x, config.m)
    first_k = np.zeros_like(z)
    for _ in range(config.k):
        low = z & -z
        first_k |= low
        z ^= low
    owned: npt.NDArray[np.bool_] = first_k == combo_mask
    return owned


def _unit_pairs(
    values: np.ndarray, config: Config, combo_i: int, part: int, parts: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (positions into `values`, a < b not guaranteed) at distance <= r owned by this unit."""
    r = config.radius
    combo = config.combos[combo_i]
    widths, shifts = block_layout(config.m)
    # Pack the combo's blocks into one key (<= 32 bits) above a 32-bit row number: one uint64 sort.
    key = np.zeros(len(values), dtype=np.uint64)
    key_bits = 0
    for b in combo:
        key = (key << np.uint64(widths[b])) | (
            (values >> np.uint64(shifts[b])) & np.uint64((1 << widths[b]) - 1)
        )
        key_bits += widths[b]
    rows = np.arange(len(values), dtype=np.uint64)
    if parts > 1:
        part_bits = parts.bit_length() - 1
        sel = np.flatnonzero((key >> np.uint64(key_bits - part_bits)) == np.uint64(part))
        key, rows = key[sel], rows[sel]
    packed = np.sort((key << np.uint64(32)) | rows)
    del key, rows
    order = (packed & np.uint64(0xFFFFFFFF)).astype(np.int64)
    ks = packed >> np.uint64(32)
    del packed
    n = len(ks)
    if n < 2:
        return (np.zeros(0, dtype=np.int64),) * 2 + (np.zeros(0, dtype=np.uint8),)
    hs = values[order]
    same_next = ks[1:] == ks[:-1]
    del ks
    # Remaining run length after each position, computed from run boundaries.
    new = np.ones(n, dtype=bool)
    new[1:] = ~same_next
    starts = np.flatnonzero(new)
    lens = np.diff(np.append(starts, n))
    multi = lens > 1
    starts, lens = starts[multi], lens[multi]
    combo_mask = sum(1 << b for b in combo)
    out_a, out_b, out_d = [], [], []

    def keep(a: np.ndarray, b: np.ndarray) -> None:
        x = hs[a] ^ hs[b]
        d = np.bitwise_count(x)
        hit = np.flatnonzero(d <= r)
        if len(hit):
            a, b, d, x = a[hit], b[hit], d[hit], x[hit]
            own = _owned(x, config, combo_mask)
            out_a.append(order[a[own]])
            out_b.append(order[b[own]])
            out_d.append(d[own].astype(np.uint8))

    small = lens <= _SMALL_RUN
    if small.any():
        for first, second in _pairs_by_offset(starts[small], lens[small]):
            keep(first, second)
    for st, ln in zip(starts[~small].tolist(), lens[~small].tolist(), strict=True):
        # A long run (clustered data): dense comparisons in chunks of bounded memory.
        seg = hs[st : st + ln]
        step = max(1, _DENSE_CELLS // ln)
        for i0 in range(0, ln - 1, step):
            i1 = min(ln - 1, i0 + step)
            d = np.bitwise_count(seg[i0:i1, None] ^ seg[None, :])
            ii, jj = np.nonzero(d <= r)
            upper = jj > ii + i0
            keep(ii[upper] + i0 + st, jj[upper] + st)
    if not out_a:
        return (np.zeros(0, dtype=np.int64),) * 2 + (np.zeros(0, dtype=np.uint8),)
    return np.concatenate(out_a), np.concatenate(out_b), np.concatenate(out_d)


# --------------------------------------------------------------------------------------------------
# Public API


def _ordered(i: np.ndarray, j: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    return lo.astype(np.int64), hi.astype(np.int64), d.astype(np.uint8)


def _expand(
    u: _Unique, a: np.ndarray, b: np.ndarray, d: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of distinct values -> pairs of every original row holding them."""
    g = u.groups
    if g is None:
        return u.rep[a], u.rep[b], d
    ca, cb = g.counts[a], g.counts[b]
    per = ca * cb
    o = _ramp(per)
    pa, pb, pd = np.repeat(a, per), np.repeat(b, per), np.repeat(d, per)
    cbr = np.repeat(cb, per)
    return g.order[g.starts[pa] + o // cbr], g.order[g.starts[pb] + o % cbr], pd


def _duplicate_pairs(u: _Unique, expand: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows sharing a value: every pair (expand) or a star from the group's representative."""
    g = u.groups
    if g is None:
        z = np.zeros(0, dtype=np.int64)
        return z, z, np.zeros(0, dtype=np.uint8)
    dup = g.counts > 1
    starts, counts = g.starts[dup], g.counts[dup]
    if expand:
        a, b = _run_pairs(starts, counts)
    else:
        b = np.repeat(starts, counts - 1) + _ramp(counts - 1) + 1
        a = np.repeat(starts, counts - 1)
    return g.order[a], g.order[b], np.zeros(len(a), dtype=np.uint8)


def pairs_for_shard(
    hashes: np.ndarray, radius: int, shard: Shard, *, expand_duplicates: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """This shard's pairs (i < j original indices, distance uint8). Disjoint from every other shard's.

    With expand_duplicates=False, rows sharing an identical hash appear through their representative
    (smallest index) plus a star of distance-0 pairs (representative, row): enough for groups, and
    bounded even when thousands of rows share one hash."""
    if shard.config.radius != radius:
        raise ValueError(f"shard planned for radius {shard.config.radius}, asked for {radius}")
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    if len(hashes) >= 2**32:
        raise ValueError("at most 2**32 - 1 hashes")
    u = _unique(hashes)
    parts_i: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
    parts_j: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
    parts_d: list[np.ndarray] = [np.zeros(0, dtype=np.uint8)]
    if shard.index == 0:
        a, b, d = _duplicate_pairs(u, expand_duplicates)
        parts_i.append(a)
        parts_j.append(b)
        parts_d.append(d)
    for combo_i, part in shard.units:
        a, b, d = _unit_pairs(u.values, shard.config, combo_i, part, shard.parts)
        a, b, d = _expand(u, a, b, d) if expand_duplicates else (u.rep[a], u.rep[b], d)
        parts_i.append(a)
        parts_j.append(b)
        parts_d.append(d)
    return _ordered(np.concatenate(parts_i), np.concatenate(parts_j), np.concatenate(parts_d))


def all_pairs(
    hashes: np.ndarray, radius: int, *, expand_duplicates: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (i < j, distance) of rows within `radius`: exact. See pairs_for_shard for the
    compact form (expand_duplicates=False) that keeps identical-hash crowds linear."""
    (shard,) = shard_plan(1, radius, len(hashes))
    return pairs_for_shard(hashes, radius, shard, expand_duplicates=expand_duplicates)


def labels(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected components of the pair graph: per row, the smallest row index of its group.

    Vectorised hook-and-compress (each round hooks roots onto smaller roots, then pointer-jumps), so
    a million edges take a few rounds of numpy, not a Python union-find loop."""
    parent = np.arange(n, dtype=np.int64)
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    while len(i):
        pi, pj = parent[i], parent[j]
        lo, hi = np.minimum(pi, pj), np.maximum(pi, pj)
        live = lo != hi
        if not live.any():
            break
        i, j, lo, hi = i[live], j[live], lo[live], hi[live]
        np.minimum.at(parent, hi, lo)  # hi is a root (parents are fully compressed): no cycles
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    return parent


def groups(n: int, i: np.ndarray, j: np.ndarray) -> list[list[int]]:
    """Groups of two or more rows linked by pairs, each sorted, ordered by their smallest row."""
    lab = labels(n, i, j)
    order = np.argsort(lab, kind="stable")
    sl = lab[order]
    cuts = np.flatnonzero(sl[1:] != sl[:-1]) + 1
    return [g.tolist() for g in np.split(order, cuts) if len(g) > 1]


# --------------------------------------------------------------------------------------------------
# Wire format of one shard's pairs (workers -> producer, through Redis): packed records, not JSON,
# because a shard can hold millions of pairs.

PAIR_RECORD = np.dtype([("i", "<u4"), ("j", "<u4"), ("d", "u1"), ("stage", "u1")])
STAGES = ("dhash", "exact", "pdq", "orb", "mirror")  # stage code -> the signal that confirmed the pair
# ("mirror": the PDQ of one product's mirror is near the other's: a mirrored upload)
# A dedup `columns` entry "A~B": pairs of rows whose A hash is near the other's B hash (the primary
# dHash against the stored mirror's: mirrored uploads).
MIRROR_SEP = "~"
