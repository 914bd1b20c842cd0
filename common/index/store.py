"""The Redis index: idempotent versioned writes, failures, and fast bulk reads.

Layout (all names in common.index.keys):
- ROWS: hash productId -> row number; IDS: string of productIds joined by "\n" in row order.
- col:<signal>: one string per 64-bit signal, 8 bytes per row at offset row*8, so a worker loads
  a million signatures with one GET per signal instead of parsing a million hash fields.
- sig:<signal>: hash productId -> bytes for blob signals (fetched on demand for candidates).
- VERSION + CHANGES: bumped/appended in the same Lua call as the write, so a reader that sees the
  version also sees the data, and a cache can catch up incrementally from the stream.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis

from common.errors import ConfigError
from common.index import keys

STREAM_MAXLEN = 200_000  # a cache further behind than this reloads in full

# KEYS: version, changes, rows, ids, products, failures, epoch, cols..., blobs...
# ARGV: n_scan, n_blob, force, maxlen, epoch token,
#       then per product: pid, meta, scan values..., blob values...
_WRITE_LUA = """
local n_scan = tonumber(ARGV[1])
local n_blob = tonumber(ARGV[2])
local force = ARGV[3] == '1'
local maxlen = ARGV[4]
local per = 2 + n_scan + n_blob
local written = 0
redis.call('SETNX', KEYS[7], ARGV[5])
local version = tonumber(redis.call('GET', KEYS[1]) or '0')
local i = 6
while i <= #ARGV do
  local pid = ARGV[i]
  local row = redis.call('HGET', KEYS[3], pid)
  local changed = force or (row == false)
  if row == false then
    row = redis.call('HLEN', KEYS[3])
    redis.call('HSET', KEYS[3], pid, row)
    redis.call('APPEND', KEYS[4], pid .. '\\n')
  else
    row = tonumber(row)
  end
  if not changed then
    for s = 1, n_scan do
      if redis.call('GETRANGE', KEYS[7 + s], row * 8, row * 8 + 7) ~= ARGV[i + 1 + s] then
        changed = true
      end
    end
    for b = 1, n_blob do
      if redis.call('HGET', KEYS[7 + n_scan + b], pid) ~= ARGV[i + 1 + n_scan + b] then
        changed = true
      end
    end
  end
  if changed then
    for s = 1, n_scan do
      redis.call('SETRANGE', KEYS[7 + s], row * 8, ARGV[i + 1 + s])
    end
    for b = 1, n_blob do
      redis.call('HSET', KEYS[7 + n_scan + b], pid, ARGV[i + 1 + n_scan + b])
    end
    version = version + 1
    redis.call('SET', KEYS[1], version)
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', 'pid', pid, 'v', version)
    written = written + 1
  end
  redis.call('HSET', KEYS[5], pid, ARGV[i + 1])
  redis.call('HDEL', KEYS[6], pid)
  i = i + per
end
return {written, version}
"""


@dataclass(frozen=True)
class Product:
    product_id: str
    url: str
    signatures: dict[str, bytes]


@dataclass(frozen=True)
class BulkIndex:
    version: int
    epoch: str
    ids: list[str]
    columns: dict[str, bytes]  # signal -> 8 bytes per row, rows aligned with ids
    last_change: str  # stream id the bulk read is consistent with


class IndexStore:
    def __init__(
        self,
        client: redis.Redis,
        scan_signals: Sequence[str],
        blob_signals: Sequence[str] = (),
        identity_signals: Sequence[str] = (),
    ):
        self.r = client
        self.scan_signals = tuple(scan_signals)
        self.blob_signals = tuple(blob_signals)
        # emb: blob signals that are also part of the recorded signal set (the embedding model), so an
        # index never mixes them; none by default, and then the set is the scan signals, as before.
        self.identity_signals = tuple(identity_signals)
        self._write = client.register_script(_WRITE_LUA)

    # -- schema guard -------------------------------------------------------------------------
    def check_signals(self) -> None:
        """Refuse to mix signatures: an index built with other signals stays as it is."""
        wanted = json.dumps([*self.scan_signals, *self.identity_signals])
        existing = self.r.get(keys.SIGNALS)
        if existing is None:
            self.r.set(keys.SIGNALS, wanted, nx=True)
            existing = self.r.get(keys.SIGNALS)
        if existing.decode() != wanted:
            held, ours = set(json.loads(existing)), {*self.scan_signals, *self.identity_signals}
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
        args: list[bytes | str | int] = [
            len(self.scan_signals),
            len(self.blob_signals),
            int(force),
            STREAM_MAXLEN,
            uuid.uuid4().hex,
        ]
        for p in products:
            meta = json.dumps({"url": p.url, "at": round(time.time(), 3)})
            args += [p.product_id, meta]
            args += [p.signatures[s] for s in self.scan_signals]
            args += [p.signatures[s] for s in self.blob_signals]
        written, version = self._write(keys=self._write_keys(), args=args)
        return int(written), int(version)

    def _write_keys(self) -> list[str]:
        return (
            [keys.VERSION, keys.CHANGES, keys.ROWS, keys.IDS, keys.PRODUCTS, keys.FAILURES, keys.EPOCH]
            + [keys.column(s) for s in self.scan_signals]
            + [keys.signal(s) for s in self.blob_signals]
        )

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

    def version_and_epoch(self) -> tuple[int, str]:
        """One round trip: what a query worker compares before every query."""
        version, epoch = self.r.mget(keys.VERSION, keys.EPOCH)
        return int(version or 0), (epoch or b"").decode()

    def size(self) -> int:
        return int(self.r.hlen(keys.ROWS))

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
        if not product_ids:
            return []
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
        return [None if row is None else {n: next(values) for n in names} for row in rows]

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
        pipe.xrevrange(keys.CHANGES, count=1)
        for s in self.scan_signals:
            pipe.get(keys.column(s))
        version, epoch, ids_blob, last, *cols = pipe.execute()
        ids = ids_blob.decode().split("\n")[:-1] if ids_blob else []
        columns = {s: (c or b"")[: 8 * len(ids)] for s, c in zip(self.scan_signals, cols, strict=True)}
        last_id = last[0][0].decode() if last else "0-0"
        return BulkIndex(int(version or 0), (epoch or b"").decode(), ids, columns, last_id)

    def changes_since(self, stream_id: str, count: int = 100_000) -> list[tuple[str, str, int]]:
        """(stream id, productId, version) written after `stream_id`, oldest first."""
        entries = self.r.xrange(keys.CHANGES, min=f"({stream_id}", count=count)
        return [(eid.decode(), f[b"pid"].decode(), int(f[b"v"])) for eid, f in entries]

    def failures(self) -> dict[str, dict]:
        return {k.decode(): json.loads(v) for k, v in self.r.hgetall(keys.FAILURES).items()}
