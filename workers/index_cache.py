"""Per-process worker state: the Redis client, the index store and the in-memory Snapshot.

The Snapshot is loaded in bulk once, then kept current from the change stream: each query first
compares one integer (the index version) and applies only what changed since, so a product ingested
a moment ago is found by the next query without reloading the index.
"""

from __future__ import annotations

import logging
import os
import threading

import numpy as np
import redis

from common import localindex, pipeline, presets
from common.blobcache import BlobCache
from common.settings import Settings
from common.signatures import pack64
from common.snapshot import Snapshot
from common.store import IndexStore

log = logging.getLogger(__name__)
_lock = threading.Lock()
_state: dict = {}  # pid -> (settings, client, store); rebuilt after fork
_snap: Snapshot | None = None
_last_change = "0-0"
_epoch = ""
# Candidates' blobs kept per process (common.blobcache), in step with the snapshot below.
BLOB_CACHE_BYTES = 64 * 1024 * 1024
_blob_cache: tuple[int, BlobCache] | None = None


def settings() -> Settings:
    return _process_state()[0]


def store() -> IndexStore:
    return _process_state()[2]


def check_signals() -> None:
    """Raise ConfigError when the index holds another signal set than this worker computes (another
    decode mode or signature version). One GET per task, because an index can be reset or replaced
    under a running worker; tasks turn the error into recorded failures and error results."""
    store().check_signals()


def blob_cache() -> BlobCache:
    """This process's cache of candidates' blobs: pass its `blobs` where store.blobs would go."""
    global _blob_cache
    if _blob_cache is None or _blob_cache[0] != os.getpid():
        _blob_cache = (os.getpid(), BlobCache(store().blobs, BLOB_CACHE_BYTES))
    return _blob_cache[1]


def _process_state() -> tuple[Settings, redis.Redis, IndexStore]:
    state = _state.get(os.getpid())
    if state is None:
        s = Settings.from_env()
        client = redis.Redis.from_url(
            s.redis_url,
            socket_timeout=30,
            socket_connect_timeout=5,
            health_check_interval=25,
            retry_on_timeout=True,
        )
        st = IndexStore(client, pipeline.SCAN_SIGNALS, pipeline.BLOB_SIGNALS)
        _state.clear()
        _state[os.getpid()] = state = (s, client, st)
    return state


def snapshot() -> Snapshot:
    """The index as of now: catches up incrementally, reloads in full only when too far behind."""
    global _snap, _last_change
    st = store()
    with _lock:
        if _snap is None:
            _full_load(st)
            return _snap
        version, epoch = st.version_and_epoch()
        if epoch != _epoch:
            _full_load(st)  # the index was reset or replaced under us
            return _snap
        if version == _snap.version:
            return _snap
        changes = st.changes_since(_last_change)
        if not changes or changes[0][2] != _snap.version + 1:
            _full_load(st)  # the stream was trimmed past us, or the index was reset
            return _snap
        pids = list(dict.fromkeys(pid for _, pid, _ in changes))
        blob_cache().forget(pids)
        _snap.apply(
            ((pid, sigs) for pid, sigs in zip(pids, _signatures(st, pids), strict=True) if sigs),
            version=changes[-1][2],
        )
        _last_change = changes[-1][0]
        return _snap


def _signatures(st: IndexStore, pids: list[str]) -> list[dict[str, bytes] | None]:
    return st.signatures_many(pids, scan_only=True)


def _full_load(st: IndexStore) -> None:
    global _snap, _last_change, _epoch
    blob_cache().clear()
    bulk = st.bulk()
    snap = Snapshot(pipeline.SCAN_SIGNALS)
    arrays = {k: np.frombuffer(v, dtype=">u8").astype(np.uint64) for k, v in bulk.columns.items()}
    snap.load_arrays(bulk.ids, arrays, bulk.version)
    _warm(snap)
    _snap, _last_change, _epoch = snap, bulk.last_change, bulk.epoch


def _warm(snap: Snapshot) -> None:
    """Build the scan tables now (a blank query through the default rule), so the first real query
    after a load does not pay for them."""
    rule = presets.resolve(settings().preset, settings().max_distance, settings().min_similarity)
    blank = {key: pack64(0) for key in pipeline.SCAN_SIGNALS}
    try:
        pipeline.find_matches(blank, snap, rule)
        if set(pipeline.ORB_WORDS) <= set(snap.signal_keys):
            localindex.index_for(snap)  # the inverted word index: seconds at 1M, so not in a query
    except Exception:  # warming is an optimisation: a failure here must not stop the worker
        log.warning("index warm-up failed", exc_info=True)
