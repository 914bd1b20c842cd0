"""Snapshot scans: exact on every path (brute force, MIH tables, delta after writes, rebuild)."""

from __future__ import annotations

import numpy as np
import pytest

from common.index import hamming
from common.index.snapshot import Snapshot
from common.signals.signatures import pack64

KEY = "dhash64@1"


@pytest.fixture
def force_mih(monkeypatch):
    """MIH only pays off at ~100k rows; force it at test sizes so the table path is exercised."""
    monkeypatch.setattr(hamming, "plan_for", lambda n, radius, max_m=8: hamming.Plan(4, radius, 2000.0))


def make(n: int, seed: int = 0, clustered: bool = False) -> tuple[Snapshot, np.ndarray]:
    rng = np.random.default_rng(seed)
    if clustered:
        hashes = rng.integers(0, 2**64 - 1, 10, dtype=np.uint64, endpoint=True)[rng.integers(0, 10, n)]
        hashes ^= np.uint64(1) << rng.integers(0, 64, n).astype(np.uint64)
    else:
        hashes = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    snap = Snapshot(signal_keys=(KEY,))
    snap.load_arrays([f"p{i}" for i in range(n)], {KEY: hashes}, version=1)
    return snap, hashes


def check_exact(snap: Snapshot, queries, radius: int) -> None:
    col = snap.column(KEY)
    batch = snap.scan_batch(KEY, np.asarray(queries, dtype=np.uint64), radius)
    for q, got_batch in zip(queries, batch, strict=True):
        want = hamming.scan(col, int(q), radius)
        for rows, dist in (snap.scan(KEY, int(q), radius), got_batch):
            np.testing.assert_array_equal(rows, want[0])
            np.testing.assert_array_equal(dist, want[1])


def flipped(value: int, *bits: int) -> int:
    for b in bits:
        value ^= 1 << b
    return value


@pytest.mark.parametrize("clustered", [False, True])
@pytest.mark.parametrize("radius", [0, 6, 10])
def test_scan_equals_brute_force_on_tables(force_mih, radius, clustered):
    snap, hashes = make(2000, seed=radius, clustered=clustered)
    queries = [flipped(int(h), 1, 30, 60) for h in hashes[:20]] + [int(hashes[5]), 12345]
    check_exact(snap, queries, radius)


def test_unforced_plan_brute_force_path_is_exact():
    snap, hashes = make(500)
    check_exact(snap, [int(hashes[3]), flipped(int(hashes[7]), 2, 9)], 6)


def test_writes_are_visible_to_the_next_scan_without_rebuild(force_mih):
    # Given a snapshot whose tables are built
    snap, hashes = make(3000, seed=7)
    snap.prepare(KEY, 6)
    tables_before = dict(snap._tables)
    # When a new product is added and an existing one changes its hash
    new_value = flipped(int(hashes[10]), 3)
    old_value_of_p20 = int(hashes[20])
    replacement = flipped(int(hashes[30]), 5, 6)
    snap.apply([("new", {KEY: pack64(new_value)}), ("p20", {KEY: pack64(replacement)})], version=2)
    # Then scans see both at once, from the same tables plus the delta
    rows, dist = snap.scan(KEY, int(hashes[10]), 6)
    assert snap.rows["new"] in rows.tolist()
    rows, _ = snap.scan(KEY, old_value_of_p20, 0)
    assert snap.rows["p20"] not in rows.tolist()  # the stale table entry is masked
    rows, _ = snap.scan(KEY, int(hashes[30]), 2)
    assert snap.rows["p20"] in rows.tolist()
    assert snap._tables == tables_before
    assert snap.version == 2
    check_exact(snap, [int(hashes[10]), old_value_of_p20, replacement, int(hashes[30])], 6)


def test_rewriting_the_same_value_is_not_reported_twice(force_mih):
    snap, hashes = make(1000, seed=3)
    snap.prepare(KEY, 6)
    snap.apply([("p5", {KEY: pack64(int(hashes[5]))})], version=2)
    check_exact(snap, [int(hashes[5])], 6)


def test_large_delta_triggers_a_rebuild_and_stays_exact(force_mih):
    snap, hashes = make(1000, seed=4)
    snap.prepare(KEY, 6)
    rng = np.random.default_rng(9)
    extra = rng.integers(0, 2**64 - 1, 12000, dtype=np.uint64, endpoint=True)
    snap.apply(((f"x{i}", {KEY: pack64(int(v))}) for i, v in enumerate(extra)), version=3)
    snap.apply(((f"p{i}", {KEY: pack64(int(extra[i]))}) for i in range(200)), version=4)
    check_exact(snap, [int(extra[0]), int(hashes[0]), int(extra[11999])], 6)
    (t,) = snap._tables.values()
    assert t.n_built == len(snap)  # rebuilt once the delta cost more than the tables
    snap.apply([("p1", {KEY: pack64(7)})], version=5)
    snap.compact()
    check_exact(snap, [7, int(extra[1])], 6)


def test_empty_snapshot_and_incremental_start(force_mih):
    snap = Snapshot(signal_keys=(KEY,))
    assert snap.scan(KEY, 1, 6)[0].size == 0
    assert [r.size for r, _ in snap.scan_batch(KEY, np.array([1, 2], dtype=np.uint64), 6)] == [0, 0]
    snap.apply([("a", {KEY: pack64(1)}), ("b", {KEY: pack64(2**64 - 1)}), ("c", {"other@1": b"x" * 8})], 1)
    assert len(snap) == 2
    rows, dist = snap.scan(KEY, 3, 6)
    assert rows.tolist() == [0] and dist.tolist() == [1]


def test_load_from_packed_bytes_equals_load_arrays():
    values = [0, 1, 2**64 - 1, 0x0123456789ABCDEF]
    a = Snapshot(signal_keys=(KEY,))
    a.load([f"p{i}" for i in range(4)], {KEY: [pack64(v) for v in values]}, version=5)
    b = Snapshot(signal_keys=(KEY,))
    b.load_arrays([f"p{i}" for i in range(4)], {KEY: np.array(values, dtype=np.uint64)}, version=5)
    np.testing.assert_array_equal(a.column(KEY), b.column(KEY))
    assert a.rows == b.rows and a.version == b.version == 5
    with pytest.raises(ValueError):
        b.load_arrays(["x", "x"], {KEY: np.array([1, 2], dtype=np.uint64)}, version=6)
