"""Snapshot removal and row reuse: removed products never come back from a scan (brute force, MIH
tables, delta), reused rows hold their new product, and churn does not grow the rows."""

from __future__ import annotations

import numpy as np
import pytest

from common.index import hamming, orb_words
from common.index.snapshot import Snapshot
from common.signals.signatures import pack64

KEY = "dhash64@1"


@pytest.fixture
def force_mih(monkeypatch):
    monkeypatch.setattr(hamming, "plan_for", lambda n, radius, max_m=8: hamming.Plan(4, radius, 2000.0))


def make(n: int, seed: int = 0) -> tuple[Snapshot, np.ndarray]:
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    snap = Snapshot(signal_keys=(KEY,))
    snap.load_arrays([f"p{i}" for i in range(n)], {KEY: hashes}, version=1)
    return snap, hashes


def live_brute(snap: Snapshot, query: int, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force over the live rows only: what every scan must return."""
    rows, dist = hamming.scan(snap.column(KEY), query, radius)
    keep = ~snap.dead_mask()[rows]
    return rows[keep], dist[keep]


def check_exact(snap: Snapshot, queries: list[int], radius: int) -> None:
    batch = snap.scan_batch(KEY, np.asarray(queries, dtype=np.uint64), radius)
    for q, got_batch in zip(queries, batch, strict=True):
        want = live_brute(snap, q, radius)
        for rows, dist in (snap.scan(KEY, q, radius), got_batch):
            np.testing.assert_array_equal(rows, want[0])
            np.testing.assert_array_equal(dist, want[1])


@pytest.mark.parametrize("mih", [False, True])
def test_removed_products_leave_every_scan(request, mih):
    if mih:
        request.getfixturevalue("force_mih")
    # Given a snapshot whose tables are built (a scan), then 300 of its products removed
    snap, hashes = make(2000, seed=1)
    snap.scan(KEY, int(hashes[0]), 6)
    removed = [f"p{i}" for i in range(0, 600, 2)]
    assert snap.remove(removed, version=2) == 300
    # When the removed products' own hashes are queried
    queries = [int(hashes[i]) for i in range(0, 40)]
    # Then no scan returns a removed row, every live one is still found, and counts follow
    for i, q in enumerate(queries):
        rows, dist = snap.scan(KEY, q, 0)
        assert (i in rows.tolist()) == (i % 2 == 1)
    check_exact(snap, queries, 6)
    assert snap.live_count == 1700 and len(snap) == 2000 and snap.n_dead == 300
    assert all(f"p{i}" not in snap.rows for i in range(0, 600, 2))
    assert snap.remove(["p0", "nope"], version=3) == 0  # already gone, unknown: nothing to do


@pytest.mark.parametrize("mih", [False, True])
def test_reused_rows_hold_their_new_product(request, mih):
    if mih:
        request.getfixturevalue("force_mih")
    snap, hashes = make(1000, seed=2)
    snap.scan(KEY, 1, 6)  # build tables
    snap.remove(["p10", "p20"], version=2)
    # When new products are placed at the freed rows (as the store hands them out) and one beyond
    fresh = {"n1": (10, 0xABCDEF), "n2": (20, 0x123456789), "n3": (1003, 0x55)}
    snap.place([(pid, row, {KEY: pack64(v)}) for pid, (row, v) in fresh.items()], version=5)
    # Then each is found at its row under its own id; the gap rows before row 1003 are dead
    for pid, (row, v) in fresh.items():
        rows, _ = snap.scan(KEY, v, 0)
        assert row in rows.tolist() and snap.ids[row] == pid and snap.rows[pid] == row
    assert snap.ids[1000] == "" and snap.ids[1001] == "" and snap.n_dead == 3
    assert 10 not in snap.scan(KEY, int(hashes[10]), 0)[0].tolist()  # the removed product's hash
    check_exact(snap, [int(hashes[i]) for i in range(30)] + [0xABCDEF, 0x55], 6)
    assert snap.version == 5


def test_place_evicts_a_product_whose_row_was_taken_and_moves_one_that_moved():
    snap, _ = make(10)
    # Row 3 now belongs to "new" in the store (p3 was removed there): p3 leaves the snapshot
    snap.place([("new", 3, {KEY: pack64(7)})], version=2)
    assert "p3" not in snap.rows and snap.rows["new"] == 3
    # p5 re-indexed at row 12: its old row dies
    snap.place([("p5", 12, {KEY: pack64(9)})], version=3)
    assert snap.rows["p5"] == 12 and snap.ids[5] == "" and snap.dead_mask()[5]


def test_bulk_load_with_free_rows_and_churn_does_not_grow():
    # Given a bulk load whose free rows are "" (as IndexStore.bulk gives them)
    snap = Snapshot(signal_keys=(KEY,))
    values = np.zeros(6, dtype=np.uint64)  # free rows hold zeroed bytes in Redis
    snap.load_arrays(["a", "", "b", "", "", "c"], {KEY: values}, version=9)
    assert snap.live_count == 3 and snap.n_dead == 3
    # the zeroed free rows are not a crowd at value 0, and never answered
    rows, _ = snap.scan(KEY, 0, 0)
    assert sorted(snap.ids[r] for r in rows) == ["a", "b", "c"]
    assert len(set(snap.column(KEY)[[1, 3, 4]].tolist())) == 3
    # When products churn through the free rows, the row count stays put
    for k in range(30):
        free = int(np.flatnonzero(snap.dead_mask())[0])
        snap.place([(f"x{k}", free, {KEY: pack64(k + 1)})], version=10 + 2 * k)
        snap.remove([f"x{k}"], version=11 + 2 * k)
    assert len(snap) == 6 and snap.live_count == 3
    with pytest.raises(ValueError, match="duplicate"):
        snap.load_arrays(["a", "a"], {KEY: np.zeros(2, np.uint64)}, version=1)


def test_live_rows_skip_dead_ones():
    snap, _ = make(8)
    snap.remove(["p1", "p6"], version=2)
    assert snap.live_rows().tolist() == [0, 2, 3, 4, 5, 7]
    assert snap.live_rows(4).tolist() == [0, 2, 3]


def test_word_index_never_proposes_removed_products():
    # Given a word index built over 300 products, two of them with the query's words
    rng = np.random.default_rng(5)
    rows = [rng.choice(60000, size=64, replace=False) for _ in range(300)]
    query = rows[7][:40]
    rows[8] = np.concatenate([query, rng.choice(60000, size=24, replace=False)])
    snap = Snapshot(orb_words.COLUMNS)
    packed = [orb_words.pack_words(w.astype(np.uint16)) for w in rows]
    ids = [f"p{i:03d}" for i in range(300)]
    snap.load(ids, {k: [p[k] for p in packed] for k in orb_words.COLUMNS}, version=1)
    index = orb_words.index_for(snap)
    assert set(index.top(query.astype(np.uint16), 2)) == {7, 8}
    # When one is removed, and its row reused by an unrelated product
    snap.remove(["p007"], version=2)
    assert 7 not in index.top(query.astype(np.uint16), 5) and 8 in index.top(query.astype(np.uint16), 5)
    other = orb_words.pack_words(rng.choice(60000, size=64, replace=False).astype(np.uint16))
    snap.place([("fresh", 7, other)], version=3)
    # Then the word index follows: the removed product is gone, the new one is scored on its own words
    top = index.top(query.astype(np.uint16), 5)
    assert top[0] == 8 and 7 not in top
    fresh_words = orb_words.unpack_columns([np.array([snap.column(k)[7]]) for k in orb_words.COLUMNS])[0]
    assert index.top(fresh_words, 1) == [7]
