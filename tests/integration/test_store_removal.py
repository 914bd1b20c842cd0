"""IndexStore.remove on a real redis-server: products leave every structure in one write, their rows
are reused, and a worker snapshot catching up from the change stream equals a fresh bulk load."""

from __future__ import annotations

import numpy as np
import pytest

from common.index import keys
from common.index import store as store_mod
from common.index.snapshot import Snapshot
from common.index.store import IndexStore, Product
from common.signals import signal_set
from common.signals.signatures import pack64, unpack64

pytestmark = pytest.mark.integration


def product(pid: str, value: int) -> Product:
    sigs = {s: pack64((value * 31 + k) % 2**64) for k, s in enumerate(signal_set.DEFAULT.scan)}
    sigs[signal_set.DEFAULT.primary] = pack64(value)
    sigs |= {b: f"{b}:{pid}".encode() for b in signal_set.DEFAULT.blobs}
    return Product(pid, f"http://x/{pid}.jpg", sigs, {"pixels": value, "bytes": 1})


def loaded(st: IndexStore) -> Snapshot:
    bulk = st.bulk()
    snap = Snapshot(signal_set.DEFAULT.scan)
    arrays = {k: np.frombuffer(v, ">u8").astype(np.uint64) for k, v in bulk.columns.items()}
    snap.load_arrays(bulk.ids, arrays, bulk.version)
    return snap


def test_remove_clears_everything_and_rows_are_reused(index_redis):
    st = IndexStore(index_redis, signal_set.DEFAULT.scan, signal_set.DEFAULT.blobs)
    st.write([product(f"p{i}", 1000 + i) for i in range(10)])
    v0 = st.version()

    # When three products (and an unknown one) are removed in one call
    removed, version = st.remove(["p2", "p5", "p7", "nope", "p2"])

    # Then they are gone from rows, meta, order, blobs and their scan bytes, each with a change entry
    assert removed == ["p2", "p5", "p7"] and version == v0 + 3 and st.size() == 7
    assert st.indexed(["p2", "p5", "p7", "p3"]) == [False, False, False, True]
    for pid in removed:
        assert not index_redis.hexists(keys.PRODUCTS, pid) and not index_redis.hexists(keys.ADDED, pid)
        assert all(not index_redis.hexists(keys.signal(b), pid) for b in signal_set.DEFAULT.blobs)
    assert index_redis.getrange(keys.column(signal_set.SHA), 2 * 8, 2 * 8 + 7) == b"\0" * 8
    tail = st.changes_since("0-0")[-3:]
    assert [(c.pid, c.kind, c.row) for c in tail] == [("p2", "rm", 2), ("p5", "rm", 5), ("p7", "rm", 7)]
    bulk = st.bulk()
    assert bulk.ids[2] == bulk.ids[5] == bulk.ids[7] == "" and len(bulk.ids) == 10

    # When new products arrive, they take the freed rows before any new one
    st.write([product(f"n{i}", 5000 + i) for i in range(4)])
    rows = {pid: int(index_redis.hget(keys.ROWS, pid)) for pid in ("n0", "n1", "n2", "n3")}
    assert sorted(rows.values()) == [2, 5, 7, 10]
    bulk = st.bulk()
    assert [bulk.ids[r] for r in sorted(rows.values())] == [
        p for p, _ in sorted(rows.items(), key=lambda x: x[1])
    ]
    assert unpack64(bulk.columns[signal_set.DEFAULT.primary][rows["n0"] * 8 : rows["n0"] * 8 + 8]) == 5000

    # and IDS folded with its patch gives the same rows
    assert st.compact_ids() and not index_redis.exists(keys.ROW_PATCH)
    assert st.bulk().ids == bulk.ids


def test_churn_never_grows_the_rows_and_compacts(index_redis, monkeypatch):
    monkeypatch.setattr(store_mod, "COMPACT_MIN", 8)
    st = IndexStore(index_redis, signal_set.DEFAULT.scan, signal_set.DEFAULT.blobs)
    st.write([product(f"a{i}", i) for i in range(40)])
    for rnd in range(5):
        st.remove([f"{'a' if rnd == 0 else f'r{rnd - 1}-'}{i}" for i in range(20)])
        st.write([product(f"r{rnd}-{i}", 100 * rnd + i) for i in range(20)])
    assert int(index_redis.get(keys.ROW_COUNT)) == 40 and st.size() == 40
    assert index_redis.strlen(keys.column(signal_set.DEFAULT.primary)) == 40 * 8
    assert index_redis.hlen(keys.ROW_PATCH) < 20  # folded into IDS along the way
    assert sorted(pid for pid in st.bulk().ids if pid) == sorted(st.indexed_ids())


def test_worker_catch_up_equals_a_fresh_load(index_redis):
    from workers.index_cache import _catch_up

    st = IndexStore(index_redis, signal_set.DEFAULT.scan, signal_set.DEFAULT.blobs)
    st.write([product(f"p{i}", 10 + i) for i in range(30)])
    snap = loaded(st)
    last = st.bulk().last_change
    # When products are removed, rows reused, one removed and re-indexed, one rewritten
    st.remove([f"p{i}" for i in range(0, 30, 3)])
    st.write([product(f"q{i}", 900 + i) for i in range(6)])
    st.remove(["q1"])
    st.write([product("q1", 777), product("p1", 4242)], force=True)
    changes = st.changes_since(last)
    _catch_up(st, snap, changes)
    fresh = loaded(st)
    # Then the incremental snapshot holds exactly what a fresh load holds, row for row
    assert snap.ids == fresh.ids and snap.rows == fresh.rows
    live = fresh.live_rows()
    for key in signal_set.DEFAULT.scan:
        np.testing.assert_array_equal(snap.column(key)[live], fresh.column(key)[live])
    assert snap.version == st.version() and snap.live_count == st.size()
