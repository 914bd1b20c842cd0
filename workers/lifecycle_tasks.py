"""Tasks that change what the index holds besides ingest: remove products, review feedback on pairs.
Thin, through the same guards as workers.tasks (poison count, signal check, Redis-down requeue)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from common.errors import BadRequest, ConfigError, NeardupError
from common.lifecycle import feedback_request, remove_request
from common.store import IndexStore
from workers import index_cache
from workers.app import app
from workers.tasks import REDIS_DOWN, _error, _requeue_when_redis_is_down, delivery_count

log = logging.getLogger(__name__)
Handler = Callable[[Mapping[str, Any], IndexStore], dict[str, Any]]


def _guarded(task_id: str | None, args: tuple, kwargs: dict[str, Any], handler: Handler) -> dict[str, Any]:
    if args:
        return _error(BadRequest("bad_request", "pass the request as keyword arguments, not positional"))
    try:
        if delivery_count(task_id) > index_cache.settings().max_deliveries:
            return _error(BadRequest("poison", "this request killed its worker repeatedly"))
        index_cache.check_signals()  # a removal clears columns: they must be the ones this index holds
        return handler(kwargs, index_cache.store())
    except ConfigError as exc:
        return _error(exc)
    except REDIS_DOWN as exc:
        raise _requeue_when_redis_is_down(exc) from None
    except Exception as exc:  # Redis out of memory or read-only, a bug: an error result, not a crash
        log.exception("%s failed", handler.__name__)
        return _error(NeardupError("internal_error", f"{type(exc).__name__}: {exc}"[:300]))


@app.task(name="neardup.remove", bind=True)
def remove(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Public: kwargs `product_ids` (list). Result: counts removed / not_indexed / bad (with reasons)."""
    return _guarded(self.request.id, args, kwargs, remove_request)


@app.task(name="neardup.feedback", bind=True)
def feedback(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Public: kwargs `product_ids` ([A, B]) and `verdict` (not_duplicate, duplicate, clear)."""
    return _guarded(self.request.id, args, kwargs, feedback_request)
