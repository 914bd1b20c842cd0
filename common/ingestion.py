"""Download-and-describe for a chunk of products: every product ends indexed or recorded as failed."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import requests

from common import allocator
from common.config.settings import Settings
from common.errors import NeardupError
from common.fetch.guarded import fetch_with_retries
from common.fetch.http import make_session
from common.fetch.policy import FetchPolicy
from common.index.canonical import image_info
from common.index.store import IndexStore, Product
from common.match import describe
from common.signals import signal_set


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

# Describing is CPU work and runs in the task's own thread only, one image at a time: threads are there
# to wait on the network. (Before: 16 download threads each described what they fetched, two at a time
# behind a semaphore; the GIL hand-offs cost ~30 % more CPU per image than one process describing.)
# Local files are read in the task's thread too: a 200 KB read is far cheaper than a thread hand-off.


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


@dataclass(frozen=True)
class _Fetched:
    data: bytes | None
    error: NeardupError | None
    attempts: int


def _fetch(url: str, settings: Settings, policy: FetchPolicy) -> _Fetched:
    """The bytes of one source, or the error with the number of attempts; never raises."""
    waits: list[float] = []  # one backoff wait per retry: counts the attempts for the failure record

    def backoff(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    try:
        data = fetch_with_retries(
            url, policy, retries=settings.fetch_retries, sleep=backoff, session=_session(policy)
        )
        return _Fetched(data, None, len(waits) + 1)
    except NeardupError as exc:
        return _Fetched(None, exc, len(waits) + 1)
    except Exception as exc:  # a bug or a library surprise must still leave a trace, not kill the chunk
        err = NeardupError("internal_error", f"{type(exc).__name__}: {exc}")
        err.stage = "fetch"
        return _Fetched(None, err, len(waits) + 1)


def _describe(product_id: str, url: str, got: _Fetched, settings: Settings) -> Outcome:
    if got.data is None:
        return Outcome(product_id, url, error=got.error, attempts=got.attempts)
    try:
        sigs = describe.describe_bytes(got.data, settings.max_image_pixels, signal_set.of(settings))
        return Outcome(
            product_id, url, Product(product_id, url, sigs, image_info(got.data)), attempts=got.attempts
        )
    except NeardupError as exc:
        return Outcome(product_id, url, error=exc, attempts=got.attempts)
    except Exception as exc:  # see _fetch
        err = NeardupError("internal_error", f"{type(exc).__name__}: {exc}")
        err.stage = "describe"
        return Outcome(product_id, url, error=err, attempts=got.attempts)


def describe_one(product_id: str, url: str, settings: Settings, policy: FetchPolicy) -> Outcome:
    """Fetch, decode and describe one product; any failure becomes a recorded Outcome, never a raise."""
    return _describe(product_id, url, _fetch(url, settings, policy), settings)


def _is_remote(url: str) -> bool:
    return url.strip().lower().startswith(("http://", "https://"))


def describe_items(items: Sequence[tuple[str, str]], settings: Settings) -> list[Outcome]:
    """Outcomes in the order of `items`. Remote downloads run in threads (they wait on the network);
    local files are read, and every image described, in this thread, as its bytes become available."""
    allocator.tune_once()  # freed image buffers stay in the heap (common.allocator)
    policy = FetchPolicy.from_settings(settings)
    remote = [i for i, (_, url) in enumerate(items) if _is_remote(url)]
    pending: dict[Future[_Fetched], int] = {}
    if remote:
        pool = _executor(settings.fetch_concurrency)
        pending = {pool.submit(_fetch, items[i][1], settings, policy): i for i in remote}
    out: list[Outcome | None] = [None] * len(items)
    for i, (pid, url) in enumerate(items):
        if not _is_remote(url):
            out[i] = describe_one(pid, url, settings, policy)
    for future in as_completed(pending):  # describe what has arrived while the rest downloads
        i = pending[future]
        out[i] = _describe(items[i][0], items[i][1], future.result(), settings)
    return [o for o in out if o is not None]


def ingest_items(
    items: Sequence[tuple[str, str]], store: IndexStore, settings: Settings, force: bool = False
) -> list[Outcome]:
    """Describe products (see describe_items) and write them: one index write for the chunk."""
    outcomes = describe_items(items, settings)
    store.write([o.product for o in outcomes if o.product is not None], force=force)
    for o in outcomes:
        if o.error is not None:
            store.record_failure(
                o.product_id, o.error.stage, o.error.reason, str(o.error), o.url, attempts=o.attempts
            )
    return outcomes
