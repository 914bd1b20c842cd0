"""Exactness of the Hamming scans: multi-index hashing must equal brute force, on any data."""

from __future__ import annotations

import numpy as np
import pytest

from common.index import hamming


def random_hashes(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)


def clustered_hashes(rng: np.random.Generator, n: int, bases: int = 20, max_flips: int = 8) -> np.ndarray:
    """Real dHashes are not uniform: a few base values, each copied with a few random bit flips."""
    base = random_hashes(rng, bases)[rng.integers(0, bases, n)]
    flips = np.zeros(n, dtype=np.uint64)
    for _ in range(max_flips):
        on = rng.random(n) < 0.5
        flips[on] ^= np.uint64(1) << rng.integers(0, 64, on.sum()).astype(np.uint64)
    return base ^ flips


def near_queries(rng: np.random.Generator, hashes: np.ndarray, k: int, flips: int) -> np.ndarray:
    q = hashes[rng.integers(0, len(hashes), k)].copy()
    for _ in range(flips):
        q ^= np.uint64(1) << rng.integers(0, 64, k).astype(np.uint64)
    return np.concatenate([q, random_hashes(rng, 4)])


def test_distance_and_similarity_match_the_original():
    assert hamming.similarity(6) == 90.62
    assert hamming.distance_for_similarity(90) == 6
    assert list(hamming.distances(np.array([0, 3, 2**64 - 1], dtype=np.uint64), 1)) == [1, 1, 63]


def test_block_layout_covers_64_bits_and_sub_radii_satisfy_pigeonhole():
    for m in range(1, 12):
        widths, shifts = hamming.block_layout(m)
        assert sum(widths) == 64 and shifts[-1] == 0
        for r in range(0, 16):
            assert sum(s + 1 for s in hamming.sub_radii(m, r)) == r + 1


@pytest.mark.parametrize("n", [1, hamming._BLOCK_ROWS, hamming._BLOCK_ROWS + 1, 3 * hamming._BLOCK_ROWS + 17])
def test_brute_force_in_blocks_equals_the_whole_column_at_once(n):
    """scan walks a long column in blocks: the same rows, in order, and distances as one XOR of it all."""
    rng = np.random.default_rng(n)
    hashes = clustered_hashes(rng, n, bases=3, max_flips=12)
    for q in near_queries(rng, hashes, 6, flips=2):
        full = np.bitwise_count(hashes ^ q)
        for radius in (0, 4, 12, 64):
            rows, dist = hamming.scan(hashes, int(q), radius)
            want = np.flatnonzero(full <= radius)
            assert rows.dtype == np.int64 and dist.dtype == np.uint8
            assert np.array_equal(rows, want) and np.array_equal(dist, full[want])


@pytest.mark.parametrize("data", ["random", "clustered"])
@pytest.mark.parametrize("m", [3, 4, 7])
@pytest.mark.parametrize("radius", [0, 6, 10])
def test_multi_index_equals_brute_force(data, m, radius):
    rng = np.random.default_rng(m * 100 + radius)
    gen = random_hashes if data == "random" else clustered_hashes
    hashes = gen(rng, 3000)
    hashes[:50] = hashes[50:100]  # exact duplicates too
    mi = hamming.MultiIndex(hashes, m)
    queries = near_queries(rng, hashes, 30, flips=radius // 2)
    batch = mi.scan_batch(queries, radius, chunk=5000)  # small chunk: several groups
    for q, got_batch in zip(queries, batch, strict=True):
        want = hamming.scan(hashes, int(q), radius)
        got = mi.scan(int(q), radius)
        for rows, dist in (got, got_batch):
            np.testing.assert_array_equal(rows, want[0])
            np.testing.assert_array_equal(dist, want[1])


def test_multi_index_over_budget_returns_none_and_empty_index_is_fine():
    hashes = np.zeros(1000, dtype=np.uint64)  # one huge bucket
    mi = hamming.MultiIndex(hashes, 4)
    assert mi.scan(0, 6, max_candidates=100) is None
    assert mi.scan_batch(np.array([0, 1], dtype=np.uint64), 6, max_candidates=100) == [None, None]
    empty = hamming.MultiIndex(np.zeros(0, dtype=np.uint64), 4)
    rows, dist = empty.scan(123, 6)
    assert len(rows) == 0 and len(dist) == 0
    assert [len(r) for r, _ in empty.scan_batch(np.array([1, 2], dtype=np.uint64), 6)] == [0, 0]


def test_plan_prefers_brute_force_for_small_indexes_and_mih_for_large():
    assert hamming.plan_for(1000, 6).brute
    assert not hamming.plan_for(1_000_000, 6).brute
