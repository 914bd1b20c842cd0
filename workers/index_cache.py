"""Per-process worker state: the Redis client, the index store and the in-memory Snapshot.

The Snapshot is loaded in bulk once, then kept current from the change stream: each query first
compares one integer (the index version) and applies only what changed since, so a product ingested
a moment ago is found by the next query without reloading the index, and a product removed a moment
ago is never listed by it. Review feedback (common.feedback) has its own version, read in the same
round trip; when it moved, the verdicts are read again and attached to the snapshot.
"""

from __future__ import annotations

import logging
import os
import threading

import numpy as np
import redis

from common.config.settings import Settings
from common.index import consistency, feedback, orb_words
from common.index.blob_cache import BlobCache
from common.index.embeddings import EmbeddingMatrix
from common.index.snapshot import Snapshot
from common.index.store import Change, IndexStore
from common.match import pipeline, presets
from common.signals import embedding, signal_set
from common.signals.signatures import pack64

log = logging.getLogger(__name__)
_lock = threading.Lock()
_state: dict = {}  # pid -> (settings, client, store); rebuilt after fork
_snap: Snapshot | None = None
_last_change = "0-0"
_epoch = ""
_feedback = feedback.Feedback()
# Candidates' blobs kept per process (common.blobcache), in step with the snapshot below.
BLOB_CACHE_BYTES = 64 * 1024 * 1024
_blob_cache: tuple[int, BlobCache] | None = None


def settings() -> Settings:
    return _process_state()[0]


def store() -> IndexStore:
    return _process_state()[2]


def signals() -> signal_set.SignalSet:
    """The signal set this worker computes (from its settings): what its index must hold."""
    return signal_set.of(settings())


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
        if s.redis_url is None:  # whoever starts the workers (embedded mode too) sets NEARDUP_REDIS_URL
            raise ValueError("workers need NEARDUP_REDIS_URL: the index Redis")
        client = redis.Redis.from_url(
            s.redis_url,
            socket_timeout=30,
            socket_connect_timeout=5,
            health_check_interval=25,
            retry_on_timeout=True,
        )
        signals = signal_set.of(s)
        st = IndexStore.of(client, signals)
        _state.clear()
        _state[os.getpid()] = state = (s, client, st)
    return state


def snapshot() -> Snapshot:
    """The index as of now: catches up incrementally, reloads in full only when too far behind."""
    global _snap, _last_change
    st = store()
    with _lock:
        if _snap is None:
            return _full_load(st)
        version, epoch, feedback_version = st.sync_state()
        if epoch != _epoch:
            return _full_load(st)  # the index was reset or replaced under us
        if feedback_version != _feedback.version:
            _load_feedback(st)
        if version == _snap.version:
            return _snap
        changes = st.changes_since(_last_change)
        if not changes or changes[0].version != _snap.version + 1:
            return _full_load(st)  # the stream was trimmed past us, or the index was reset
        blob_cache().forget(list(dict.fromkeys(c.pid for c in changes)))
        _catch_up(st, _snap, changes)
        _last_change = changes[-1].id
        return _snap


def _catch_up(st: IndexStore, snap: Snapshot, changes: list[Change]) -> None:
    """Apply a run of changes: each product as it is in Redis now, at the row Redis gave it."""
    last_kind = {c.pid: c.kind for c in changes}
    removed = [pid for pid, kind in last_kind.items() if kind == "rm"]
    _forget_embeddings(snap, removed)
    snap.remove(removed, changes[-1].version)
    written = [pid for pid, kind in last_kind.items() if kind != "rm"]
    now = st.rows_and_signatures(written, scan_only=True)
    snap.place(
        ((pid, row, sigs) for pid, (row, sigs) in zip(written, now, strict=True) if row is not None and sigs),
        version=changes[-1].version,
    )
    # Written in this run but removed since it was read: gone in Redis, so gone here too.
    gone = [pid for pid, (row, _) in zip(written, now, strict=True) if row is None]
    _forget_embeddings(snap, gone)
    snap.remove(gone, snap.version)
    _sync_embeddings(st, snap, [pid for pid in written if pid in snap.rows])


def _forget_embeddings(snap: Snapshot, pids: list[str]) -> None:
    """emb: a removed product's vector leaves with it (its row may be reused by another product)."""
    if snap.embeddings is None:
        return
    rows = [snap.rows[pid] for pid in pids if pid in snap.rows]
    snap.embeddings.set_many(rows, [None] * len(rows))


def _load_feedback(st: IndexStore) -> None:
    global _feedback
    _feedback = feedback.read(st.r)
    if _snap is not None:
        _snap.exclusions = _feedback.exclusions()


def _full_load(st: IndexStore) -> Snapshot:
    """Load the whole index into a new snapshot, which becomes this process's and is returned."""
    global _snap, _last_change, _epoch
    consistency.require_consistent(st.r, st.scan_signals)  # a clear error, not "40 signatures for 48 ids"
    blob_cache().clear()
    bulk = st.bulk()
    snap = Snapshot(st.scan_signals)
    arrays = {k: np.frombuffer(v, dtype=">u8").astype(np.uint64) for k, v in bulk.columns.items()}
    try:
        snap.load_arrays(bulk.ids, arrays, bulk.version)
    except ValueError as exc:  # duplicate ids: damage the counts above do not show
        raise consistency.IndexInconsistent(
            "index_inconsistent", f"the index is inconsistent ({exc}): {consistency.REPAIR_HINT}"
        ) from None
    _sync_embeddings(st, snap, bulk.ids)
    _warm(snap)
    _snap, _last_change, _epoch = snap, bulk.last_change, bulk.epoch
    _load_feedback(st)
    return snap


def _sync_embeddings(st: IndexStore, snap: Snapshot, pids: list[str], chunk: int = 10_000) -> None:
    """emb: the learned-embedding rows of these products into the snapshot's matrix (read after the
    scan columns: a vector newer than the cut is harmless, the change stream brings it again)."""
    signal = next(iter(st.identity_signals), None)  # the embedding signal of this index, if any
    if signal is None:
        return
    for start in range(0, len(pids), chunk):
        part = pids[start : start + chunk]
        blobs = st.blobs(signal, part)
        if snap.embeddings is None:
            dims = [embedding.dimension_of(b) for b in blobs if b is not None and len(b) > 7]
            if not dims:
                continue
            snap.embeddings = EmbeddingMatrix(dims[0])
        found = [(snap.rows.get(pid), blob) for pid, blob in zip(part, blobs, strict=True)]
        found = [(row, blob) for row, blob in found if row is not None]
        snap.embeddings.set_many([row for row, _ in found], [blob for _, blob in found])


def _warm(snap: Snapshot) -> None:
    """Build the scan tables now (a blank query through the default rule), so the first real query
    after a load does not pay for them."""
    rule = presets.resolve(settings().preset, settings().max_distance, settings().min_similarity)
    blank = {key: pack64(0) for key in signals().scan}
    try:
        pipeline.find_matches(blank, snap, rule)
        if set(signal_set.ORB_WORDS) <= set(snap.signal_keys):
            orb_words.index_for(snap)  # the inverted word index: seconds at 1M, so not in a query
    except Exception:  # warming is an optimisation: a failure here must not stop the worker
        log.warning("index warm-up failed", exc_info=True)
