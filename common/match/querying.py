"""Query requests from any service: validated JSON in, matches or a clear error out."""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import redis

from common.config import values
from common.config.settings import Settings
from common.errors import BadRequest, NeardupError, error_result, failure_result
from common.fetch.guarded import fetch_with_retries
from common.fetch.policy import FetchPolicy
from common.ids import check_product_id
from common.index import embeddings
from common.index.blob_cache import BlobCache
from common.index.feedback import banned_for
from common.index.snapshot import Snapshot
from common.index.store import IndexStore
from common.match import describe, pipeline, presets
from common.signals import signal_set
from common.signals.signatures import pack64

log = logging.getLogger(__name__)
SOURCES = ("product_id", "url", "image_b64", "path")
OPTIONS: dict[str, type | tuple[type, ...]] = {
    "preset": str,
    "max_distance": int,
    "min_similarity": (int, float),
    "limit": int,
    "details": bool,
    "exclude": str,
}


@dataclass(frozen=True)
class QueryRequest:
    source: str  # one of SOURCES
    value: str
    rule: presets.Rule
    limit: int = 100
    details: bool = False
    exclude: str | None = None  # a product never to list (the query's own), besides a product_id query's


def parse_request(kwargs: Mapping[str, Any], settings: Settings) -> QueryRequest:
    """Validate a query message; every problem is a BadRequest with a reason a caller can act on."""
    if not isinstance(kwargs, Mapping):
        raise BadRequest("bad_request", "the query must be a JSON object")
    unknown = sorted(set(kwargs) - set(SOURCES) - set(OPTIONS))
    if unknown:
        raise BadRequest(
            "unknown_field", f"unknown field(s) {unknown}; allowed: {list(SOURCES) + list(OPTIONS)}"
        )
    given = [s for s in SOURCES if kwargs.get(s) is not None]
    if len(given) != 1:
        raise BadRequest("need_one_source", f"give exactly one of {list(SOURCES)}, got {given or 'none'}")
    source = given[0]
    value = kwargs[source]
    if not isinstance(value, str) or not value:
        raise BadRequest("bad_type", f"{source} must be a non-empty string")
    if source == "product_id":
        check_product_id(value)
    if source == "image_b64" and len(value) > (settings.max_query_bytes * 4) // 3 + 4:
        raise BadRequest("too_large", f"image_b64 is over {settings.max_query_bytes} bytes")
    for name, kind in OPTIONS.items():
        v = kwargs.get(name)
        if v is not None and (not isinstance(v, kind) or (kind is int and isinstance(v, bool))):
            raise BadRequest("bad_type", f"{name} must be {getattr(kind, '__name__', 'a number')}")
    preset = kwargs.get("preset") or settings.preset
    _check(values.preset, preset, "bad_preset", "preset")
    max_distance = kwargs.get("max_distance", settings.max_distance)
    min_similarity = kwargs.get("min_similarity", settings.min_similarity)
    _check(values.check_distance, max_distance, "bad_value", "max_distance")
    _check(values.check_similarity, min_similarity, "bad_value", "min_similarity")
    limit = kwargs.get("limit", 100)
    if not 1 <= limit <= 10_000:
        raise BadRequest("bad_value", "limit must be in [1, 10000]")
    rule = presets.resolve(preset, max_distance=max_distance, min_similarity=min_similarity)
    exclude = kwargs.get("exclude") or (value if source == "product_id" else None)
    return QueryRequest(source, value, rule, limit, bool(kwargs.get("details", False)), exclude)


def _check(rule: Callable[[Any], object], value: Any, reason: str, name: str) -> None:
    """A shared value rule (common.config.values) as this request's error; None is "not given"."""
    if value is None:
        return
    try:
        rule(value)
    except ValueError as exc:
        raise BadRequest(reason, f"{name}: {exc}") from None


def indexed_signatures(
    product_id: str,
    snap: Snapshot,
    store: IndexStore,
    rule: presets.Rule,
    cache: BlobCache | None = None,
) -> dict[str, bytes]:
    """An indexed product's signatures: scanned ones from the worker's memory, blobs (from `cache`
    when given, else Redis) only when the rule verifies (the original rule needs none)."""
    row = snap.rows.get(product_id)
    if row is None:  # written after this snapshot was taken: read it all from Redis
        sigs = store.signatures_of(product_id)
        if sigs is None:
            raise BadRequest("not_indexed", f"product {product_id!r} is not in the index")
        return sigs
    sigs = {key: pack64(int(snap.column(key)[row])) for key in snap.signal_keys}
    if rule.verified:
        if cache is not None:
            sigs.update(cache.product(product_id, store.blob_signals, store.blobs_of))
        else:
            sigs.update(store.blobs_of(product_id))
    return sigs


def query_signatures(req: QueryRequest, store: IndexStore, settings: Settings) -> dict[str, bytes]:
    """The signatures of a query image (fetched or decoded from the message)."""
    if req.source == "image_b64":
        try:
            data = base64.b64decode(req.value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRequest("bad_base64", str(exc)) from None
        if len(data) > settings.max_query_bytes:
            raise BadRequest("too_large", f"image is over {settings.max_query_bytes} bytes")
    else:
        data = fetch_with_retries(
            req.value, FetchPolicy.from_settings(settings), retries=settings.fetch_retries
        )
    # Described exactly as ingest describes (same decode mode), or nothing would match.
    return describe.describe_bytes(data, settings.max_image_pixels, signal_set.of(settings), query=True)


def run_query(
    kwargs: Mapping[str, Any],
    snapshot_for: Callable[[], Snapshot],
    store: IndexStore,
    settings: Settings,
    reraise: tuple[type[BaseException], ...] = (),
    cache: BlobCache | None = None,
) -> dict[str, Any]:
    """A result object for any input: {"ok": true, matches...} or {"ok": false, "error": {...}}.
    `cache`: where blobs come from (default: Redis each time; workers pass their cache)."""
    started = time.perf_counter()
    # infrastructure or the caller's own signals (a time limit): not the query's fault
    passthrough: tuple[type[BaseException], ...] = (redis.RedisError, *reraise)
    try:
        req = parse_request(kwargs, settings)
        snap = snapshot_for()
        if req.source == "product_id":
            sigs = indexed_signatures(req.value, snap, store, req.rule, cache)
        else:
            sigs = query_signatures(req, store, settings)
        rule, calibration = _calibrated(req.rule, store, signal_set.of(settings).embedding)
        scored: dict[str, float] = {}
        blobs = cache.blobs if cache is not None else store.blobs
        matches = pipeline.find_matches(sigs, snap, rule, exclude=req.exclude, blobs=blobs, scored=scored)
        if req.source == "product_id":  # never the query's own product, whatever else is excluded
            matches = [m for m in matches if m.product_id != req.value]
        if snap.exclusions:  # review feedback: pairs marked "not a duplicate" are never listed
            excluded = {req.exclude} if req.exclude is not None else set()
            anchors = {m.product_id for m in matches if m.stage == "exact"} | excluded
            banned = banned_for(anchors, snap.exclusions)
            matches = [m for m in matches if m.product_id not in banned]
    except NeardupError as exc:
        return error_result(exc)
    except passthrough:
        raise
    except Exception as exc:  # a bug or a damaged index entry: answer with an error, keep the worker
        log.exception("query failed")
        return failure_result("query", "internal_error", f"{type(exc).__name__}: {exc}"[:300])
    shown = req.value if req.source != "image_b64" else f"<{len(req.value) * 3 // 4} bytes>"
    out = [
        {
            "product_id": m.product_id,
            "similarity": m.similarity,
            "distance": m.distance,
            "stage": m.stage,
            **({"signals": m.extra} if req.details else {}),
        }
        for m in matches[: req.limit]
    ]
    result = {
        "ok": True,
        "query": {req.source: shown},
        "index_version": snap.version,
        "index_size": snap.live_count,
        "rule": req.rule.name,
        "matches": out,
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 3),
    }
    emb_signal = signal_set.of(settings).embedding
    if req.details and emb_signal is not None and rule.verified:  # emb: every cosine scored
        by_cosine = sorted(((p, c) for p, c in scored.items() if p != req.exclude), key=lambda pc: -pc[1])
        result["embedding"] = {
            "signal": emb_signal,
            "threshold": calibration.get("threshold") if calibration else None,
            "scored": [[p, c] for p, c in by_cosine],
        }
    return result


def _calibrated(
    rule: presets.Rule, store: IndexStore, emb_signal: str | None
) -> tuple[presets.Rule, dict[str, Any] | None]:
    """emb: the rule with the embedding threshold `neardup calibrate --write` stored for this model
    (one GET per query, only when a model is configured; otherwise the rule as it is)."""
    if emb_signal is None or not rule.verified:
        return rule, None
    calibration = embeddings.read_calibration(store.r, emb_signal)
    if calibration is None:
        return rule, None
    return replace(rule, embedding_min=float(calibration["threshold"])), calibration
