"""Thin Celery tasks with stable, public names (common.config.tasks). Each parses, calls common/, writes,
and never raises for bad input: a bad message gets an error result, a bad product a recorded failure.
Poison, signal-set, Redis-down and time-limit handling live in one place: workers.guard."""

from __future__ import annotations

import json
import logging
import os
import signal
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from common.config import tasks as names
from common.config.settings import Settings
from common.config.tasks import JOB_TTL
from common.errors import BadRequest, NeardupError, error_result
from common.ids import check_product_id
from common.index import keys
from common.index.store import IndexStore
from common.ingestion import ingest_items
from common.match import presets
from common.match.querying import run_query
from workers import (
    index_cache,
    message_guard,
    process_init,  # noqa: F401 - process_init: pool set-up hooks
)
from workers.app import app
from workers.guard import GuardedTask, refuse_positional

log = logging.getLogger(__name__)
# TEST-ONLY fault hook, off unless set: an ingest chunk holding this productId SIGKILLs the process
# running it, every time, like a decoder crash or the OOM killer would. It lets the system tests
# produce a real poison message (tests/system/test_faults.py). Never set it in production.
TEST_CRASH_ON = "NEARDUP_TEST_CRASH_ON"


def _parse_items(items: Any) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Valid (productId, url) pairs and (id-ish, reason) for the rest."""
    good: list[tuple[str, str]] = []
    bad: list[tuple[str, str]] = []
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
            if not message_guard.is_utf8(url):
                raise BadRequest("not_utf8", f"product {pid}: url is not valid UTF-8")
            good.append((pid, url))
        except BadRequest as exc:
            raw_pid = item.get("product_id") if isinstance(item, dict) else None
            bad.append((message_guard.utf8_safe(raw_pid) if isinstance(raw_pid, str) else "?", str(exc)))
    return good, bad


@app.task(name=names.INGEST, base=GuardedTask, bind=True, ignore_result=True, problem_stage="ingest")
def ingest(self: GuardedTask, job_id: str, items: list[dict], force: bool = False) -> None:
    """Download, describe and index a chunk of products; each ends indexed or recorded as failed."""
    done, failed = keys.job_done(str(job_id)), keys.job_failed(str(job_id))
    good, bad = _parse_items(items)

    def settle(exc: NeardupError) -> None:
        _record_bad(bad, failed)
        _settle(good, index_cache.store(), done, failed, exc)

    self.guarded(lambda: _ingest(job_id, good, bad, force), settle, job_id=job_id)


def _record_bad(bad: list[tuple[str, str]], failed: str) -> None:
    store = index_cache.store()
    for pid, reason in bad:
        if pid != "?" and len(pid) <= 256:
            store.record_failure(pid[:256], "request", "bad_item", reason)
        store.r.sadd(failed, pid[:256])


def _ingest(job_id: str, good: list[tuple[str, str]], bad: list[tuple[str, str]], force: bool) -> None:
    store = index_cache.store()
    settings = index_cache.settings()
    r = store.r
    done, failed = keys.job_done(str(job_id)), keys.job_failed(str(job_id))
    _record_bad(bad, failed)
    if not force:
        already = store.up_to_date(good)
        if any(already):
            r.sadd(done, *[pid for (pid, _), a in zip(good, already, strict=True) if a])
        good = [item for item, a in zip(good, already, strict=True) if not a]
    crash_on = os.environ.get(TEST_CRASH_ON)
    if crash_on and any(pid == crash_on for pid, _ in good):
        os.kill(os.getpid(), signal.SIGKILL)
    outcomes = ingest_items(good, store, settings, force=force)
    pipe = r.pipeline()
    for o in outcomes:
        pipe.sadd(done if o.error is None else failed, o.product_id)
    pipe.expire(done, JOB_TTL)
    pipe.expire(failed, JOB_TTL)
    pipe.execute()


def _settle(
    items: list[tuple[str, str]], store: IndexStore, done: str, failed: str, exc: NeardupError
) -> None:
    """Mark each product of a chunk that cannot run normally: done if indexed, else a recorded failure."""
    if not items:
        return
    attempts = index_cache.settings().max_deliveries if exc.reason == "poison" else 1
    indexed = store.indexed([pid for pid, _ in items])
    for (pid, url), is_indexed in zip(items, indexed, strict=True):
        if not is_indexed:
            store.record_failure(pid, exc.stage, exc.reason, exc.detail, url, attempts=attempts)
        store.r.sadd(done if is_indexed else failed, pid)
    store.r.expire(done, JOB_TTL)
    store.r.expire(failed, JOB_TTL)


@app.task(name=names.QUERY, base=GuardedTask, bind=True)
def query(self: GuardedTask, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Public query task: exactly one of product_id, url, image_b64, path (+ options). JSON result."""
    if (refused := refuse_positional(args)) is not None:
        return refused
    if (not_utf8 := message_guard.undecodable(kwargs)) is not None:
        return error_result(not_utf8)
    return self.answer(
        lambda: run_query(
            kwargs,
            index_cache.snapshot,
            index_cache.store(),
            index_cache.settings(),
            cache=index_cache.blob_cache(),
        )
    )


@app.task(name=names.QUERY_BATCH, base=GuardedTask, bind=True, ignore_result=True)
def query_batch(self: GuardedTask, job_id: str, queries: list[dict]) -> None:
    """Many queries in one message (amortises broker cost); results land in the job's results hash."""
    self.guarded(
        lambda: _query_batch(job_id, queries), lambda exc: _answer_all(job_id, queries, exc), job_id=job_id
    )


def _answer_all(job_id: str, queries: list[dict], exc: NeardupError) -> None:
    """Every query of the batch not answered yet gets this error (answers already given are kept)."""
    keyed = [
        message_guard.utf8_safe(q["key"])
        for q in queries
        if isinstance(q, dict) and isinstance(q.get("key"), str)
    ]
    if not keyed:
        return
    r = index_cache.store().r
    pipe = r.pipeline()
    for key in keyed:
        pipe.hsetnx(keys.job_results(str(job_id)), key, json.dumps(error_result(exc)))
    pipe.sadd(keys.job_done(str(job_id)), *keyed)
    pipe.expire(keys.job_results(str(job_id)), JOB_TTL)
    pipe.expire(keys.job_done(str(job_id)), JOB_TTL)
    pipe.execute()


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


def _query_batch(job_id: str, queries: list[dict]) -> None:
    store, settings = index_cache.store(), index_cache.settings()
    results_key, done = keys.job_results(str(job_id)), keys.job_done(str(job_id))
    pipe = store.r.pipeline()
    synced: list = []
    _prefetch_blobs(queries, store, settings)

    def snapshot_once():  # one index sync per batch: its queries are answered from one version
        if not synced:
            synced.append(index_cache.snapshot())
        return synced[0]

    for q in queries if isinstance(queries, list) else []:
        if not isinstance(q, dict) or not isinstance(q.get("key"), str):
            continue
        body = {k: v for k, v in q.items() if k != "key"}
        key = message_guard.utf8_safe(q["key"])  # a key Redis cannot store would lose the whole batch
        if (not_utf8 := message_guard.undecodable(body)) is not None:
            result = error_result(not_utf8)
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
                pipe.execute()  # keep the answers given; the guard answers the rest with the reason
                raise
        pipe.hset(results_key, key, json.dumps(result))
        pipe.sadd(done, key)
    pipe.expire(results_key, JOB_TTL)
    pipe.expire(done, JOB_TTL)
    pipe.execute()
