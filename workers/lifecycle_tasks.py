"""Tasks that change what the index holds besides ingest: remove products, review feedback on pairs.
Thin, through the one guard (workers.guard: poison count, signal check, Redis-down requeue); a removal
clears columns, so the signal check matters: they must be the ones this index holds."""

from __future__ import annotations

from typing import Any

from common.config import tasks as names
from common.index.lifecycle import feedback_request, remove_request
from workers import index_cache
from workers.app import app
from workers.guard import GuardedTask, refuse_positional


@app.task(name=names.REMOVE, base=GuardedTask, bind=True)
def remove(self: GuardedTask, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Public: kwargs `product_ids` (list). Result: counts removed / not_indexed / bad (with reasons)."""
    if (refused := refuse_positional(args)) is not None:
        return refused
    return self.answer(lambda: remove_request(kwargs, index_cache.store()))


@app.task(name=names.FEEDBACK, base=GuardedTask, bind=True)
def feedback(self: GuardedTask, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Public: kwargs `product_ids` ([A, B]) and `verdict` (not_duplicate, duplicate, clear)."""
    if (refused := refuse_positional(args)) is not None:
        return refused
    return self.answer(lambda: feedback_request(kwargs, index_cache.store()))
