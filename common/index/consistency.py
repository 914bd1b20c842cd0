"""Is the Redis index consistent, and repair it when it is not.

The layout (common.index.store) keeps three things aligned: ROWS (productId -> row), IDS (productIds in row
order) and one column of 8 bytes per row per scanned signal. Every write keeps them aligned in one Lua
call; only something outside the code can misalign them (two redis-servers once wrote one AOF, a
hand edit, a truncated AOF repaired by redis-check-aof). A misaligned index used to fail every query
with "40 signatures for 48 ids" and was not repaired by a re-ingest, which appends to the damage.

`check` is cheap (one Lua call returning counts: no data leaves Redis) and runs where an index is
opened: `neardup status`, every command's session, and a worker's full load. `repair` keeps every
product whose row is intact and drops the rest from the index (their next ingest redoes them).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import redis

from common.errors import ConfigError
from common.index import keys

# KEYS: rows, ids, free rows, cols...  -> {HLEN rows, number of id lines (row slots), LLEN free rows,
# STRLEN of each column}
_COUNTS_LUA = """
local ids = redis.call('GET', KEYS[2]) or ''
local _, n_ids = string.gsub(ids, '\\n', '')
local out = {redis.call('HLEN', KEYS[1]), n_ids, redis.call('LLEN', KEYS[3])}
for i = 4, #KEYS do
  out[#out + 1] = redis.call('STRLEN', KEYS[i])
end
return out
"""

REPAIR_HINT = (
    "run `neardup repair` to keep the intact products (the others are re-indexed by the next ingest)"
)


class IndexInconsistent(ConfigError):
    """The index's rows, ids and signature columns disagree."""


@dataclass(frozen=True)
class RepairReport:
    kept: int
    dropped: list[str]
    problems: list[str]


def check(r: redis.Redis[bytes], scan_signals: Sequence[str]) -> list[str]:
    """What is wrong with the index, in words; [] when rows, ids and columns agree."""
    cols = [keys.column(s) for s in scan_signals]
    # types-redis leaves eval unannotated
    counts = r.eval(  # type: ignore[no-untyped-call]
        _COUNTS_LUA, 3 + len(cols), keys.ROWS, keys.IDS, keys.FREE_ROWS, *cols
    )
    n_rows, n_ids, n_free, *lengths = (int(v) for v in counts)
    problems = []
    if n_rows + n_free != n_ids:  # every row slot holds a product or is free for the next one
        problems.append(
            f"{n_rows} products have a row and {n_free} rows are free, but {n_ids} row slots are listed"
        )
    for signal, length in zip(scan_signals, lengths, strict=True):
        if n_ids and length < 8 * n_ids:  # longer is harmless (bulk reads cut at the ids)
            problems.append(f"{signal}: {length // 8} signatures for {n_ids} ids")
    return problems


def require_consistent(r: redis.Redis[bytes], scan_signals: Sequence[str]) -> None:
    problems = check(r, scan_signals)
    if problems:
        raise IndexInconsistent(
            "index_inconsistent", f"the index is inconsistent ({'; '.join(problems)}): {REPAIR_HINT}"
        )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _raw(value: object) -> bytes:
    return value if isinstance(value, bytes) else b""


def repair(
    r: redis.Redis[bytes], scan_signals: Sequence[str], blob_signals: Sequence[str] = ()
) -> RepairReport:
    """Rebuild rows, ids and columns from the products whose row is intact: the row is theirs alone,
    the id list names them there, and every column holds their 8 bytes. The rest are removed from the
    index (and from the product records, so the next ingest redoes them). Atomic (WATCH/MULTI): a
    concurrent write makes it start over. A new epoch makes every worker reload in full."""
    cols = [keys.column(s) for s in scan_signals]
    while True:
        with r.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(keys.ROWS, keys.IDS, keys.VERSION, keys.FREE_ROWS, keys.ROW_PATCH, *cols)
                problems = check(pipe, scan_signals)
                # After watch() the pipeline replies at once; the stubs type its commands as buffered.
                row_of = cast("dict[bytes, bytes]", pipe.hgetall(keys.ROWS))
                rows = {_text(k): int(v) for k, v in row_of.items()}
                ids = _text(pipe.get(keys.IDS) or b"").split("\n")[:-1]
                patch = cast("dict[bytes, bytes]", pipe.hgetall(keys.ROW_PATCH))
                for slot, owner in patch.items():  # rows changed since IDS was written
                    if int(slot) < len(ids):
                        ids[int(slot)] = _text(owner)
                columns = [_raw(pipe.get(c)) for c in cols]
                usable = min([len(c) // 8 for c in columns], default=0)
                owners: dict[int, list[str]] = {}
                for pid, row in rows.items():
                    owners.setdefault(row, []).append(pid)
                kept = sorted(
                    (row, pids[0])
                    for row, pids in owners.items()
                    if len(pids) == 1 and 0 <= row < min(usable, len(ids)) and ids[row] == pids[0]
                )
                keep_ids = {pid for _, pid in kept}
                dropped = sorted(set(rows) - keep_ids)
                pipe.multi()
                pipe.delete(keys.ROWS, keys.IDS, keys.FREE_ROWS, keys.ROW_PATCH)
                pipe.set(keys.ROW_COUNT, len(kept))  # rows renumbered 0..kept-1: no free slots left
                if kept:
                    pipe.hset(keys.ROWS, mapping={pid: i for i, (_, pid) in enumerate(kept)})
                    pipe.set(keys.IDS, "".join(f"{pid}\n" for _, pid in kept))
                for key, col in zip(cols, columns, strict=True):
                    pipe.set(key, b"".join(col[row * 8 : row * 8 + 8] for row, _ in kept))
                if dropped:
                    pipe.hdel(keys.PRODUCTS, *dropped)
                    for s in blob_signals:
                        pipe.hdel(keys.signal(s), *dropped)
                pipe.incr(keys.VERSION)
                pipe.set(keys.EPOCH, uuid.uuid4().hex)  # caches reload in full, not from the stream
                pipe.execute()
                return RepairReport(len(kept), dropped, problems)
            except redis.WatchError:
                continue
