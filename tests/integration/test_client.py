"""NeardupClient, what another Python service imports, against the session's Redis and workers."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator

import pytest

from producer.client import NeardupClient
from tests.conftest import SAMPLES

pytestmark = pytest.mark.integration

INVENTORY = SAMPLES / "inventory"
QUERIES = SAMPLES / "queries"


@pytest.fixture
def client(base_settings, workers, index_redis) -> Iterator[NeardupClient]:
    with NeardupClient(base_settings.redis_url, settings=base_settings) as c:
        yield c


@pytest.fixture
def labelled() -> dict[str, dict]:
    return json.loads((SAMPLES / "labels.json").read_text())["queries"]


def test_ingest_query_and_status(client: NeardupClient, labelled: dict[str, dict], index_redis) -> None:
    # Given the sample inventory ingested through the client, plus one product whose URL is missing
    photos = sorted(INVENTORY.glob("*.jpg"))
    items = {p.stem: str(p) for p in photos}
    items["1999999999"] = str(INVENTORY / "1999999999.jpg")
    first = client.ingest(items, timeout=120)
    assert first["sent"] == len(photos) + 1 and first["skipped"] == 0
    assert first["done"] == len(photos) and first["failed"] == 1
    assert set(first["failures"]) == {"1999999999"}

    # When the same catalog is sent again, nothing is redone
    again = client.ingest([(pid, url) for pid, url in items.items() if pid != "1999999999"], timeout=60)
    assert again["sent"] == 0 and again["skipped"] == len(photos)

    # Then the status tells the index size and version, the failure, and the live worker
    status = client.status()
    assert status["index_size"] == len(photos)
    assert status["index_version"] == again["index_version"] > 0
    assert status["failures"] == 1 and sum(status["failures_by_reason"].values()) == 1
    assert set(status["queues"]) == {"ingest", "query"}
    assert any(workers_name.startswith("neardup-") for workers_name in status["workers"])

    # And every source of query finds its labelled product
    exact = next(n for n, q in labelled.items() if q["category"] == "1")
    want = labelled[exact]["matches"][0]
    data = (QUERIES / exact).read_bytes()
    for kwargs in ({"image_bytes": data}, {"path": str(QUERIES / exact)}):
        result = client.query(**kwargs, timeout=30)
        assert result["ok"], result
        assert result["matches"][0]["product_id"] == want and result["matches"][0]["distance"] == 0
    by_id = client.query(product_id=want, preset="loose", details=True)
    assert by_id["ok"] and want not in [m["product_id"] for m in by_id["matches"]]
    assert by_id["rule"].startswith("loose")
    assert all("signals" in m for m in by_id["matches"])


def test_query_many_keeps_keys_and_errors(client: NeardupClient, labelled: dict[str, dict]) -> None:
    photos = sorted(INVENTORY.glob("*.jpg"))[:3]
    client.ingest({p.stem: str(p) for p in photos}, timeout=60)
    # Given a mix of good queries and a bad one, keyed by name
    queries = {p.name: {"image_bytes": p.read_bytes()} for p in photos}
    queries["bad"] = {"product_id": "1", "url": "https://example.invalid/x.jpg"}
    # When they are sent together
    results = client.query_many(queries, timeout=60)
    # Then each answer is under its own key: the photos find themselves, the bad one says why
    assert set(results) == set(queries)
    for p in photos:
        assert results[p.name]["ok"] and results[p.name]["matches"][0]["product_id"] == p.stem
    assert set(results["bad"]) == {"ok", "error"} and results["bad"]["ok"] is False
    assert results["bad"]["error"]["reason"] == "need_one_source"

    # and a list without keys is answered by position
    listed = client.query_many([{"image_bytes": photos[0].read_bytes()}, {"product_id": photos[1].stem}])
    assert set(listed) == {"0", "1"} and listed["0"]["matches"][0]["product_id"] == photos[0].stem


def test_query_timeout_is_an_error_result_not_an_exception(client: NeardupClient) -> None:
    # Given an image host that holds the request until the test lets it go
    release = threading.Event()

    class Held(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            release.wait(10)
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Held)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # When the client waits less than the worker needs
        url = f"http://127.0.0.1:{server.server_address[1]}/slow.jpg"
        started = time.monotonic()
        result = client.query(url=url, timeout=0.5)
        # Then it answers within about its timeout, in the workers' error shape, instead of raising
        assert time.monotonic() - started < 5
        assert result == {"ok": False, "error": {**result["error"], "reason": "timeout"}}
        assert set(result["error"]) == {"stage", "reason", "detail"}
    finally:
        release.set()  # the worker gets its 404 at once and moves on
        server.shutdown()
        server.server_close()
