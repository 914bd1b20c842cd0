"""Thin Celery tasks with stable, public names. Each parses, calls common/, writes, and never raises
for bad input: a bad message gets an error result, a bad product a recorded failure."""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

import redis
from celery.exceptions import Reject, SoftTimeLimitExceeded

from common import keys, presets
from common.errors import BadRequest, ConfigError, NeardupError
from common.ids import check_product_id
from common.ingestion import ingest_items
from common.querying import run_query
from common.settings import Settings
from common.store import IndexStore
from workers import index_cache, process_init  # noqa: F401 - process_init: pool set-up hooks
from workers.app import app

log = logging.getLogger(__name__)
JOB_TTL = 7 * 24 * 3600
# TEST-ONLY fault hook, off unless set: an ingest chunk holding this productId SIGKILLs the process
# running it, every time, like a decoder crash or the OOM killer would. It lets the system tests
# produce a real poison message (tests/system/test_faults.py). Never set it in production.
TEST_CRASH_ON = "NEARDUP_TEST_CRASH_ON"
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)


def delivery_count(task_id: str | None) -> int:
    """How many times this message was delivered (a worker killed mid-task redelivers it)."""
    if not task_id:
        return 1
    r = index_cache.store().r
    key = keys.attempts(task_id)
    pipe = r.pipeline()
    pipe.incr(key)
    # Long enough to see every redelivery (visibility timeout x deliveries), short enough that a
    # million queries a day do not leave millions of keys behind.
    settings = index_cache.settings()
    pipe.expire(key, (settings.task_time_limit + 60) * (settings.max_deliveries + 1))
    return int(pipe.execute()[0])


def _error(exc: NeardupError) -> dict[str, Any]:
    return {"ok": False, "error": {"stage": exc.stage, "reason": exc.reason, "detail": str(exc)}}


def _parse_items(items: Any) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Valid (productId, url) pairs and (id-ish, reason) for the rest."""
    good, bad = [], []
    if not isinstance(items, list):
        return good, [("?", "items must be a list")]
    for item in items:
        try:
            if not isinstance(item, dict):
                raise BadRequest("bad_item", "each item is an object {product_id, url}")
            pid = check_product_id(item.get("product_id"))
            url = item.get("url")
            if not isinstance(url, str) or not url:
                raise BadRequest("missing_url", f"product {pid} has no url")
            good.append((pid, url))
        except BadRequest as exc:
            pid = item.get("product_id") if isinstance(item, dict) else None
            bad.append((pid if isinstance(pid, str) else "?", str(exc)))
    return good, bad


def _requeue_when_redis_is_down(exc: Exception) -> Reject:
    """A failed task is acked, and its products would be neither indexed nor recorded: when the index
    Redis is what failed, hand the message back instead (the broker may also be down; then it stays
    unacked and returns after the visibility timeout). The pause keeps a separate, healthy broker
    from spinning the message; redeliveries still count towards the poison guard."""
    log.warning("index Redis unavailable (%s); the message goes back to the queue", exc)
    time.sleep(1.0)
    return Reject(f"index Redis unavailable: {exc}", requeue=True)


@app.task(name="neardup.ingest", bind=True, ignore_result=True)
def ingest(self, job_id: str, items: list[dict], force: bool = False) -> None:
    """Download, describe and index a chunk of products; each ends indexed or recorded as failed."""
    try:
        _ingest(self.request.id, job_id, items, force)
    except REDIS_DOWN as exc:
        raise _requeue_when_redis_is_down(exc) from None
    except SoftTimeLimitExceeded:
        raise  # already settled inside: every product ended done or failed
    except Exception as exc:
        # Anything else (Redis out of memory or read-only, a bug): a failed task is acked, so settle
        # every product with the reason now, or the job would wait for them forever.
        log.exception("ingest chunk failed")
        _settle_or_requeue(job_id, items, f"{type(exc).__name__}: {exc}")


def _ingest(task_id: str | None, job_id: str, items: list[dict], force: bool) -> None:
    store = index_cache.store()
    settings = index_cache.settings()
    r = store.r
    good, bad = _parse_items(items)
    done, failed = keys.job_done(str(job_id)), keys.job_failed(str(job_id))
    for pid, reason in bad:
        if pid != "?" and len(pid) <= 256:
            store.record_failure(pid[:256], "request", "bad_item", reason)
        r.sadd(failed, pid[:256])
    try:
        index_cache.check_signals()
    except ConfigError as exc:  # this worker computes other signatures than the index holds
        for pid, url in good:
            store.record_failure(pid, exc.stage, exc.reason, str(exc), url)
        if good:
            r.sadd(failed, *[pid for pid, _ in good])
        return
    if delivery_count(task_id) > settings.max_deliveries:
        # Poison: this chunk killed its worker every time. Record it and let the queue move on.
        detail = "task killed its worker repeatedly"
        _settle(good, store, done, failed, "poison", detail, attempts=settings.max_deliveries)
        return
    if not force:
        already = store.up_to_date(good)
        if any(already):
            r.sadd(done, *[pid for (pid, _), a in zip(good, already, strict=True) if a])
        good = [item for item, a in zip(good, already, strict=True) if not a]
    crash_on = os.environ.get(TEST_CRASH_ON)
    if crash_on and any(pid == crash_on for pid, _ in good):
        os.kill(os.getpid(), signal.SIGKILL)
    try:
        outcomes = ingest_items(good, store, settings, force=force)
    except SoftTimeLimitExceeded:
        # Out of time: every product still ends done or failed, so the job finishes instead of waiting.
        _settle(good, store, done, failed, "time_limit", "the ingest task hit its soft time limit")
        raise
    pipe = r.pipeline()
    for o in outcomes:
        pipe.sadd(done if o.error is None else failed, o.product_id)
    pipe.expire(done, JOB_TTL)
    pipe.expire(failed, JOB_TTL)
    pipe.execute()


def _settle_or_requeue(job_id: str, items: list[dict], detail: str) -> None:
    good, _ = _parse_items(items)
    try:
        store = index_cache.store()
        _settle(
            good, store, keys.job_done(str(job_id)), keys.job_failed(str(job_id)), "internal_error", detail
        )
    except Exception as exc:  # cannot even record: hand the message back rather than lose it
        raise Reject(f"could not record the chunk's failure: {exc}", requeue=True) from None


def _settle(
    items: list[tuple[str, str]],
    store: IndexStore,
    done: str,
    failed: str,
    reason: str,
    detail: str,
    attempts: int = 1,
) -> None:
    """Mark each product of a chunk that cannot run normally: done if indexed, else a recorded failure."""
    if not items:
        return
    indexed = store.indexed([pid for pid, _ in items])
    for (pid, url), is_indexed in zip(items, indexed, strict=True):
        if not is_indexed:
            store.record_failure(pid, "ingest", reason, detail, url, attempts=attempts)
        store.r.sadd(done if is_indexed else failed, pid)
    store.r.expire(done, JOB_TTL)
    store.r.expire(failed, JOB_TTL)


@app.task(name="neardup.query", bind=True)
def query(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Public query task: exactly one of product_id, url, image_b64, path (+ options). JSON result."""
    if args:
        return _error(BadRequest("bad_request", "pass the query as keyword arguments, not positional"))
    if delivery_count(self.request.id) > index_cache.settings().max_deliveries:
        return _error(BadRequest("poison", "this query killed its worker repeatedly"))
    try:
        index_cache.check_signals()
    except ConfigError as exc:
        return _error(exc)
    return run_query(
        kwargs,
        index_cache.snapshot,
        index_cache.store(),
        index_cache.settings(),
        cache=index_cache.blob_cache(),
    )


@app.task(name="neardup.query_batch", bind=True, ignore_result=True)
def query_batch(self, job_id: str, queries: list[dict]) -> None:
    """Many queries in one message (amortises broker cost); results land in the job's results hash."""
    try:
        _query_batch(self.request.id, job_id, queries)
    except REDIS_DOWN as exc:
        raise _requeue_when_redis_is_down(exc) from None
    except SoftTimeLimitExceeded:
        raise  # already answered inside
    except Exception as exc:  # see ingest: answer every query with the error rather than lose them
        log.exception("query batch failed")
        _answer_all(job_id, queries, NeardupError("internal_error", f"{type(exc).__name__}: {exc}"))


def _answer_all(job_id: str, queries: list[dict], exc: NeardupError) -> None:
    import json

    keyed = [q["key"] for q in queries if isinstance(q, dict) and isinstance(q.get("key"), str)]
    if not keyed:
        return
    try:
        r = index_cache.store().r
        pipe = r.pipeline()
        for key in keyed:
            pipe.hsetnx(keys.job_results(str(job_id)), key, json.dumps(_error(exc)))  # keep answers given
        pipe.sadd(keys.job_done(str(job_id)), *keyed)
        pipe.execute()
    except Exception as err:
        raise Reject(f"could not record the batch's failure: {err}", requeue=True) from None


def _prefetch_blobs(queries: Any, store: IndexStore, settings: Settings) -> None:
    """The blobs of every by-id query of a batch in one bulk read per signal (instead of a round trip
    per query); the queries then find them in the process's blob cache."""
    verified = {name for name, rule in presets.PRESETS.items() if rule.verified}
    pids = [
        q["product_id"]
        for q in (queries if isinstance(queries, list) else [])
        if isinstance(q, dict)
        and isinstance(q.get("product_id"), str)
        and (q.get("preset") or settings.preset) in verified
    ]
    if len(pids) > 1:
        cache = index_cache.blob_cache()
        for signal in store.blob_signals:
            cache.blobs(signal, pids)


def _query_batch(task_id: str | None, job_id: str, queries: list[dict]) -> None:
    import json

    store, settings = index_cache.store(), index_cache.settings()
    results_key, done = keys.job_results(str(job_id)), keys.job_done(str(job_id))
    poisoned = delivery_count(task_id) > settings.max_deliveries
    try:
        index_cache.check_signals()
        config_error = None
    except ConfigError as exc:
        config_error = exc
    pipe = store.r.pipeline()
    synced: list = []
    if config_error is None and not poisoned:
        _prefetch_blobs(queries, store, settings)

    def snapshot_once():  # one index sync per batch: its queries are answered from one version
        if not synced:
            synced.append(index_cache.snapshot())
        return synced[0]

    for q in queries if isinstance(queries, list) else []:
        if not isinstance(q, dict) or not isinstance(q.get("key"), str):
            continue
        body = {k: v for k, v in q.items() if k != "key"}
        if config_error is not None:
            result = _error(config_error)
        elif poisoned:
            result = _error(BadRequest("poison", "this batch killed its worker repeatedly"))
        else:
            try:
                result = run_query(
                    body,
                    snapshot_once,
                    store,
                    settings,
                    reraise=(SoftTimeLimitExceeded,),
                    cache=index_cache.blob_cache(),
                )
            except SoftTimeLimitExceeded:
                # Out of time: keep the answers given, answer the rest with the reason, and finish.
                pipe.execute()
                _answer_all(job_id, queries, NeardupError("time_limit", "the batch hit its soft time limit"))
                raise
        pipe.hset(results_key, q["key"], json.dumps(result))
        pipe.sadd(done, q["key"])
    pipe.expire(results_key, JOB_TTL)
    pipe.expire(done, JOB_TTL)
    pipe.execute()
