"""Whole-inventory dedup: exact against brute force, shards disjoint and complete, groups right."""

from __future__ import annotations

import numpy as np
import pytest

from common.index import allpairs


def inventory(seed: int, n: int = 1200) -> np.ndarray:
    """Clustered hashes (few bases, few flips), a crowd of identical ones, and uniform ones."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**64 - 1, 25, dtype=np.uint64, endpoint=True)
    h = base[rng.integers(0, 25, n)]
    for _ in range(6):
        on = rng.random(n) < 0.5
        h[on] ^= np.uint64(1) << rng.integers(0, 64, on.sum()).astype(np.uint64)
    h[:150] = h[150]  # a placeholder crowd: one long run of identical hashes
    h[400:600] = rng.integers(0, 2**64 - 1, 200, dtype=np.uint64, endpoint=True)
    return h


def brute_pairs(h: np.ndarray, r: int) -> set[tuple[int, int, int]]:
    d = np.bitwise_count(h[:, None] ^ h[None, :])
    i, j = np.nonzero(np.triu(d <= r, 1))
    return set(zip(i.tolist(), j.tolist(), d[i, j].tolist(), strict=True))


def as_set(i, j, d) -> set[tuple[int, int, int]]:
    out = list(zip(i.tolist(), j.tolist(), d.tolist(), strict=True))
    assert len(out) == len(set(out)), "a pair reported twice"
    return set(out)


@pytest.mark.parametrize("radius", [0, 1, 6, 10])
def test_all_pairs_is_exact(radius):
    h = inventory(radius)
    got = as_set(*allpairs.all_pairs(h, radius))
    assert got == brute_pairs(h, radius)
    assert all(i < j for i, j, _ in got)


@pytest.mark.parametrize("radius", [0, 6, 10])
@pytest.mark.parametrize("n_shards", [1, 3, 8])
def test_shards_are_disjoint_and_their_union_is_the_whole(radius, n_shards):
    # Given the plan for a large inventory (k > 1: several combos own pairs) applied to a small one
    h = inventory(100 + radius, n=800)
    plan = allpairs.shard_plan(n_shards, radius, n=10_000_000 if radius <= 6 else 20_000)
    assert len(plan) == n_shards
    # When each shard runs on its own
    union: list[tuple[int, int, int]] = []
    for shard in plan:
        union += list(as_set(*allpairs.pairs_for_shard(h, radius, shard, expand_duplicates=True)))
    # Then no pair appears twice and together they are exactly brute force
    assert len(union) == len(set(union))
    assert set(union) == brute_pairs(h, radius)


def test_compact_form_gives_the_same_groups_with_fewer_pairs():
    h = inventory(7)
    full = allpairs.all_pairs(h, 6)
    compact = allpairs.all_pairs(h, 6, expand_duplicates=False)
    assert len(compact[0]) < len(full[0])
    assert allpairs.groups(len(h), compact[0], compact[1]) == allpairs.groups(len(h), full[0], full[1])
    np.testing.assert_array_equal(
        allpairs.labels(len(h), compact[0], compact[1]), allpairs.labels(len(h), full[0], full[1])
    )


def test_groups_union_find():
    # 0-1-2 chain, 5-7, 4 and 3 and 6 alone
    i = np.array([1, 2, 7])
    j = np.array([0, 1, 5])
    assert allpairs.groups(8, i, j) == [[0, 1, 2], [5, 7]]
    assert allpairs.labels(8, i, j).tolist() == [0, 0, 0, 3, 4, 5, 6, 5]
    assert allpairs.groups(3, np.array([], dtype=np.int64), np.array([], dtype=np.int64)) == []
    # a long chain needs many hook rounds: still one group
    n = 5000
    perm = np.random.default_rng(0).permutation(n)
    assert allpairs.groups(n, perm[:-1], perm[1:]) == [list(range(n))]


def test_edge_cases():
    for h in (np.zeros(0, dtype=np.uint64), np.array([5], dtype=np.uint64)):
        i, j, d = allpairs.all_pairs(h, 6)
        assert len(i) == len(j) == len(d) == 0
    i, j, d = allpairs.all_pairs(np.array([3, 3, 3], dtype=np.uint64), 0)
    assert as_set(i, j, d) == {(0, 1, 0), (0, 2, 0), (1, 2, 0)}
    with pytest.raises(ValueError):
        allpairs.pairs_for_shard(np.zeros(3, dtype=np.uint64), 4, allpairs.shard_plan(1, 6)[0])
