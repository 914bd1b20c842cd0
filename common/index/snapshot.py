"""An in-memory, numpy-backed copy of the index: one uint64 column per scanned signal, rows aligned.

Scans are exact and pick the fastest method for (N, radius): brute-force XOR + popcount for small
indexes or wide radii, multi-index hashing (``hamming.MultiIndex``) otherwise. MIH tables are built
lazily on the first scan that wants them (or ahead of time with ``prepare``) and are immutable; rows
written after the build form a *delta* that every scan checks by brute force, and rows overwritten
since the build are masked out of the tables' answers. When the delta would cost more than half a
table scan, the next scan rebuilds the tables (``compact`` does it eagerly).

Removed products leave *dead* rows (id "", masked out of every scan) that the index store hands to
the next new product: ``place`` writes a product at the row the store gave it, ``remove`` kills rows,
so a worker follows removals and reuse from the change stream without a reload, and its rows stay
those of the store (dedup shards rely on that). Dead rows keep the values they had (or, after a bulk
load, where Redis holds zeros, scattered filler values), so a crowd of them never lands in one
multi-index bucket.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.index import hamming
from common.signals.signatures import pack_many64, unpack64

_EMPTY = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint8))


@dataclass
class _Tables:
    """MIH tables of one signal column as of `n_built` rows, plus what changed since."""

    mih: hamming.MultiIndex
    n_built: int
    dirty: np.ndarray  # bool per built row: overwritten since the build (answers from tables are stale)
    overwritten: list[int] = field(default_factory=list)

    def delta_cost_ns(self, n: int) -> float:
        return (n - self.n_built) * hamming.NS_PER_ROW_BRUTE + len(self.overwritten) * (
            hamming.NS_PER_ROW_GATHERED
        )


@dataclass
class Snapshot:
    signal_keys: tuple[str, ...]
    version: int = 0
    ids: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    _columns: dict[str, np.ndarray] = field(default_factory=dict)
    _tables: dict[tuple[str, int], _Tables] = field(default_factory=dict)
    # emb: the learned-embedding rows (common.embedding_index.EmbeddingMatrix), aligned with `ids`;
    # None when no model is configured. Kept current by workers/index_cache.py.
    embeddings: Any = None
    _dead: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # per row (capacity)
    n_dead: int = 0
    # Review feedback: productId -> products never to list with it (set by the worker's index cache).
    exclusions: dict[str, frozenset[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in self.signal_keys:
            self._columns.setdefault(key, np.zeros(0, dtype=np.uint64))

    def __len__(self) -> int:
        """Row slots, dead ones included (scans and tables are over these)."""
        return len(self.ids)

    @property
    def live_count(self) -> int:
        """Products in the snapshot."""
        return len(self.rows)

    def dead_mask(self) -> np.ndarray:
        """Bool per row slot: True where no product lives (a view, no copy)."""
        return self._dead[: len(self.ids)]

    def live_rows(self, n: int | None = None) -> np.ndarray:
        """Rows holding a product, among the first n (all by default), ascending."""
        n = len(self.ids) if n is None else min(n, len(self.ids))
        return np.flatnonzero(~self._dead[:n]) if self.n_dead else np.arange(n, dtype=np.int64)

    def column(self, key: str) -> np.ndarray:
        """The live rows of one signal (a view, no copy)."""
        return self._columns[key][: len(self.ids)]

    # ---------------------------------------------------------------------------------------------
    # Writes

    def load(self, ids: list[str], packed: Mapping[str, list[bytes]], version: int) -> None:
        """Replace everything with a bulk load (one list of packed signatures per signal, aligned to ids)."""
        arrays = {
            key: pack_many64(packed[key]) if ids else np.zeros(0, dtype=np.uint64) for key in self.signal_keys
        }
        self.load_arrays(ids, arrays, version)

    def load_arrays(self, ids: list[str], arrays: Mapping[str, np.ndarray], version: int) -> None:
        """Replace everything from native uint64 arrays aligned to ids (the fast bulk path: no per-row work
        but the id dict). Big-endian packed bytes convert with ``np.frombuffer(buf, '>u8')``."""
        n = len(ids)
        columns = {}
        for key in self.signal_keys:
            col = np.ascontiguousarray(arrays[key], dtype=np.uint64)
            if col.shape != (n,):
                raise ValueError(f"{key}: {col.shape[0] if col.ndim else 0} signatures for {n} ids")
            columns[key] = col.copy() if col is arrays[key] else col  # never alias the caller's array
        self.ids = list(ids)
        dead = np.fromiter((not pid for pid in self.ids), dtype=bool, count=n)
        n_dead = int(dead.sum())
        self.rows = dict(zip(self.ids, range(n), strict=True))
        self.rows.pop("", None)
        if len(self.rows) != n - n_dead:
            raise ValueError("duplicate product ids in a bulk load")
        if n_dead:
            where = np.flatnonzero(dead)
            for col in columns.values():
                col[where] = _filler(where)
        self._columns = columns
        self._dead, self.n_dead = dead, n_dead
        self._tables.clear()
        self.version = version

    def apply(self, updates: Iterable[tuple[str, Mapping[str, bytes]]], version: int) -> None:
        """Insert or overwrite products incrementally; amortised O(1) per append (capacity doubling).

        Visible to the next scan at once: appended rows and overwritten rows go to the MIH delta."""
        for pid, sigs in updates:
            if not all(k in sigs for k in self.signal_keys):
                continue  # written by another signature version: not ours to scan
            row = self.rows.get(pid)
            if row is None:
                row = len(self.ids)
                self._ensure_capacity(row + 1)
                self.ids.append(pid)
                self.rows[pid] = row
            else:
                self._touch(row)
            for key in self.signal_keys:
                self._columns[key][row] = np.uint64(unpack64(sigs[key]))
        self.version = max(self.version, version)

    def place(self, updates: Iterable[tuple[str, int, Mapping[str, bytes]]], version: int) -> None:
        """Write products at the rows the index store gave them (reused rows included). A product that
        moved leaves its old row; one that held the row before (removed since) leaves the snapshot."""
        placed: list[tuple[int, Mapping[str, bytes]]] = []
        for pid, row, sigs in updates:
            if not all(k in sigs for k in self.signal_keys):
                continue  # written by another signature version: not ours to scan
            old = self.rows.get(pid)
            if old is not None and old != row:
                self._kill(old)
            if row >= len(self.ids):
                self._ensure_capacity(row + 1)
                gap = np.arange(len(self.ids), row, dtype=np.int64)  # rows freed before we saw them
                self.ids.extend([""] * (row + 1 - len(self.ids)))
                self._dead[gap] = True
                self.n_dead += len(gap)
                for col in self._columns.values():
                    col[gap] = _filler(gap)
            else:
                holder = self.ids[row]
                if holder and holder != pid:
                    del self.rows[holder]
                self._touch(row)
                if self._dead[row]:
                    self._dead[row] = False
                    self.n_dead -= 1
            self.ids[row] = pid
            self.rows[pid] = row
            placed.append((row, sigs))
        if placed:  # one vectorised write per column
            rows = np.fromiter((r for r, _ in placed), dtype=np.int64, count=len(placed))
            for key in self.signal_keys:
                packed = b"".join(sigs[key] for _, sigs in placed)
                self._columns[key][rows] = np.frombuffer(packed, dtype=">u8").astype(np.uint64)
        self.version = max(self.version, version)

    def remove(self, product_ids: Iterable[str], version: int) -> int:
        """Take products out (their rows become dead); returns how many were here."""
        n = 0
        for pid in product_ids:
            row = self.rows.get(pid)
            if row is not None:
                self._kill(row)
                n += 1
        self.version = max(self.version, version)
        return n

    def _kill(self, row: int) -> None:
        """The row's product is gone. Its values stay where they are (spread like any hashes) and the
        built tables are left alone: every scan masks dead rows out, and a product placed here later
        goes through the delta like any overwrite."""
        del self.rows[self.ids[row]]
        self.ids[row] = ""
        self._dead[row] = True
        self.n_dead += 1

    def _touch(self, row: int) -> None:
        """Row changed in place: the built tables' answers for it are stale from now on."""
        for t in self._tables.values():
            if row < t.n_built and not t.dirty[row]:
                t.dirty[row] = True
                t.overwritten.append(row)

    def _ensure_capacity(self, needed: int) -> None:
        for key, col in self._columns.items():
            if len(col) < needed:
                grown = np.zeros(max(needed, 2 * len(col), 1024), dtype=np.uint64)
                grown[: len(self.ids)] = col[: len(self.ids)]
                self._columns[key] = grown
        if len(self._dead) < needed:
            grown_dead = np.zeros(max(needed, 2 * len(self._dead), 1024), dtype=bool)
            grown_dead[: len(self.ids)] = self._dead[: len(self.ids)]
            self._dead = grown_dead

    # ---------------------------------------------------------------------------------------------
    # Index maintenance

    def prepare(self, key: str, radius: int) -> hamming.Plan:
        """Build (or refresh) the tables the scans of this radius will use; call after a bulk load so
        the first query does not pay for it. Returns the plan (m == 0: brute force, nothing built)."""
        plan = hamming.plan_for(len(self), radius)
        if not plan.brute:
            self._fresh_tables(key, plan)
        return plan

    def compact(self) -> None:
        """Fold every delta back into its tables now (e.g. when the worker is idle)."""
        for key, m in list(self._tables):
            self._tables[(key, m)] = self._build(key, m)

    def memory_bytes(self) -> dict[str, int]:
        """numpy bytes held: columns (live capacity) and MIH tables; ids/rows dict are extra."""
        return {
            "columns": sum(c.nbytes for c in self._columns.values()),
            "tables": sum(t.mih.nbytes + t.dirty.nbytes for t in self._tables.values()),
            "dead_mask": self._dead.nbytes,
        }

    def _build(self, key: str, m: int) -> _Tables:
        n = len(self)
        return _Tables(hamming.MultiIndex(self.column(key), m), n, np.zeros(n, dtype=bool))

    def _fresh_tables(self, key: str, plan: hamming.Plan) -> _Tables:
        t = self._tables.get((key, plan.m))
        if t is None or t.delta_cost_ns(len(self)) > max(0.5 * plan.est_ns, 5_000.0):
            t = self._tables[(key, plan.m)] = self._build(key, plan.m)
        return t

    # ---------------------------------------------------------------------------------------------
    # Scans

    def scan(self, key: str, query: int, radius: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows within `radius` of `query`: (row positions ascending int64, distances uint8). Exact."""
        return self._alive(*self._scan_rows(key, query, radius))

    def scan_batch(self, key: str, queries: np.ndarray, radius: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """`scan` for each query, vectorised across queries when MIH applies."""
        return [self._alive(rows, dist) for rows, dist in self._scan_batch_rows(key, queries, radius)]

    def _alive(self, rows: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.n_dead or not len(rows):
            return rows, dist
        keep = ~self._dead[rows]
        return rows[keep], dist[keep]

    def _scan_rows(self, key: str, query: int, radius: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(self)
        if n == 0 or radius < 0:
            return _EMPTY
        plan = hamming.plan_for(n, radius)
        col = self.column(key)
        if plan.brute:
            return hamming.scan(col, query, radius)
        t = self._fresh_tables(key, plan)
        # Clustered data can put most rows in a probed bucket: then one straight pass is cheaper.
        res = t.mih.scan(query, radius, max_candidates=n // 4)
        if res is None:
            return hamming.scan(col, query, radius)
        rows, dist = res
        if not (t.overwritten or n > t.n_built):
            return rows, dist
        parts_r, parts_d = [], []
        if t.overwritten:
            keep = ~t.dirty[rows]
            parts_r.append(rows[keep])
            parts_d.append(dist[keep])
            ow = np.asarray(t.overwritten, dtype=np.int64)
            r2, d2 = hamming.scan(col[ow], query, radius)
            parts_r.append(ow[r2])
            parts_d.append(d2)
        else:
            parts_r.append(rows)
            parts_d.append(dist)
        if n > t.n_built:
            r3, d3 = hamming.scan(col[t.n_built :], query, radius)
            parts_r.append(r3 + t.n_built)
            parts_d.append(d3)
        rows, dist = np.concatenate(parts_r), np.concatenate(parts_d)
        order = np.argsort(rows, kind="stable")
        return rows[order], dist[order]

    def _scan_batch_rows(
        self, key: str, queries: np.ndarray, radius: int
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        queries = np.ascontiguousarray(queries, dtype=np.uint64)
        n = len(self)
        if n == 0 or radius < 0:
            return [_EMPTY for _ in queries]
        plan = hamming.plan_for(n, radius)
        if plan.brute or len(queries) == 1:
            return [self._scan_rows(key, int(q), radius) for q in queries]
        t = self._fresh_tables(key, plan)
        col = self.column(key)
        found = t.mih.scan_batch(queries, radius, max_candidates=n // 4)
        has_delta = bool(t.overwritten) or n > t.n_built
        if has_delta:
            ow = np.asarray(t.overwritten, dtype=np.int64)
            delta_rows = np.concatenate([ow, np.arange(t.n_built, n, dtype=np.int64)])
            delta_vals = col[delta_rows]
        out: list[tuple[np.ndarray, np.ndarray]] = []
        for q, res in zip(queries, found, strict=True):
            if res is None:  # clustered: too many candidates, one straight pass (already current)
                out.append(hamming.scan(col, int(q), radius))
            elif not has_delta:
                out.append(res)
            else:
                rows, dist = res
                if len(ow):
                    keep = ~t.dirty[rows]
                    rows, dist = rows[keep], dist[keep]
                r2, d2 = hamming.scan(delta_vals, int(q), radius)
                rows = np.concatenate([rows, delta_rows[r2]])
                dist = np.concatenate([dist, d2])
                order = np.argsort(rows, kind="stable")
                out.append((rows[order], dist[order]))
        return out


def _filler(rows: np.ndarray) -> np.ndarray:
    """Scattered 64-bit values for dead rows (splitmix64 of the row): never read as data, but spread
    over the multi-index buckets like real hashes instead of piling up in one."""
    z = rows.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))
