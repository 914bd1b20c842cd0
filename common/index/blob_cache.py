"""A bounded per-process cache of candidates' blob signals (PDQ, ORB keypoints, thumbnails).

Verifying a query fetches the blobs of a dozen candidates from Redis (about 100 KB with ORB
keypoints); the same inventory products come up again and again as candidates, so a query worker
keeps the most recently used ones. Entries belong to one index cut: the owner drops the products the
change stream names whenever it syncs, and everything on a full reload, so a cached blob is never
older than the snapshot the query answers from.
"""

from __future__ import annotations

import enum
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable

Fetch = Callable[[str, list[str]], list[bytes | None]]

_ENTRY_OVERHEAD = 100  # bytes a cached entry costs besides its value (key tuple, dict slot)


class BlobCache:
    def __init__(self, fetch: Fetch, max_bytes: int) -> None:
        self.fetch = fetch
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str], bytes | None] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._signals: set[str] = set()
        self.hits = self.misses = 0

    def blobs(self, signal: str, product_ids: list[str]) -> list[bytes | None]:
        """Same contract as IndexStore.blobs: one value (or None) per id, in order."""
        with self._lock:
            found = {pid: self._get((signal, pid)) for pid in product_ids}
            missing = [pid for pid in dict.fromkeys(product_ids) if found[pid] is _ABSENT]
            self.hits += len(product_ids) - len(missing)
            self.misses += len(missing)
        if missing:
            fetched = self.fetch(signal, missing)
            with self._lock:
                for pid, value in zip(missing, fetched, strict=True):
                    found[pid] = value
                    self._put((signal, pid), value)
        return [found[pid] for pid in product_ids]  # type: ignore[misc]  # every _ABSENT was filled in

    def product(
        self, product_id: str, signals: tuple[str, ...], fetch_product: Callable[[str], dict[str, bytes]]
    ) -> dict[str, bytes]:
        """Every blob signal of one product (missing ones left out), like IndexStore.blobs_of: from the
        cache when all are there (a batch prefetched them), else in one fetch_product round trip."""
        with self._lock:
            got = {s: self._get((s, product_id)) for s in signals}
        if any(v is _ABSENT for v in got.values()):
            fetched = fetch_product(product_id)
            got = {s: fetched.get(s) for s in signals}
            with self._lock:
                for s in signals:
                    self._put((s, product_id), fetched.get(s))
        return {s: v for s, v in got.items() if isinstance(v, bytes)}  # none is _ABSENT here

    def forget(self, product_ids: Iterable[str]) -> None:
        """Drop every cached blob of these products (they were rewritten)."""
        with self._lock:
            for pid in product_ids:
                for signal in self._signals:
                    if (signal, pid) in self._entries:
                        self._drop((signal, pid))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _get(self, key: tuple[str, str]) -> bytes | None | _Absent:
        if key not in self._entries:
            return _ABSENT
        self._entries.move_to_end(key)
        return self._entries[key]

    def _put(self, key: tuple[str, str], value: bytes | None) -> None:
        if key in self._entries:
            self._drop(key)
        size = _ENTRY_OVERHEAD + (len(value) if value else 0)
        if size > self.max_bytes:
            return
        self._entries[key] = value
        self._signals.add(key[0])
        self._bytes += size
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: tuple[str, str]) -> None:
        value = self._entries.pop(key)
        self._bytes -= _ENTRY_OVERHEAD + (len(value) if value else 0)


class _Absent(enum.Enum):
    """Not cached (a cached None means the product has no such blob)."""

    ABSENT = enum.auto()


_ABSENT = _Absent.ABSENT
