"""NeardupClient: what another Python service imports to query and feed a running neardup.

It sends tasks by their public names (`neardup.query`, `neardup.query_batch`, `neardup.ingest`) with a
client-side Celery app, so it never imports the worker code. A service that does not want this package
at all can do the same with a bare Celery app: see "Calling neardup from another service" in README.
"""

from __future__ import annotations

import base64
import contextlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from celery.exceptions import TimeoutError as CeleryTimeout

from common.config import tasks
from common.config.settings import Settings
from common.errors import failure_result
from common.index import feedback
from common.signals import signal_set
from producer import jobs
from producer.connection import broker_redis, celery_app, index_store, redis_client


def _timeout_result(timeout: float) -> dict[str, Any]:
    # Same error shape as the workers' own, so callers handle one shape only.
    return failure_result("client", "timeout", f"no answer within {timeout} s")


def _message(spec: Mapping[str, Any], preset: str | None) -> dict[str, Any]:
    """A query message: image_bytes travel as image_b64 (the wire is JSON only)."""
    body = {k: v for k, v in spec.items() if v is not None}
    if "image_bytes" in body:
        body["image_b64"] = base64.b64encode(bytes(body.pop("image_bytes"))).decode()
    if preset is not None and "preset" not in body:
        body["preset"] = preset
    return body


class NeardupClient:
    """Query, ingest and status against a running neardup (its Redis and its workers).

    `redis_url` is the index Redis (db N); the broker defaults to db N+1 and results to db N+2 of the
    same server, exactly as the workers derive them, unless `broker_url` is given.
    """

    def __init__(
        self, redis_url: str, broker_url: str | None = None, settings: Settings | None = None
    ) -> None:
        base = settings or Settings.from_env({})
        self.settings = replace(base, redis_url=redis_url, broker_url=broker_url or base.broker_url)
        self.app = celery_app(self.settings)
        self.r = redis_client(self.settings)
        self.store = index_store(self.r, signal_set.of(self.settings))

    # -- queries ---------------------------------------------------------------------------------

    def query(
        self,
        *,
        product_id: str | None = None,
        url: str | None = None,
        image_b64: str | None = None,
        path: str | Path | None = None,
        image_bytes: bytes | None = None,
        preset: str | None = None,
        timeout: float = 30,
        **options: Any,
    ) -> dict[str, Any]:
        """One query (exactly one source) -> the worker's result object, `{"ok": ...}`.

        `path` is read by the worker, so it must be under the workers' NEARDUP_FILE_ROOTS; to send a
        local file from this machine use `image_bytes=Path(p).read_bytes()`. Extra options (limit,
        max_distance, min_similarity, details, exclude) are passed through and validated by the worker.
        """
        spec = {
            "product_id": product_id,
            "url": url,
            "image_b64": image_b64,
            "path": str(path) if path is not None else None,
            "image_bytes": image_bytes,
            **options,
        }
        result = self.app.send_task(tasks.QUERY, kwargs=_message(spec, preset), queue=tasks.QUERY_QUEUE)
        try:
            return result.get(timeout=timeout)
        except CeleryTimeout:
            return _timeout_result(timeout)
        finally:
            result.forget()  # results are read once: do not leave them in the backend for an hour

    def query_many(
        self,
        queries: Mapping[str, Mapping[str, Any]] | Iterable[Mapping[str, Any]],
        preset: str | None = None,
        timeout: float = 120,
    ) -> dict[str, dict[str, Any]]:
        """Many queries in batches (one broker message per 32): {key: result}.

        `queries` maps a key to a query spec, or is a list of specs keyed by their `key` field or, lacking
        one, by their position ("0", "1", ...). A query that did not finish in time gets a timeout error.
        """
        if isinstance(queries, Mapping):
            items = [(str(k), dict(v)) for k, v in queries.items()]
        else:
            items = [(str(q.get("key", i)), dict(q)) for i, q in enumerate(queries)]
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys):
            raise ValueError("query keys must be unique")
        specs = [{**_message({k: v for k, v in q.items() if k != "key"}, preset), "key": k} for k, q in items]
        if not specs:
            return {}
        job_id = jobs.enqueue_queries(self.app, self.r, specs)
        # On a timeout, return what arrived; the rest are reported as timeouts below.
        with contextlib.suppress(jobs.Stalled):
            jobs.wait(self.r, job_id, len(specs), "query", self._workers_alive, False, timeout=timeout)
        results = jobs.gather(self.r, job_id)
        return {k: results.get(k, _timeout_result(timeout)) for k in keys}

    # -- ingest ----------------------------------------------------------------------------------

    def ingest(
        self,
        items: Mapping[str, str] | Iterable[tuple[str, str]] | Iterable[Mapping[str, str]],
        force: bool = False,
        wait: bool = True,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Index products given as {product_id: url}, (product_id, url) pairs or {"product_id", "url"}
        objects. Already indexed products are skipped unless `force`. With `wait`, blocks until each
        is indexed or recorded as failed and returns the counts and the failure records."""
        if isinstance(items, Mapping):
            pairs = [(str(k), str(v)) for k, v in items.items()]
        else:
            pairs = [
                (str(i["product_id"]), str(i["url"])) if isinstance(i, Mapping) else (str(i[0]), str(i[1]))
                for i in items
            ]
        job_id, sent, skipped = jobs.enqueue_ingest(
            self.app, self.store, pairs, self.settings.ingest_chunk, force=force
        )
        out: dict[str, Any] = {"job_id": job_id, "sent": sent, "skipped": skipped}
        if not wait:
            return out
        state = jobs.wait(self.r, job_id, sent, "ingest", self._workers_alive, False, timeout=timeout)
        out.update(done=state.done, failed=state.failed)
        out["failures"] = jobs.failed_items(self.r, self.store, job_id) if state.failed else {}
        out["index_version"] = self.store.version()
        return out

    # -- the index follows the catalog ----------------------------------------------------------

    def remove(self, product_ids: Iterable[str], timeout: float = 60) -> dict[str, Any]:
        """Remove products (task neardup.remove): counts removed / not_indexed / bad, never raises."""
        return self._call(tasks.REMOVE, {"product_ids": list(product_ids)}, timeout)

    def feedback(self, a: str, b: str, verdict: str, timeout: float = 30) -> dict[str, Any]:
        """Review feedback on a pair (task neardup.feedback): not_duplicate, duplicate or clear."""
        return self._call(tasks.FEEDBACK, {"product_ids": [a, b], "verdict": verdict}, timeout)

    def _call(self, task: str, kwargs: dict[str, Any], timeout: float) -> dict[str, Any]:
        result = self.app.send_task(task, kwargs=kwargs, queue=tasks.QUEUE_OF[task])
        try:
            return result.get(timeout=timeout)
        except CeleryTimeout:
            return _timeout_result(timeout)
        finally:
            result.forget()

    # -- status ----------------------------------------------------------------------------------

    def status(self, ping_timeout: float = 1.0) -> dict[str, Any]:
        """Index size and version, queue lengths, workers that answer a ping, failures by reason."""
        failures = self.store.failures()
        broker = broker_redis(self.settings)
        try:
            queues = jobs.queue_lengths(broker) if broker is not None else {}
        finally:
            if broker is not None:
                broker.close()
        replies = self.app.control.ping(timeout=ping_timeout) or []
        return {
            "index_size": self.store.size(),
            "index_version": self.store.version(),
            "queues": queues,
            "workers": sorted(name for reply in replies for name in reply),
            "failures": len(failures),
            "failures_by_reason": dict(Counter(rec.get("reason", "unknown") for rec in failures.values())),
            "feedback": feedback.read(self.r).counts(),
        }

    # -- lifecycle -------------------------------------------------------------------------------

    def _workers_alive(self) -> bool:
        return bool(self.app.control.ping(timeout=1.0))

    def close(self) -> None:
        self.r.close()
        self.app.close()

    def __enter__(self) -> NeardupClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
