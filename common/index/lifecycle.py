"""The index follows the catalog: remove products, and review feedback on pairs, as JSON requests
with JSON results (the `neardup.remove` / `neardup.feedback` tasks and the CLI both call these).
Bad ids and unknown products are answered with a clear reason, never raised."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from common.errors import BadRequest, error_result
from common.ids import check_product_id
from common.index import feedback, keys
from common.index.store import IndexStore

MAX_REMOVE = 10_000  # ids per request: one Lua call (~35 commands an id), so Redis pauses stay short
MAX_LISTED = 100  # ids listed by name in a result (the counts are always complete)


def _check_fields(kwargs: Mapping[str, Any], allowed: set[str]) -> None:
    if not isinstance(kwargs, Mapping):
        raise BadRequest("bad_request", "the request must be a JSON object")
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise BadRequest("unknown_field", f"unknown field(s) {unknown}; allowed: {sorted(allowed)}")


def remove_request(kwargs: Mapping[str, Any], store: IndexStore) -> dict[str, Any]:
    """{"product_ids": [...]} -> counts of removed, not indexed and bad ids (with reasons)."""
    try:
        _check_fields(kwargs, {"product_ids"})
        ids = kwargs.get("product_ids")
        if not isinstance(ids, list) or not ids:
            raise BadRequest("bad_type", "product_ids must be a non-empty list of product ids")
        if len(ids) > MAX_REMOVE:
            raise BadRequest("too_large", f"at most {MAX_REMOVE} product ids per request, got {len(ids)}")
    except BadRequest as exc:
        return error_result(exc)
    return remove_products(ids, store)


def remove_products(ids: Iterable[object], store: IndexStore) -> dict[str, Any]:
    """Remove what is indexed (one atomic write); report the rest by reason."""
    good: list[str] = []
    bad: list[dict[str, str]] = []
    for pid in ids:
        try:
            good.append(check_product_id(pid))
        except BadRequest as exc:
            bad.append({"product_id": str(pid)[:140], "reason": exc.reason, "detail": str(exc)})
    good = list(dict.fromkeys(good))
    removed, version = store.remove(good)
    gone = set(removed)
    not_indexed = [pid for pid in good if pid not in gone]
    return {
        "ok": True,
        "removed": len(removed),
        "not_indexed": len(not_indexed),
        "bad": len(bad),
        "removed_ids": removed[:MAX_LISTED],
        "not_indexed_ids": not_indexed[:MAX_LISTED],
        "bad_ids": bad[:MAX_LISTED],
        "index_version": version,
        "index_size": store.size(),
    }


def feedback_request(kwargs: Mapping[str, Any], store: IndexStore) -> dict[str, Any]:
    """{"product_ids": [A, B], "verdict": "not_duplicate" | "duplicate" | "clear"} -> the stored verdict.
    Both products must be indexed to get a verdict; a verdict can be cleared whatever became of them."""
    try:
        _check_fields(kwargs, {"product_ids", "verdict"})
        ids = kwargs.get("product_ids")
        if not isinstance(ids, list) or len(ids) != 2:
            raise BadRequest("bad_type", "product_ids must be a list of exactly two product ids")
        pair = feedback.pair_of(*ids)
        verdict = kwargs.get("verdict")
        allowed = [*feedback.VERDICTS, feedback.CLEAR]
        if verdict not in allowed:
            raise BadRequest("bad_verdict", f"verdict must be one of {allowed}, got {verdict!r}")
        known = store.r.hexists(keys.FEEDBACK, feedback.pair_key(pair))
        if not (verdict == feedback.CLEAR and known):
            missing = [pid for pid, ok in zip(pair, store.indexed(pair), strict=True) if not ok]
            if missing:
                raise BadRequest("not_indexed", f"not in the index: {', '.join(missing)}")
        previous, version = feedback.record(store.r, pair, verdict)
    except BadRequest as exc:
        return error_result(exc)
    return {
        "ok": True,
        "pair": list(pair),
        "verdict": None if verdict == feedback.CLEAR else verdict,
        "previous": previous,
        "feedback_version": version,
    }


def absent_from_catalog(indexed: Iterable[str], catalog_ids: Iterable[str]) -> list[str]:
    """Indexed products the catalog no longer lists (sorted): what `ingest --sync` removes."""
    keep = set(catalog_ids)
    return sorted(pid for pid in indexed if pid not in keep)
