"""What every CLI command needs: Redis, the Celery app, the index store, and a way to know whether
any worker is alive. Embedded mode starts (and afterwards stops) a private stack."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import redis
from celery import Celery

from common.config.settings import Settings
from common.index import consistency
from common.index.store import IndexStore
from producer.local import LocalStack

if TYPE_CHECKING:
    import redis
    from celery import Celery


@dataclass
class Session:
    settings: Settings
    app: Celery
    r: redis.Redis
    store: IndexStore
    broker: redis.Redis | None
    stack: LocalStack | None = None

    def pending(self) -> int | None:
        """Messages queued or running, when the broker is a Redis we can read."""
        from producer.jobs import messages_pending

        return messages_pending(self.broker) if self.broker is not None else None

    def workers_alive(self) -> bool:
        if self.stack is not None:
            return any(w.alive() for w in self.stack.workers)
        return bool(self.app.control.ping(timeout=1.0))


@contextlib.contextmanager
def open_session(
    settings: Settings, roots: Iterable[Path] = (), workers: bool = True, check_index: bool = True
) -> Iterator[Session]:
    """Connect (failing within seconds when Redis or the broker is not there), or start a private stack.
    An inconsistent index is refused here (IndexInconsistent) unless `check_index` is off (status, repair)."""
    stack = (
        LocalStack(settings, extra_roots=roots, workers=None if workers else 0, wait_ready=False)
        if settings.embedded
        else None
    )
    with stack if stack is not None else contextlib.nullcontext():
        # Imported only now (Celery, the signal pipeline with OpenCV: ~1 s) so that this happens
        # while the embedded workers boot, not before they start.
        from common.signals import signal_set
        from producer.connection import broker_redis, celery_app, index_store, redis_client

        s = stack.settings if stack is not None else settings
        client = redis_client(s)
        store = index_store(client, signal_set.of(settings))
        store.check_signals()  # an index of another decode mode or signature: say so now, not per task
        if check_index:
            consistency.require_consistent(client, store.scan_signals)
        if stack is not None:
            stack.wait_ready()
        yield Session(s, celery_app(s), client, store, broker_redis(s), stack)
