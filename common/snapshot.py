"""An in-memory, numpy-backed copy of the index: one uint64 column per scanned signal, rows aligned."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from common.signatures import pack_many64, unpack64


@dataclass
class Snapshot:
    signal_keys: tuple[str, ...]
    version: int = 0
    ids: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    _columns: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in self.signal_keys:
            self._columns.setdefault(key, np.zeros(0, dtype=np.uint64))

    def __len__(self) -> int:
        return len(self.ids)

    def column(self, key: str) -> np.ndarray:
        """The live rows of one signal (a view, no copy)."""
        return self._columns[key][: len(self.ids)]

    def load(self, ids: list[str], packed: Mapping[str, list[bytes]], version: int) -> None:
        """Replace everything with a bulk load (one list of packed signatures per signal, aligned to ids)."""
        self.ids = list(ids)
        self.rows = {pid: i for i, pid in enumerate(self.ids)}
        for key in self.signal_keys:
            self._columns[key] = pack_many64(packed[key]) if ids else np.zeros(0, dtype=np.uint64)
        self.version = version

    def apply(self, updates: Iterable[tuple[str, Mapping[str, bytes]]], version: int) -> None:
        """Insert or overwrite products incrementally; amortised O(1) per append (capacity doubling)."""
        for pid, sigs in updates:
            if not all(k in sigs for k in self.signal_keys):
                continue  # written by another signature version: not ours to scan
            row = self.rows.get(pid)
            if row is None:
                row = len(self.ids)
                self._ensure_capacity(row + 1)
                self.ids.append(pid)
                self.rows[pid] = row
            for key in self.signal_keys:
                self._columns[key][row] = np.uint64(unpack64(sigs[key]))
        self.version = max(self.version, version)

    def _ensure_capacity(self, needed: int) -> None:
        for key, col in self._columns.items():
            if len(col) < needed:
                grown = np.zeros(max(needed, 2 * len(col), 1024), dtype=np.uint64)
                grown[: len(self.ids)] = col[: len(self.ids)]
                self._columns[key] = grown
