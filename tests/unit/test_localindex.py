"""Local-feature word index: exact against brute-force counting, current after appends and overwrites."""

from __future__ import annotations

import numpy as np
import pytest

from common.index import orb_words
from common.index.snapshot import Snapshot
from common.signals.signatures import pack64

KEYS = orb_words.COLUMNS


def _product(words: np.ndarray) -> dict[str, bytes]:
    return orb_words.pack_words(words.astype(np.uint16))


def _snapshot(rows: list[np.ndarray]) -> Snapshot:
    snap = Snapshot(KEYS)
    ids = [f"p{i:05d}" for i in range(len(rows))]
    packed = [_product(w) for w in rows]
    snap.load(ids, {k: [p[k] for p in packed] for k in KEYS}, version=1)
    return snap


def _brute(snap: Snapshot, index: orb_words.WordIndex, query: np.ndarray) -> np.ndarray:
    """Weighted agreement recomputed row by row from the snapshot's current columns."""
    table = index.weight_table()
    words = orb_words.unpack_columns([snap.column(k) for k in KEYS])
    q = set(np.unique(query).tolist())
    out = np.zeros(len(snap))
    for r, row in enumerate(words):
        distinct = {int(row[0])} | {int(w) for w in row[1:] if w != row[0]}
        out[r] = sum(table[w] for w in distinct if w in q)
    return out


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(5)


def _rows(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    # A small word alphabet so postings are long and rows share words, plus a few short rows (padding).
    rows = [rng.choice(3000, size=orb_words.WORDS, replace=False) for _ in range(n)]
    rows[3] = rows[3][:5]
    rows[4] = np.zeros(0, np.int64)
    return rows


def test_pack_round_trip_and_padding() -> None:
    words = np.array([7, 9, 7, 11], dtype=np.uint16)  # a repeat is dropped, the rest padded with slot 0
    cols = orb_words.pack_words(words)
    assert list(cols) == list(KEYS) and all(len(v) == 8 for v in cols.values())
    snap = Snapshot(KEYS)
    snap.load(["a"], {k: [cols[k]] for k in KEYS}, version=1)
    back = orb_words.unpack_columns([snap.column(k) for k in KEYS])[0]
    assert back[:3].tolist() == [7, 9, 11] and set(back[3:].tolist()) == {7}


def test_words_are_fixed_bit_subsets() -> None:
    desc = np.zeros((2, 32), np.uint8)
    desc[1, orb_words.BITS[0] // 8] = 0x80 >> (orb_words.BITS[0] % 8)  # first chosen bit -> MSB
    assert orb_words.words_of(desc).tolist() == [0, 0x8000]


def test_scores_equal_brute_force(rng: np.random.Generator) -> None:
    snap = _snapshot(_rows(rng, 300))
    index = orb_words.WordIndex(snap)
    for _ in range(5):
        query = rng.choice(3000, size=256, replace=False).astype(np.uint16)
        assert np.allclose(index.scores(query), _brute(snap, index, query))


def test_top_ranks_the_row_sharing_most_words(rng: np.random.Generator) -> None:
    rows = _rows(rng, 300)
    snap = _snapshot(rows)
    query = np.concatenate([rows[42][:30], rng.choice(3000, size=200)]).astype(np.uint16)
    top = orb_words.index_for(snap).top(query, 5)
    assert top[0] == 42 and len(top) == 5
    assert orb_words.index_for(snap).top(query, 5, exclude={42})[0] != 42
    assert orb_words.index_for(snap) is orb_words.index_for(snap)


def test_appends_and_overwrites_are_visible_to_the_next_query(rng: np.random.Generator) -> None:
    # Given an index built on 300 rows
    snap = _snapshot(_rows(rng, 300))
    index = orb_words.index_for(snap)
    fresh = rng.choice(np.arange(50_000, 60_000), size=orb_words.WORDS, replace=False)
    assert index.top(fresh[:20], 1) == []
    # When a new product is appended (one version bump, as the index store writes)
    snap.apply([("new", _product(fresh))], version=2)
    # Then the next query finds it, and scores stay exact
    assert index.top(fresh[:20], 1) == [300]
    # When an existing row is overwritten in place with the same words as the new product
    snap.apply([("p00007", _product(fresh))], version=3)
    query = np.concatenate([fresh[:20], rng.choice(3000, size=100)]).astype(np.uint16)
    assert sorted(index.top(query, 2)) == [7, 300]
    assert np.allclose(index.scores(query), _brute(snap, index, query))
    # And when it is overwritten again (back to unrelated words) it drops out
    snap.apply([("p00007", _product(rng.choice(3000, size=64, replace=False)))], version=4)
    assert index.top(fresh[:20], 2) == [300]
    assert np.allclose(index.scores(query), _brute(snap, index, query))


def test_overwrite_without_version_per_write_is_still_seen(rng: np.random.Generator) -> None:
    # Library use may bump the version once for many writes: the checksum pass catches overwrites.
    snap = _snapshot(_rows(rng, 100))
    index = orb_words.index_for(snap)
    fresh = rng.choice(np.arange(50_000, 60_000), size=orb_words.WORDS, replace=False)
    index.scores(fresh)
    snap.apply([("p00001", _product(fresh)), ("p00002", _product(fresh))], version=2)
    assert sorted(index.top(fresh[:10], 2)) == [1, 2]


def test_many_writes_trigger_a_rebuild_and_a_bulk_reload_is_noticed(rng: np.random.Generator) -> None:
    snap = _snapshot(_rows(rng, 50))
    index = orb_words.index_for(snap)
    index.scores(np.zeros(1, np.uint16))
    extra = [(f"x{i}", _product(rng.choice(3000, size=64, replace=False))) for i in range(5000)]
    snap.apply(extra, version=1 + len(extra))
    query = rng.choice(3000, size=256, replace=False).astype(np.uint16)
    assert np.allclose(index.scores(query), _brute(snap, index, query))
    snap.load(["only"], {k: [pack64(0)] for k in KEYS}, version=9)
    assert len(index.scores(query)) == 1


def test_empty_snapshot() -> None:
    snap = Snapshot(KEYS)
    assert orb_words.index_for(snap).top(np.arange(10, dtype=np.uint16), 3) == []
