"""The public contract, as another service sees it: a bare Celery app that imports nothing from neardup,
sending tasks by name (README "Calling neardup from another service").

This module must not import common/, workers/ or producer/: it only knows the documented names, queues,
database layout (index db N, broker N+1, results N+2) and JSON fields.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = ROOT / "samples" / "inventory"
OK_FIELDS = {"ok", "query", "index_version", "index_size", "rule", "matches", "elapsed_ms"}
MATCH_FIELDS = {"product_id", "similarity", "distance", "stage"}
ERROR_FIELDS = {"stage", "reason", "detail"}


@pytest.fixture(scope="module")
def bare_app(redis_server, workers, empty_index) -> Iterator[Celery]:
    # Built by hand from the index URL redis://host:port/0, as another team would from the README.
    host_port = redis_server.url.removeprefix("redis://").split("/")[0]
    app = Celery(
        "another-service",
        broker=f"redis://{host_port}/1",
        backend=f"redis://{host_port}/2",
    )
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
    )
    yield app
    app.close()


@pytest.fixture(scope="module")
def empty_index(redis_server) -> None:
    """Start this module from an empty index (with plain redis-py: still nothing from neardup)."""
    import redis

    with redis.Redis.from_url(redis_server.url) as client:
        client.flushdb()


def query(app: Celery, timeout: float = 30, **kwargs) -> dict:
    return app.send_task("neardup.query", kwargs=kwargs, queue="query").get(timeout=timeout)


def test_ingest_then_query_by_name(bare_app: Celery) -> None:
    # Given two inventory photos ingested with a by-name `neardup.ingest` (fire and forget)
    photos = sorted(INVENTORY.glob("*.jpg"))[:2]
    items = [{"product_id": p.stem, "url": str(p)} for p in photos]
    bare_app.send_task(
        "neardup.ingest",
        kwargs={"job_id": f"contract-{uuid.uuid4().hex[:8]}", "items": items},
        queue="ingest",
    )

    # When the first photo is sent as image_b64 until the index has caught up
    b64 = base64.b64encode(photos[0].read_bytes()).decode()
    deadline = time.monotonic() + 30
    while True:
        result = query(bare_app, image_b64=b64, details=True)
        assert result["ok"], result
        if result["index_size"] >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)

    # Then the result has exactly the documented fields, and finds the product at distance 0
    assert set(result) == OK_FIELDS
    assert result["index_size"] == 2 and isinstance(result["index_version"], int)
    assert result["query"] == {"image_b64": f"<{len(b64) * 3 // 4} bytes>"}
    assert isinstance(result["rule"], str) and result["elapsed_ms"] >= 0
    best = result["matches"][0]
    assert set(best) == MATCH_FIELDS | {"signals"}  # signals only because details=True
    assert best["product_id"] == photos[0].stem and best["distance"] == 0 and best["similarity"] == 100.0
    assert isinstance(best["stage"], str) and isinstance(best["signals"], dict)

    # And a query by product_id never lists the product itself, and omits signals without details
    by_id = query(bare_app, product_id=photos[0].stem)
    assert by_id["ok"] and by_id["query"] == {"product_id": photos[0].stem}
    assert photos[0].stem not in [m["product_id"] for m in by_id["matches"]]
    assert all(set(m) == MATCH_FIELDS for m in by_id["matches"])


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"product_id": "1", "url": "https://example.invalid/a.jpg"}, "need_one_source"),
        ({}, "need_one_source"),
        ({"product_id": "1", "colour": "red"}, "unknown_field"),
        ({"image_b64": "not base64!"}, "bad_base64"),
        ({"product_id": "999999999"}, "not_indexed"),
        ({"product_id": "1", "preset": "nope"}, "bad_preset"),
        ({"product_id": "1", "limit": "ten"}, "bad_type"),
    ],
)
def test_bad_requests_get_a_clear_error_result(bare_app: Celery, kwargs: dict, reason: str) -> None:
    result = query(bare_app, **kwargs)
    assert result["ok"] is False
    assert set(result["error"]) == ERROR_FIELDS
    assert result["error"]["reason"] == reason and result["error"]["detail"]


def test_positional_arguments_are_refused(bare_app: Celery) -> None:
    result = bare_app.send_task("neardup.query", args=["0149978036"], queue="query").get(timeout=30)
    assert result["ok"] is False and set(result["error"]) == ERROR_FIELDS
    assert result["error"]["reason"] == "bad_request"


def test_readme_documents_every_field_and_task() -> None:
    # The contract table is what other teams read: it must name what the workers actually return
    text = (ROOT / "README.md").read_text()
    section = text.split("## Calling neardup from another service", 1)[1].split("\n## ", 1)[0]
    for name in (*OK_FIELDS, *MATCH_FIELDS, "signals", *(f"error.{f}" for f in ERROR_FIELDS)):
        assert f"`{name}`" in section, name
    tasks = ("neardup.query", "neardup.query_batch", "neardup.ingest", "neardup.dedup_shard")
    for task in (*tasks, "neardup.remove", "neardup.feedback"):
        assert f"`{task}`" in section, task


def test_remove_and_feedback_by_name(bare_app: Celery) -> None:
    # Unknown products get counted (remove) or a clear error (feedback), never an exception
    res = bare_app.send_task("neardup.remove", kwargs={"product_ids": ["7777777777"]}, queue="query").get(
        timeout=30
    )
    assert res["ok"] and (res["removed"], res["not_indexed"], res["bad"]) == (0, 1, 0)
    kwargs = {"product_ids": ["7777777777", "7777777778"], "verdict": "not_duplicate"}
    res = bare_app.send_task("neardup.feedback", kwargs=kwargs, queue="query").get(timeout=30)
    assert res["ok"] is False and set(res["error"]) == ERROR_FIELDS
    assert res["error"]["reason"] == "not_indexed"
