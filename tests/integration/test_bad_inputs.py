"""Bad images and bad responses through the real ingest path: producer -> broker -> prefork worker ->
guarded fetch from a misbehaving server on 127.0.0.1 -> safe decode -> Redis index.

Each bad product must end recorded in neardup:failures with a stage and a reason (and, for the
status codes, with the right number of attempts), the good products sharing its chunk must still be
indexed, and the worker must still be the same processes afterwards: no crash, no lost product.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import redis
from celery import Celery

from common.config.redis_urls import with_db
from common.config.settings import Settings
from common.index import keys
from common.index.store import IndexStore
from producer import jobs
from producer.connection import celery_app, index_store
from producer.local import WorkerProcess
from producer.redis_server import RedisServer
from tests.support.badserver import BadServer, running_server
from tests.support.images import encode, gif_bomb, jpeg, photo_like, png_bomb, unusual_images
from tests.support.processes import free_port, pool_pids, start_worker, wait_until

pytestmark = pytest.mark.integration

CHUNK = 6
HTML = b"<!doctype html><html><body>Sorry, this product is gone</body></html>"


@dataclass
class Stack:
    settings: Settings
    worker: WorkerProcess
    app: Celery
    r: redis.Redis
    store: IndexStore


@pytest.fixture(scope="module")
def server() -> Iterator[BadServer]:
    with running_server() as s:
        yield s


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A worker of its own (index db 3, broker db 4) with short timeouts, so slow answers fail fast and
    this module's tasks never meet the session workers."""
    tmp = tmp_path_factory.mktemp("bad-inputs")
    settings = replace(
        Settings.from_env({}),
        redis_url=with_db(redis_server.url, 3),
        allow_private_urls=True,  # the bad server lives on 127.0.0.1
        file_roots=(tmp.resolve(),),
        fetch_retries=1,
        connect_timeout=1.0,
        read_timeout=1.0,
        download_deadline=2.5,
        max_download_bytes=2 * 2**20,
        max_image_pixels=20_000_000,
        task_time_limit=60,
        ingest_chunk=CHUNK,
        workers=2,
        data_dir=tmp,
    )
    r = redis.Redis.from_url(settings.redis_url)
    for db in (3, 4, 5):
        redis.Redis.from_url(with_db(redis_server.url, db)).flushdb()
    worker = start_worker(settings, tmp / "worker.log", concurrency=2)
    app = celery_app(settings)
    try:
        yield Stack(settings, worker, app, r, index_store(r))
    finally:
        worker.stop()
        app.close()
        r.close()


@pytest.fixture
def fresh(stack: Stack) -> Stack:
    """An empty index for each test (the worker notices through the index epoch)."""
    stack.r.flushdb()
    return stack


def run_ingest(stack: Stack, items: list[tuple[str, str]], timeout: float = 90) -> str:
    job_id, sent, skipped = jobs.enqueue_ingest(stack.app, stack.store, items, chunk=CHUNK)
    assert (sent, skipped) == (len(items), 0)
    state = jobs.wait(stack.r, job_id, sent, "ingest", stack.worker.alive, progress=False, timeout=timeout)
    assert state.done + state.failed == len(items)
    return job_id


def index_ids(r: redis.Redis) -> list[str]:
    blob = r.get(keys.IDS) or b""
    return blob.decode().split("\n")[:-1]


def assert_index_consistent(r: redis.Redis, expected: set[str]) -> None:
    """Every expected product indexed exactly once: rows, the ids list and the failures agree."""
    ids = index_ids(r)
    assert len(ids) == len(set(ids)), "a product id appears twice in the index"
    assert set(ids) == expected
    assert r.hlen(keys.ROWS) == len(expected)
    assert not set(r.hkeys(keys.FAILURES)) & {pid.encode() for pid in expected}


# --------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    name: str
    url: str
    stage: str
    reasons: frozenset[str]
    hits: int | None = None  # requests the server must have seen for it (attempts), when it can count
    attempts: int | None = None  # the failure record's attempts

    @property
    def product_id(self) -> str:
        return "bad-" + self.name.replace("_", "-")


def bad_cases(server: BadServer, tmp: Path, root: Path) -> list[Case]:
    """`root` is the worker's file root; `tmp` lies outside it."""

    def case(name: str, url: str, stage: str, *reasons: str, hits: int | None = None, attempts=None) -> Case:
        return Case(name, url, stage, frozenset(reasons), hits, attempts)

    good = jpeg(1)
    put = server.put
    outside_root = tmp / "outside.jpg"
    outside_root.write_bytes(good)
    rng = np.random.default_rng(3)
    return [
        # bytes that are not (whole) images
        case(
            "random_bytes",
            put("/b/random", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()),
            "decode",
            "not_image",
            hits=1,
        ),
        case("jpeg_header_junk", put("/b/junk", b"\xff\xd8\xff" + b"\0" * 2000), "decode", "corrupt"),
        case("truncated_jpeg", put("/b/trunc", good[: len(good) // 2]), "decode", "truncated"),
        case("zero_bytes", put("/b/zero", b""), "fetch", "empty", hits=1),
        case("html_200", put("/b/html", HTML, "text/html; charset=utf-8"), "fetch", "not_image", hits=1),
        case("html_as_jpeg", put("/b/html-jpeg", HTML), "decode", "not_image"),
        case("jpeg_as_json", put("/b/json", good, "application/json"), "fetch", "not_image"),
        case("jpeg_as_text", put("/b/text", good, "text/plain"), "fetch", "not_image"),
        case(
            "svg",
            put("/b/svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml"),
            "decode",
            "not_image",
        ),
        case(
            "ppm_outside_allowlist",
            put("/b/ppm", encode(photo_like(seed=2), "PPM"), "image/x-portable-pixmap"),
            "decode",
            "not_image",
        ),
        case(
            "pdf",
            put("/b/pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n", "application/pdf"),
            "fetch",
            "not_image",
        ),
        # decompression bombs: tiny files, huge dimensions
        case("png_bomb_900mpx", put("/b/png-bomb", png_bomb(30_000, 30_000), "image/png"), "decode", "bomb"),
        case("gif_bomb_4gpx", put("/b/gif-bomb", gif_bomb(), "image/gif"), "decode", "bomb"),
        case("png_over_our_cap", put("/b/png-cap", png_bomb(6_000, 6_000), "image/png"), "decode", "bomb"),
        # bodies that are too big, lie or never end
        case("endless_body", server.url("/endless"), "fetch", "too_large", hits=1),
        case("declared_10gib", server.url("/declared-huge"), "fetch", "too_large", hits=1),
        case("content_length_too_short", server.url("/lie-short"), "decode", "truncated", "corrupt"),
        case("content_length_too_long", server.url("/lie-long"), "fetch", "truncated", hits=2, attempts=2),
        case("trickling_body", server.url("/trickle"), "fetch", "timeout", hits=2, attempts=2),
        case("stalled_body", server.url("/stall"), "fetch", "timeout", hits=2, attempts=2),
        case("gzip_that_is_not", server.url("/bad-gzip"), "decode", "not_image", "bad_encoding"),
        case("not_http_at_all", server.url("/garbage"), "fetch", "connect_error", hits=2, attempts=2),
        case("connection_reset", server.url("/reset"), "fetch", "connect_error", hits=2, attempts=2),
        case(
            "connection_refused",
            f"http://127.0.0.1:{free_port()}/a.jpg",
            "fetch",
            "connect_error",
            attempts=2,
        ),
        # status codes: permanent ones once, transient ones retried (fetch_retries=1: two attempts)
        case("http_404", server.url("/status/404"), "fetch", "http_404", hits=1, attempts=1),
        case("http_410", server.url("/status/410"), "fetch", "http_410", hits=1, attempts=1),
        case("http_403", server.url("/status/403"), "fetch", "http_403", hits=1, attempts=1),
        case("http_204", server.url("/status/204"), "fetch", "empty", hits=1),
        case("http_429", server.url("/status/429"), "fetch", "http_429", hits=2, attempts=2),
        case("http_500", server.url("/status/500"), "fetch", "http_500", hits=2, attempts=2),
        case("http_502", server.url("/status/502"), "fetch", "http_502", hits=2, attempts=2),
        case("http_503", server.url("/status/503"), "fetch", "http_503", hits=2, attempts=2),
        # redirects
        case("redirect_loop", server.url("/loop"), "fetch", "too_many_redirects"),
        case("redirect_to_file", server.url("/redirect/file//etc/passwd"), "fetch", "bad_scheme"),
        case("redirect_to_ftp", server.url("/redirect/ftp/example.com/a.jpg"), "fetch", "bad_scheme"),
        case("redirect_without_location", server.url("/no-location"), "fetch", "http_302", hits=1),
        # sources that are not URLs we may read
        case("no_host", "http:///a.jpg", "fetch", "bad_url"),
        case("path_outside_roots", str(outside_root), "fetch", "path_not_allowed"),
        case("file_url_outside_roots", outside_root.as_uri(), "fetch", "path_not_allowed"),
        case("missing_file_inside_root", str(root / "nope.jpg"), "fetch", "not_found"),
    ]


def with_good_neighbours(bad: list[tuple[str, str]], goods: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Interleave so every chunk of CHUNK items holds CHUNK-1 bad products and one good one."""
    items: list[tuple[str, str]] = []
    good_iter = iter(goods)
    for start in range(0, len(bad), CHUNK - 1):
        items += bad[start : start + CHUNK - 1]
        items.append(next(good_iter))
    assert next(good_iter, None) is None, "one good product per chunk: pass exactly that many"
    return items


# --------------------------------------------------------------------------- tests


def test_bad_responses_are_recorded_and_good_neighbours_indexed(fresh: Stack, server: BadServer, tmp_path):
    # Given bad products of every kind, each chunk sharing its worker task with one good product,
    cases = bad_cases(server, tmp_path, fresh.settings.file_roots[0])
    n_chunks = -(-len(cases) // (CHUNK - 1))
    goods = [(f"good-{i}", server.put(f"/good/{i}.jpg", jpeg(100 + i))) for i in range(n_chunks)]
    items = with_good_neighbours([(c.product_id, c.url) for c in cases], goods)
    flaky = ("good-flaky", server.url("/flaky/7/1"))  # one 503, then the image: retried, then indexed
    items.append(flaky)
    pids_before = (fresh.worker.proc.pid, pool_pids(fresh.worker))

    # When they are ingested through the worker
    job_id = run_ingest(fresh, items)

    # Then every bad product is recorded with the expected stage, reason and attempts,
    failures = jobs.failed_items(fresh.r, fresh.store, job_id)
    wrong = []
    for c in cases:
        rec = failures.get(c.product_id)
        path = c.url.split(str(server.port), 1)[-1]
        problems = []
        if rec is None:
            problems.append("no failure record")
        else:
            if rec["stage"] != c.stage or rec["reason"] not in c.reasons:
                problems.append(f"got {rec['stage']}/{rec['reason']}: {rec.get('error', '')[:120]}")
            if c.attempts is not None and rec["attempts"] != c.attempts:
                problems.append(f"attempts {rec['attempts']} != {c.attempts}")
            if rec["url"] != c.url:
                problems.append("url not recorded")
        if c.hits is not None and server.hits[path] != c.hits:
            problems.append(f"server saw {server.hits[path]} requests, expected {c.hits}")
        if problems:
            wrong.append(f"{c.name} (want {c.stage}/{sorted(c.reasons)}): {'; '.join(problems)}")
    assert not wrong, "\n".join(wrong)
    assert set(failures) == {c.product_id for c in cases}

    # and every good product, including the one that needed a retry, is indexed exactly once,
    assert server.hits["/flaky/7/1"] == 2
    assert_index_consistent(fresh.r, {pid for pid, _ in goods} | {flaky[0]})

    # and the worker is the same processes: nothing crashed.
    assert fresh.worker.alive()
    assert (fresh.worker.proc.pid, pool_pids(fresh.worker)) == pids_before


def test_unusual_but_valid_images_are_indexed_not_failed(fresh: Stack, server: BadServer):
    # Given CMYK, 16-bit, palette, alpha, animated, rotated, 1x1 ... images served with their types
    images = unusual_images()
    items = [
        (f"odd-{name.replace('_', '-')}", server.put(f"/odd/{name}", data, ctype))
        for name, (data, ctype) in images.items()
    ]
    pids_before = pool_pids(fresh.worker)

    # When they are ingested
    job_id = run_ingest(fresh, items)

    # Then every one is indexed, none recorded as failed, and no worker process died
    failed = jobs.failed_items(fresh.r, fresh.store, job_id)
    assert failed == {}, json.dumps(failed, indent=1)[:3000]
    assert_index_consistent(fresh.r, {pid for pid, _ in items})
    assert pool_pids(fresh.worker) == pids_before


def test_bad_items_in_an_ingest_message_are_recorded(fresh: Stack, server: BadServer):
    # Given an ingest message from another service with malformed items around a good one
    job_id = "job-bad-items"
    good_url = server.put("/msg/good.jpg", jpeg(42))
    items = [
        {"product_id": "../../etc/passwd", "url": good_url},
        {"product_id": "has space", "url": good_url},
        {"product_id": 12345, "url": good_url},
        {"product_id": "no-url"},
        {"product_id": "url-not-string", "url": ["http://x/a.jpg"]},
        "not an object",
        {"product_id": "msg-good", "url": good_url},
    ]
    pids_before = pool_pids(fresh.worker)

    # When it is sent by name, as another service would
    fresh.app.send_task("neardup.ingest", kwargs={"job_id": job_id, "items": items}, queue="ingest")

    # Then the good item is indexed and each bad one is counted as failed, with a record where it
    # has an id to record under
    failed_key = keys.job_failed(job_id)
    wait_until(lambda: fresh.r.sismember(keys.job_done(job_id), "msg-good"), 30, "the good item")
    failed = {m.decode() for m in fresh.r.smembers(failed_key)}
    assert {"../../etc/passwd", "has space", "no-url", "url-not-string", "?"} <= failed
    for pid in ("../../etc/passwd", "has space", "no-url", "url-not-string"):
        rec = json.loads(fresh.r.hget(keys.FAILURES, pid))
        assert (rec["stage"], rec["reason"]) == ("request", "bad_item"), rec
    assert_index_consistent(fresh.r, {"msg-good"})
    assert pool_pids(fresh.worker) == pids_before
