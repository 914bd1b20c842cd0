"""The Redis index: idempotent versioned writes, failures, and fast bulk reads.

Layout (all names in common.index.keys):
- ROWS: hash productId -> row number; IDS: string of productIds joined by "\n" in row order.
- col:<signal>: one string per 64-bit signal, 8 bytes per row at offset row*8, so a worker loads
  a million signatures with one GET per signal instead of parsing a million hash fields.
- sig:<signal>: hash productId -> bytes for blob signals (fetched on demand for candidates).
- VERSION + CHANGES: bumped/appended in the same Lua call as the write, so a reader that sees the
  version also sees the data, and a cache can catch up incrementally from the stream.
- Removal (``remove``): one Lua call takes a product out of every structure and frees its row; the
  next new product reuses it (FREE_ROWS, ROW_PATCH), so the row slots never exceed the largest size
  the index has had. Change entries carry the row and a kind ("rm" for a removal).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import redis

from common.errors import ConfigError
from common.index import keys, lua_scripts

if TYPE_CHECKING:
    from common.signals.signal_set import SignalSet

STREAM_MAXLEN = 200_000  # a cache further behind than this reloads in full

COMPACT_MIN = 4096  # IDS is rewritten once the row patch holds this many rows and 1/32 of all rows


@dataclass(frozen=True)
class Product:
    product_id: str
    url: str
    signatures: dict[str, bytes]
    info: dict[str, int] = field(default_factory=dict)  # {"pixels", "bytes"} of the photo, kept in its meta


@dataclass(frozen=True)
class Change:
    """One change-stream entry: a product written (kind "add") or removed ("rm") at `row`."""

    id: str
    pid: str
    version: int
    kind: str = "add"
    row: int | None = None  # None in entries written before rows were reused


@dataclass(frozen=True)
class BulkIndex:
    version: int
    epoch: str
    ids: list[str]  # per row slot; "" for a free row
    columns: dict[str, bytes]  # signal -> 8 bytes per row, rows aligned with ids
    last_change: str  # stream id the bulk read is consistent with


class IndexStore:
    @classmethod
    def of(cls, client: redis.Redis[bytes], signals: SignalSet) -> IndexStore:
        """The index as these signals write it: what it scans, stores, records and checks."""
        return cls(client, signals.scan, signals.blobs, signals.identity, signals.verified)

    def __init__(
        self,
        client: redis.Redis[bytes],
        scan_signals: Sequence[str],
        blob_signals: Sequence[str] = (),
        identity_signals: Sequence[str] = (),
        verified_signals: Sequence[str] = (),
    ):
        self.r = client
        self.scan_signals = tuple(scan_signals)
        self.blob_signals = tuple(blob_signals)
        # emb: blob signals that are also part of the recorded signal set (the embedding model), so an
        # index never mixes them; none by default, and then the set is the scan signals, as before.
        self.identity_signals = tuple(identity_signals)
        # Blobs that verification reads (PDQ, ORB, thumbnail): recorded too, so workers whose blob
        # versions moved (orb112@1 -> orb124x128@1) refuse the index instead of finding no blob to verify.
        self.verified_signals = tuple(verified_signals)
        # The KEYS and ARGV each script expects are named at the top of its .lua file.
        self._write = client.register_script(lua_scripts.WRITE)
        self._remove = client.register_script(lua_scripts.REMOVE)
        self._scan_rows = client.register_script(lua_scripts.SCAN_ROWS)
        self._blob_names_known = False

    # -- schema guard -------------------------------------------------------------------------
    def check_signals(self) -> None:
        """Refuse to mix signatures: an index built with other signals stays as it is."""
        recorded = (*self.scan_signals, *self.verified_signals, *self.identity_signals)
        wanted = json.dumps(recorded)
        existing = self.r.get(keys.SIGNALS)
        if existing is None:
            self.r.set(keys.SIGNALS, wanted, nx=True)
            existing = self.r.get(keys.SIGNALS)
            assert existing is not None  # just set (nx); gone only if the database was flushed meanwhile
        if existing.decode() != wanted:
            held, ours = set(json.loads(existing)), set(recorded)
            raise ConfigError(
                "signature_mismatch",
                f"this index was built with {sorted(held - ours)} where this process computes "
                f"{sorted(ours - held)} (another NEARDUP_DECODE, NEARDUP_EMBEDDING_MODEL or version). Use "
                "the setting it was built with, or a new index: another NEARDUP_DATA_DIR (embedded) or "
                "Redis database",
            )

    # -- writes -------------------------------------------------------------------------------
    def write(self, products: Sequence[Product], force: bool = False) -> tuple[int, int]:
        """Write products atomically; unchanged ones don't bump the version. Returns (written, version)."""
        if not products:
            return 0, self.version()
        if not self._blob_names_known and self.blob_signals:
            self.r.sadd(keys.BLOB_NAMES, *self.blob_signals)  # so a remove by any process clears them
            self._blob_names_known = True
        args: list[bytes | str | int] = [
            len(self.scan_signals),
            len(self.blob_signals),
            int(force),
            STREAM_MAXLEN,
            uuid.uuid4().hex,
        ]
        for p in products:
            meta = json.dumps({"url": p.url, "at": round(time.time(), 3), **p.info})
            args += [p.product_id, meta]
            args += [p.signatures[s] for s in self.scan_signals]
            args += [p.signatures[s] for s in self.blob_signals]
        written, version, patched, n_rows = self._write(keys=self._write_keys(), args=args)
        self._maybe_compact(int(patched), int(n_rows))
        return int(written), int(version)

    def _write_keys(self) -> list[str]:
        return (
            [keys.VERSION, keys.CHANGES, keys.ROWS, keys.IDS, keys.PRODUCTS, keys.FAILURES, keys.EPOCH]
            + [keys.ROW_COUNT, keys.FREE_ROWS, keys.ROW_PATCH, keys.ADDED]
            + [keys.column(s) for s in self.scan_signals]
            + [keys.signal(s) for s in self.blob_signals]
        )

    def remove(self, product_ids: Sequence[str]) -> tuple[list[str], int]:
        """Remove products atomically (one Lua call); returns (the ids that were indexed, version)."""
        ids = list(dict.fromkeys(product_ids))
        if not ids:
            return [], self.version()
        blobs = sorted({*self.blob_signals, *(b.decode() for b in self.r.smembers(keys.BLOB_NAMES))})
        key_list = (
            [keys.VERSION, keys.CHANGES, keys.ROWS, keys.PRODUCTS, keys.FAILURES]
            + [keys.ROW_COUNT, keys.FREE_ROWS, keys.ROW_PATCH, keys.ADDED]
            + [keys.column(s) for s in self.scan_signals]
            + [keys.signal(s) for s in blobs]
        )
        removed, version, patched, n_rows = self._remove(
            keys=key_list, args=[len(self.scan_signals), len(blobs), STREAM_MAXLEN, *ids]
        )
        self._maybe_compact(int(patched), int(n_rows))
        return [p.decode() for p in removed], int(version)

    def _maybe_compact(self, patched: int, n_rows: int) -> None:
        if patched >= COMPACT_MIN and patched * 32 >= n_rows:
            self.compact_ids()

    def compact_ids(self) -> bool:
        """Fold the row patch into IDS (one rewrite, optimistic: skipped when a write lands meanwhile,
        the next write retries). Keeps a bulk read cheap after heavy churn; rows never move."""
        with self.r.pipeline() as pipe:
            try:
                pipe.watch(keys.VERSION, keys.ROW_PATCH)
                # After watch() the pipeline runs commands at once and returns their replies; the
                # stubs type every pipeline command as buffered (returning the pipeline).
                patch = cast("dict[bytes, bytes]", pipe.hgetall(keys.ROW_PATCH))
                if not patch:
                    return False
                ids = (cast("bytes | None", pipe.get(keys.IDS)) or b"").decode().split("\n")[:-1]
                for row, pid in patch.items():
                    ids[int(row)] = pid.decode()
                pipe.multi()
                pipe.set(keys.IDS, "".join(p + "\n" for p in ids))
                pipe.delete(keys.ROW_PATCH)
                pipe.execute()
                return True
            except redis.WatchError:
                return False

    def order_and_info(self, product_ids: list[str]) -> list[tuple[int | None, dict[str, Any]]]:
        """(version when first indexed, stored meta) per product: what the canonical rules read."""
        if not product_ids:
            return []
        pipe = self.r.pipeline(transaction=False)
        pipe.hmget(keys.ADDED, product_ids)
        pipe.hmget(keys.PRODUCTS, product_ids)
        added, metas = pipe.execute()
        return [
            (int(a) if a is not None else None, json.loads(m) if m is not None else {})
            for a, m in zip(added, metas, strict=True)
        ]

    def record_failure(
        self, product_id: str, stage: str, reason: str, error: str, url: str = "", attempts: int = 1
    ) -> None:
        record = {
            "stage": stage,
            "reason": reason,
            "error": error[:500],
            "url": url[:2000],
            "attempts": attempts,
            "at": round(time.time(), 3),
        }
        self.r.hset(keys.FAILURES, product_id, json.dumps(record))

    # -- reads --------------------------------------------------------------------------------
    def version(self) -> int:
        return int(self.r.get(keys.VERSION) or 0)

    def sync_state(self) -> tuple[int, str, int]:
        """(index version, epoch, feedback version) in one round trip: a query worker's check."""
        version, epoch, feedback = self.r.mget(keys.VERSION, keys.EPOCH, keys.FEEDBACK_VERSION)
        return int(version or 0), (epoch or b"").decode(), int(feedback or 0)

    def version_and_epoch(self) -> tuple[int, str]:
        """One round trip: what a query worker compares before every query."""
        version, epoch = self.r.mget(keys.VERSION, keys.EPOCH)
        return int(version or 0), (epoch or b"").decode()

    def size(self) -> int:
        return int(self.r.hlen(keys.ROWS))

    def indexed_ids(self) -> list[str]:
        """Every indexed productId (unordered)."""
        return [k.decode() for k in self.r.hkeys(keys.ROWS)]

    def indexed(self, product_ids: Iterable[str]) -> list[bool]:
        ids = list(product_ids)
        if not ids:
            return []
        return [v is not None for v in self.r.hmget(keys.ROWS, ids)]

    def up_to_date(self, items: Sequence[tuple[str, str]]) -> list[bool]:
        """For (productId, url) pairs: already indexed from that very URL (a product whose photo URL
        changed in the catalog is not, so a catalog refresh re-indexes it without --force)."""
        if not items:
            return []
        metas = self.r.hmget(keys.PRODUCTS, [pid for pid, _ in items])
        rows = self.r.hmget(keys.ROWS, [pid for pid, _ in items])
        return [
            row is not None and meta is not None and json.loads(meta).get("url") == url
            for (_, url), meta, row in zip(items, metas, rows, strict=True)
        ]

    def signatures_of(self, product_id: str) -> dict[str, bytes] | None:
        return self.signatures_many([product_id])[0]

    def signatures_many(
        self, product_ids: list[str], scan_only: bool = False
    ) -> list[dict[str, bytes] | None]:
        """Signatures of many products in two round trips (None for products not indexed)."""
        return [sigs for _, sigs in self.rows_and_signatures(product_ids, scan_only)]

    def rows_and_signatures(
        self, product_ids: list[str], scan_only: bool = False
    ) -> list[tuple[int | None, dict[str, bytes] | None]]:
        """(row, signatures) of many products in two round trips ((None, None) when not indexed).
        Scanned signatures only: one Lua call, a consistent cut (what a worker catching up reads)."""
        if not product_ids:
            return []
        if scan_only:
            rows_found, *cols = self._scan_rows(
                keys=[keys.ROWS, *(keys.column(s) for s in self.scan_signals)], args=product_ids
            )
            out: list[tuple[int | None, dict[str, bytes] | None]] = []
            k = 0
            for row in rows_found:
                if row < 0:
                    out.append((None, None))
                    continue
                out.append(
                    (
                        int(row),
                        {s: c[8 * k : 8 * k + 8] for s, c in zip(self.scan_signals, cols, strict=True)},
                    )
                )
                k += 1
            return out
        rows = self.r.hmget(keys.ROWS, product_ids)
        blob_signals = () if scan_only else self.blob_signals
        pipe = self.r.pipeline(transaction=False)
        for pid, row in zip(product_ids, rows, strict=True):
            if row is None:
                continue
            row = int(row)
            for s in self.scan_signals:
                pipe.getrange(keys.column(s), row * 8, row * 8 + 7)
            for s in blob_signals:
                pipe.hget(keys.signal(s), pid)
        values = iter(pipe.execute())
        names = self.scan_signals + tuple(blob_signals)
        return [(None, None) if row is None else (int(row), {n: next(values) for n in names}) for row in rows]

    def blobs_of(self, product_id: str) -> dict[str, bytes]:
        """Every stored blob signal of one product, in one round trip (missing ones left out)."""
        pipe = self.r.pipeline(transaction=False)
        for s in self.blob_signals:
            pipe.hget(keys.signal(s), product_id)
        return {s: v for s, v in zip(self.blob_signals, pipe.execute(), strict=True) if v is not None}

    def blobs(self, signal: str, product_ids: list[str]) -> list[bytes | None]:
        if not product_ids:
            return []
        return self.r.hmget(keys.signal(signal), product_ids)

    def bulk(self) -> BulkIndex:
        """Everything scanned, read in one transaction: a consistent cut at one version."""
        pipe = self.r.pipeline(transaction=True)
        pipe.get(keys.VERSION)
        pipe.get(keys.EPOCH)
        pipe.get(keys.IDS)
        pipe.hgetall(keys.ROW_PATCH)
        pipe.xrevrange(keys.CHANGES, count=1)
        for s in self.scan_signals:
            pipe.get(keys.column(s))
        version, epoch, ids_blob, patch, last, *cols = pipe.execute()
        ids = ids_blob.decode().split("\n")[:-1] if ids_blob else []
        for row, pid in patch.items():  # rows freed or reused since IDS was last rewritten
            ids[int(row)] = pid.decode()
        columns = {s: (c or b"")[: 8 * len(ids)] for s, c in zip(self.scan_signals, cols, strict=True)}
        last_id = last[0][0].decode() if last else "0-0"
        return BulkIndex(int(version or 0), (epoch or b"").decode(), ids, columns, last_id)

    def changes_since(self, stream_id: str, count: int = 100_000) -> list[Change]:
        """Writes and removals after `stream_id`, oldest first."""
        entries = self.r.xrange(keys.CHANGES, min=f"({stream_id}", count=count)
        return [
            Change(
                eid.decode(),
                f[b"pid"].decode(),
                int(f[b"v"]),
                f.get(b"k", b"add").decode(),
                int(f[b"row"]) if b"row" in f else None,
            )
            for eid, f in entries
        ]

    def failures(self) -> dict[str, dict[str, Any]]:
        return {k.decode(): json.loads(v) for k, v in self.r.hgetall(keys.FAILURES).items()}
