"""Enqueue work, follow its progress through Redis sets (not per-task results), gather the answers."""

from __future__ import annotations

import contextlib
import json
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis
from celery import Celery
from tqdm import tqdm

from common.config import tasks
from common.index import keys
from common.index.store import IndexStore
from producer.commands.console import Unavailable

QUERY_CHUNK = 32
JOB_TTL = 7 * 24 * 3600  # as long as the workers keep a job's sets
KOMBU_PRIORITY_SEP = "\x06\x16"


class Stalled(Unavailable):
    """No progress and no worker to make any."""


@dataclass
class JobProgress:
    job_id: str
    total: int
    done: int = 0
    failed: int = 0


def new_job_id(kind: str) -> str:
    return f"{kind}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"


def enqueue_ingest(
    app: Celery,
    store: IndexStore,
    items: Sequence[tuple[str, str]],
    chunk: int,
    force: bool = False,
    job_id: str | None = None,
) -> tuple[str, int, int]:
    """One task per chunk of products on queue `ingest`. Already-indexed products are skipped unless
    forced, so an interrupted run resumes instead of starting over. Returns (job id, sent, skipped)."""
    job_id = job_id or new_job_id("ingest")
    todo = list(items)
    skipped = 0
    if not force:
        todo = []
        for start in range(0, len(items), 5000):
            part = items[start : start + 5000]
            for item, indexed in zip(part, store.up_to_date(part), strict=True):
                if indexed:
                    skipped += 1
                else:
                    todo.append(item)
    note_job(store.r, job_id, {"total": len(todo), "kind": "ingest", "at": time.time()})
    for start in range(0, len(todo), chunk):
        batch = [{"product_id": pid, "url": url} for pid, url in todo[start : start + chunk]]
        app.send_task(
            tasks.INGEST, kwargs={"job_id": job_id, "items": batch, "force": force}, queue=tasks.INGEST_QUEUE
        )
    return job_id, len(todo), skipped


def enqueue_queries(
    app: Celery, r: redis.Redis, queries: Sequence[dict[str, Any]], job_id: str | None = None
) -> str:
    """Queries in chunks on queue `query`; each dict carries a unique `key` naming it in the output."""
    job_id = job_id or new_job_id("query")
    note_job(r, job_id, {"total": len(queries), "kind": "query", "at": time.time()})
    for start in range(0, len(queries), QUERY_CHUNK):
        app.send_task(
            tasks.QUERY_BATCH,
            kwargs={"job_id": job_id, "queries": list(queries[start : start + QUERY_CHUNK])},
            queue=tasks.QUERY_QUEUE,
        )
    return job_id


def note_job(r: redis.Redis, job_id: str, meta: Mapping[str, str | int | float]) -> None:
    """The job's notes (kind, size; workers add problems such as a poisoned shard), kept as long as
    the job's other bookkeeping."""
    pipe = r.pipeline()
    # A copy typed as hset wants it: Mapping's key type is invariant, str keys alone do not fit str | bytes.
    pipe.hset(keys.job_meta(job_id), mapping={k: v for k, v in meta.items()})
    pipe.expire(keys.job_meta(job_id), tasks.JOB_TTL)
    pipe.execute()


def job_notes(r: redis.Redis, job_id: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in r.hgetall(keys.job_meta(job_id)).items()}


def count(r: redis.Redis, job_id: str) -> tuple[int, int]:
    """(finished, failed-and-not-later-done) for a job."""
    done_key, failed_key = keys.job_done(job_id), keys.job_failed(job_id)
    pipe = r.pipeline()
    pipe.scard(done_key)
    pipe.sdiff(failed_key, done_key)
    done, failed_only = pipe.execute()
    return int(done), len(failed_only)


def wait(
    r: redis.Redis,
    job_id: str,
    total: int,
    desc: str,
    workers_alive: Callable[[], bool],
    progress: bool = True,
    stall_seconds: float = 30.0,
    timeout: float | None = None,
    pending: Callable[[], int | None] | None = None,
) -> JobProgress:
    """Poll the job's Redis sets until every item is done or failed; fail clearly if nobody works on it."""
    state = JobProgress(job_id, total)
    bar = tqdm(
        total=total,
        desc=desc,
        unit="img" if desc == "ingest" else "q",
        disable=not progress or not sys.stderr.isatty(),
        dynamic_ncols=True,
        leave=True,
    )
    started = last_change = time.monotonic()
    finished = 0
    try:
        while True:
            done, failed = count(r, job_id) if total else (0, 0)
            now = time.monotonic()
            if done + failed != finished:
                bar.update(done + failed - finished)
                bar.set_postfix(failed=failed)
                finished, last_change = done + failed, now
            state.done, state.failed = done, failed
            if finished >= total:
                return state
            if timeout is not None and now - started > timeout:
                raise Stalled(f"{desc}: timed out after {timeout:.0f} s at {finished}/{total}")
            if now - last_change > stall_seconds:
                if not workers_alive():
                    raise Stalled(f"{desc}: no progress for {stall_seconds:.0f} s and no worker answers")
                if pending is not None and pending() == 0:
                    raise Stalled(
                        f"{desc}: no progress for {stall_seconds:.0f} s and no message left in the "
                        f"queues at {finished}/{total}: work was lost (see the workers' logs)"
                    )
                last_change = now
            time.sleep(0.05 if total < 1000 else 0.2)
    except KeyboardInterrupt:  # also a SIGTERM or SIGHUP (producer.stop_signals)
        cancel(r, job_id)
        raise
    finally:
        bar.close()


def cancel(r: redis.Redis, job_id: str) -> None:
    """Mark a job cancelled: workers drop its tasks still queued (workers.guard). Best effort, and
    never cut short by another signal: the command is stopping anyway."""
    from producer.stop_signals import deferred

    with deferred(), contextlib.suppress(redis.RedisError, OSError):
        r.set(keys.job_cancelled(job_id), 1, ex=JOB_TTL)


def gather(r: redis.Redis, job_id: str) -> dict[str, dict[str, Any]]:
    raw = r.hgetall(keys.job_results(job_id))
    return {k.decode(): json.loads(v) for k, v in raw.items()}


def failed_items(r: redis.Redis, store: IndexStore, job_id: str) -> dict[str, dict]:
    """The failure record of every product of this job that did not end indexed."""
    # types-redis types sdiff's members as any value; the client, not decoding, returns bytes.
    failed_only = cast("set[bytes]", r.sdiff(keys.job_failed(job_id), keys.job_done(job_id)))
    pids = sorted(p.decode() for p in failed_only)
    records = r.hmget(keys.FAILURES, pids) if pids else []
    return {
        pid: (json.loads(rec) if rec else {"reason": "unknown"})
        for pid, rec in zip(pids, records, strict=True)
    }


def messages_pending(broker: redis.Redis) -> int:
    """Messages waiting in either queue or delivered and not yet acknowledged (running)."""
    return sum(queue_lengths(broker).values()) + int(broker.hlen("unacked"))


def queue_lengths(broker: redis.Redis) -> dict[str, int]:
    """Messages waiting per queue (kombu keeps one list per priority band)."""
    out = {}
    for queue in (tasks.INGEST_QUEUE, tasks.QUERY_QUEUE):
        names = [queue] + [f"{queue}{KOMBU_PRIORITY_SEP}{p}" for p in range(1, 10)]
        pipe = broker.pipeline()
        for name in names:
            pipe.llen(name)
        out[queue] = sum(pipe.execute())
    return out


def run_queries(
    sess: Any, specs: Sequence[dict[str, Any]], what: str, progress: bool, timeout: float | None
) -> dict:
    """Enqueue query specs on the session's workers, wait for every answer, and return them by key."""
    job_id = enqueue_queries(sess.app, sess.r, specs)
    wait(
        sess.r,
        job_id,
        len(specs),
        what,
        sess.workers_alive,
        progress=progress,
        timeout=timeout,
        pending=sess.pending,
    )
    return gather(sess.r, job_id)
