"""Download-and-describe for a chunk of products: every product ends indexed or recorded as failed."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests

from common import pipeline
from common.errors import NeardupError
from common.fetch import FetchPolicy, fetch_with_retries, make_session
from common.settings import Settings
from common.store import IndexStore, Product


@dataclass(frozen=True)
class Outcome:
    product_id: str
    url: str
    product: Product | None = None
    error: NeardupError | None = None
    attempts: int = 1  # downloads tried (retries of transient errors included)


# Download threads live as long as the worker process, each with its own Session, so connections to
# an image host stay alive from one task to the next instead of being rebuilt for every chunk.
_threads = threading.local()
_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, size, pool): rebuilt after a fork


def _session(policy: FetchPolicy) -> requests.Session:
    cached = getattr(_threads, "session", None)
    if cached is None or cached[0] != policy:
        _threads.session = cached = (policy, make_session(policy))
    return cached[1]


def _executor(size: int) -> ThreadPoolExecutor:
    global _pool
    if _pool is None or _pool[0] != os.getpid() or _pool[1] != size:
        _pool = (os.getpid(), size, ThreadPoolExecutor(max_workers=size, thread_name_prefix="fetch"))
    return _pool[2]


def describe_one(product_id: str, url: str, settings: Settings, policy: FetchPolicy) -> Outcome:
    """Fetch, decode and describe one product; any failure becomes a recorded Outcome, never a raise."""
    waits: list[float] = []  # one backoff wait per retry: counts the attempts for the failure record

    def backoff(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    try:
        data = fetch_with_retries(
            url, policy, retries=settings.fetch_retries, sleep=backoff, session=_session(policy)
        )
        sigs = pipeline.describe_bytes(data, settings.max_image_pixels, settings.decode)
        return Outcome(product_id, url, Product(product_id, url, sigs))
    except NeardupError as exc:
        return Outcome(product_id, url, error=exc, attempts=len(waits) + 1)
    except Exception as exc:  # a bug or a library surprise must still leave a trace, not kill the chunk
        err = NeardupError("internal_error", f"{type(exc).__name__}: {exc}")
        err.stage = "describe"
        return Outcome(product_id, url, error=err, attempts=len(waits) + 1)


def ingest_items(
    items: Sequence[tuple[str, str]], store: IndexStore, settings: Settings, force: bool = False
) -> list[Outcome]:
    """Describe products (downloads in parallel threads: they wait on the network) and write them."""
    policy = FetchPolicy.from_settings(settings)
    pool = _executor(settings.fetch_concurrency)
    outcomes = list(pool.map(lambda it: describe_one(it[0], it[1], settings, policy), items))
    store.write([o.product for o in outcomes if o.product is not None], force=force)
    for o in outcomes:
        if o.error is not None:
            store.record_failure(
                o.product_id, o.error.stage, o.error.reason, str(o.error), o.url, attempts=o.attempts
            )
    return outcomes
