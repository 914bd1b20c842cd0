"""Hostile input with the default policy (allow_private_urls=False): URLs aimed at the machine or its
network, foreign schemes and paths, and query messages from another service that are wrong, oversized,
or not JSON at all. Refused, recorded with a reason, and the worker stays up.

Host-policy rules are unit-tested in tests/unit/test_fetch.py; here they run through the real ingest
function (`common.ingestion.ingest_items` writing to Redis), then end to end through a worker started
with the default policy, and the query task is called by name from a bare Celery app.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import pickle
import socket
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from celery import Celery
from kombu import Connection

from common.config.redis_urls import with_db
from common.config.settings import Settings
from common.fetch import policy as fetch_module
from common.index.store import IndexStore
from common.ingestion import ingest_items
from producer import jobs
from producer.connection import celery_app, index_store
from producer.local import WorkerProcess
from producer.redis_server import RedisServer
from tests.support.badserver import BadServer, running_server
from tests.support.images import jpeg
from tests.support.processes import pool_pids, start_worker, wait_until

pytestmark = pytest.mark.integration

BLOCKED_HOSTS = [
    ("loopback", "http://127.0.0.1:{port}/h/ok.jpg"),
    ("loopback_by_name", "http://localhost:{port}/h/ok.jpg"),
    ("loopback_127_0_0_2", "http://127.0.0.2:{port}/h/ok.jpg"),
    ("https_loopback", "https://127.0.0.1:{port}/h/ok.jpg"),
    ("ipv6_loopback", "http://[::1]:{port}/h/ok.jpg"),
    ("ipv4_mapped_ipv6", "http://[::ffff:127.0.0.1]:{port}/h/ok.jpg"),
    ("decimal_ip", "http://2130706433:{port}/h/ok.jpg"),
    ("hex_ip", "http://0x7f000001:{port}/h/ok.jpg"),
    ("octal_ip", "http://0177.0.0.1:{port}/h/ok.jpg"),
    ("short_ip", "http://127.1:{port}/h/ok.jpg"),
    ("all_zeros", "http://0.0.0.0:{port}/h/ok.jpg"),
    ("cloud_metadata", "http://169.254.169.254/latest/meta-data/iam/security-credentials/"),
    ("cloud_metadata_mapped", "http://[::ffff:a9fe:a9fe]/latest/meta-data/"),
    ("private_10", "http://10.0.0.1/a.jpg"),
    ("private_172", "http://172.16.5.4/a.jpg"),
    ("private_192", "http://192.168.1.1/a.jpg"),
    ("carrier_nat", "http://100.64.0.1/a.jpg"),
    ("ipv6_unique_local", "http://[fd00::1]/a.jpg"),
    ("ipv6_link_local", "http://[fe80::1]/a.jpg"),
]
BAD_SCHEMES = [
    "ftp://example.com/a.jpg",
    "gopher://example.com/_GET",
    "dict://127.0.0.1:9/info",
    "ldap://example.com/",
    "sftp://example.com/a.jpg",
    "jar:http://example.com/a.jar!/a.jpg",
    "javascript:alert(1)",
    "data:image/png;base64,iVBORw0KGgo=",
]


@pytest.fixture(scope="module")
def server() -> Iterator[BadServer]:
    with running_server() as s:
        s.put("/h/ok.jpg", jpeg(11))
        yield s


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one folder workers may read files from; holds a good image and a symlink escaping it."""
    folder = tmp_path_factory.mktemp("hostile-root").resolve()
    (folder / "good.jpg").write_bytes(jpeg(12))
    (folder / "escape.jpg").symlink_to("/etc/passwd")
    return folder


def strict_settings(redis_server: RedisServer, db: int, root: Path, data_dir: Path) -> Settings:
    return replace(
        Settings.from_env({}),  # allow_private_urls defaults to False: the point of this module
        redis_url=with_db(redis_server.url, db),
        file_roots=(root,),
        fetch_retries=0,
        connect_timeout=1.0,
        read_timeout=1.0,
        download_deadline=3.0,
        task_time_limit=60,
        workers=1,
        data_dir=data_dir,
    )


def hostile_sources(port: int, root: Path) -> list[tuple[str, str, str]]:
    """(name, source, expected reason) for everything refused by the default policy."""
    out = [(name, url.format(port=port), "blocked_address") for name, url in BLOCKED_HOSTS]
    out += [(f"scheme_{url.split(':', 1)[0]}", url, "bad_scheme") for url in BAD_SCHEMES]
    out += [
        ("file_url_etc_passwd", "file:///etc/passwd", "path_not_allowed"),
        ("file_url_localhost", "file://localhost/etc/passwd", "path_not_allowed"),
        ("file_url_remote_host", "file://evil.example/etc/passwd", "bad_url"),
        ("bare_path", "/etc/passwd", "path_not_allowed"),
        ("proc_environ", "/proc/self/environ", "path_not_allowed"),
        ("dotdot_out_of_root", f"{root}/../../../etc/passwd", "path_not_allowed"),
        ("symlink_out_of_root", str(root / "escape.jpg"), "path_not_allowed"),
        ("home_tilde", "~/.ssh/id_rsa", "path_not_allowed"),
        ("credentials_in_url", f"http://user:pw@127.0.0.1:{port}/h/ok.jpg", "bad_url"),
        ("backslash_confusion", f"http://93.184.216.34\\@127.0.0.1:{port}/h/ok.jpg", "bad_url"),
        ("nul_in_path", "/tmp/a\x00.jpg", "bad_url"),
    ]
    return out


@pytest.fixture
def strict_store(redis_server: RedisServer) -> Iterator[IndexStore]:
    r = redis.Redis.from_url(with_db(redis_server.url, 6))
    r.flushdb()
    yield index_store(r)
    r.close()


# --------------------------------------------------------------------------- through ingest_items


def test_hostile_sources_are_refused_and_recorded(
    strict_store, redis_server, server: BadServer, root: Path, tmp_path
):
    # Given the default policy and one source of every hostile kind, plus a good file inside the root
    settings = strict_settings(redis_server, 6, root, tmp_path)
    assert settings.allow_private_urls is False
    cases = hostile_sources(server.port, root)
    items = [(f"h-{i}", source) for i, (_, source, _) in enumerate(cases)] + [
        ("h-good", str(root / "good.jpg"))
    ]
    hits_before = sum(server.hits.values())

    # When they go through the real ingest function
    outcomes = {o.product_id: o for o in ingest_items(items, strict_store, settings)}

    # Then each is refused with the expected reason, recorded in Redis, and never reaches the server
    failures = strict_store.failures()
    wrong = []
    for i, (name, source, reason) in enumerate(cases):
        rec = failures.get(f"h-{i}")
        got = (rec or {}).get("reason")
        if got != reason or rec["stage"] != "fetch":
            wrong.append(f"{name} {source!r}: {rec and (rec['stage'], rec['reason'], rec['error'][:100])}")
    assert not wrong, "\n".join(wrong)
    assert outcomes["h-good"].error is None
    assert strict_store.indexed(["h-good"]) == [True]
    assert strict_store.size() == 1
    assert sum(server.hits.values()) == hits_before


@pytest.fixture
def public_loopback(monkeypatch: pytest.MonkeyPatch):
    """Pretend 127.0.0.1 (only it) is a public CDN called cdn.example, so a redirect from a public-looking
    host can be served by the local server. Every other address keeps its real verdict."""
    real = fetch_module.is_public_address
    loopback = ipaddress.ip_address("127.0.0.1")
    monkeypatch.setattr(fetch_module, "is_public_address", lambda ip: ip == loopback or real(ip))

    def resolve(host: str, port: int) -> list[str]:
        if host != "cdn.example":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return ["127.0.0.1"]

    monkeypatch.setattr(fetch_module, "_resolve", resolve)


def test_redirect_from_a_public_host_to_a_private_one_is_refused(
    strict_store, redis_server, server: BadServer, root: Path, tmp_path, public_loopback
):
    # Given a "public" image host that redirects to the metadata service, a private range and [::1]
    settings = strict_settings(redis_server, 6, root, tmp_path)
    port = server.port
    items = [
        ("r-metadata", f"http://cdn.example:{port}/redirect/http/169.254.169.254/latest/meta-data/"),
        ("r-private", f"http://cdn.example:{port}/redirect/http/10.1.2.3/a.jpg"),
        ("r-ipv6-loopback", f"http://cdn.example:{port}/redirect/http/[::1]:{port}/h/ok.jpg"),
        ("r-decimal", f"http://cdn.example:{port}/redirect/http/3232235777/a.jpg"),  # 192.168.1.1
        ("r-control", f"http://cdn.example:{port}/h/ok.jpg"),  # the same host, no redirect: allowed
    ]
    ok_hits = server.hits["/h/ok.jpg"]

    # When ingested
    ingest_items(items, strict_store, settings)

    # Then every redirect hop was checked: the private targets are refused, the control is indexed
    failures = strict_store.failures()
    for pid in ("r-metadata", "r-private", "r-ipv6-loopback", "r-decimal"):
        assert failures[pid]["reason"] == "blocked_address", failures[pid]
    assert strict_store.indexed(["r-control"]) == [True]
    assert server.hits["/h/ok.jpg"] == ok_hits + 1  # only the control reached the image


# --------------------------------------------------------------------------- end to end, strict worker


@pytest.fixture(scope="module")
def strict_worker(
    redis_server: RedisServer, root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[WorkerProcess, Settings]]:
    tmp = tmp_path_factory.mktemp("strict")
    settings = strict_settings(redis_server, 7, root, tmp)
    for db in (7, 8, 9):
        redis.Redis.from_url(with_db(redis_server.url, db)).flushdb()
    worker = start_worker(settings, tmp / "worker.log", concurrency=1)
    try:
        yield worker, settings
    finally:
        worker.stop()


def test_a_default_worker_refuses_hostile_urls_end_to_end(strict_worker, server: BadServer, root: Path):
    # Given a worker started with the default policy, and a chunk mixing hostile sources and a good file
    worker, settings = strict_worker
    r = redis.Redis.from_url(settings.redis_url)
    store, app = index_store(r), celery_app(settings)
    port = server.port
    items = [
        ("e-loopback", f"http://127.0.0.1:{port}/h/ok.jpg"),
        ("e-mapped", f"http://[::ffff:127.0.0.1]:{port}/h/ok.jpg"),
        ("e-decimal", f"http://2130706433:{port}/h/ok.jpg"),
        ("e-metadata", "http://169.254.169.254/latest/meta-data/"),
        ("e-file", "file:///etc/passwd"),
        ("e-gopher", "gopher://127.0.0.1:9/_INFO"),
        ("e-good", str(root / "good.jpg")),
    ]
    hits_before = sum(server.hits.values())
    pids_before = pool_pids(worker)

    # When ingested through the producer and the worker
    job_id, sent, _ = jobs.enqueue_ingest(app, store, items, chunk=len(items))
    state = jobs.wait(r, job_id, sent, "ingest", worker.alive, progress=False, timeout=60)

    # Then the hostile ones are recorded with their reason, the good one is indexed, nothing was fetched
    assert (state.done, state.failed) == (1, 6)
    failed = jobs.failed_items(r, store, job_id)
    assert {pid: rec["reason"] for pid, rec in failed.items()} == {
        "e-loopback": "blocked_address",
        "e-mapped": "blocked_address",
        "e-decimal": "blocked_address",
        "e-metadata": "blocked_address",
        "e-file": "path_not_allowed",
        "e-gopher": "bad_scheme",
    }
    assert store.indexed(["e-good"]) == [True]
    assert sum(server.hits.values()) == hits_before

    # And queries by URL or path get the same policy, as error results
    def ask(**kwargs) -> dict:
        return app.send_task("neardup.query", kwargs=kwargs, queue="query").get(timeout=30)

    assert ask(url=f"http://127.0.0.1:{port}/h/ok.jpg")["error"]["reason"] == "blocked_address"
    assert ask(url="http://169.254.169.254/latest/")["error"]["reason"] == "blocked_address"
    assert ask(path="/etc/passwd")["error"]["reason"] == "path_not_allowed"
    found = ask(path=str(root / "good.jpg"))
    assert found["ok"] and found["index_size"] == 1
    assert sum(server.hits.values()) == hits_before
    assert pool_pids(worker) == pids_before
    app.close()
    r.close()


# --------------------------------------------------------------------------- query messages


@pytest.fixture
def other_service(redis_server: RedisServer, workers: WorkerProcess) -> Iterator[Celery]:
    """Another team's service: a bare Celery app, nothing imported from neardup, JSON only."""
    base = redis_server.url.rsplit("/", 1)[0]
    app = Celery("other-service", broker=f"{base}/1", backend=f"{base}/2")
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
    yield app
    app.close()


BAD_QUERIES: list[tuple[dict, str]] = [
    ({}, "need_one_source"),
    ({"limit": 5}, "need_one_source"),
    ({"url": "http://example.com/a.jpg", "product_id": "p1"}, "need_one_source"),
    ({"product_id": "p1", "path": "/tmp/a.jpg", "image_b64": "AAAA"}, "need_one_source"),
    ({"product_id": 123}, "bad_type"),
    ({"product_id": ["p1"]}, "bad_type"),
    ({"product_id": {"$gt": ""}}, "bad_type"),
    ({"url": ""}, "bad_type"),
    ({"product_id": "p1", "limit": "ten"}, "bad_type"),
    ({"product_id": "p1", "limit": 0}, "bad_value"),
    ({"product_id": "p1", "details": "yes"}, "bad_type"),
    ({"product_id": "p1", "max_distance": 999}, "bad_value"),
    ({"product_id": "p1", "max_distance": True}, "bad_type"),
    ({"product_id": "p1", "min_similarity": -5}, "bad_value"),
    ({"product_id": "p1", "preset": "nope"}, "bad_preset"),
    ({"product_id": "p1", "__class__": "x"}, "unknown_field"),
    ({"product_id": "../../etc/passwd"}, "bad_product_id"),
    ({"product_id": "never-indexed-1"}, "not_indexed"),
    ({"image_b64": "not base64 at all!"}, "bad_base64"),
    ({"image_b64": base64.b64encode(b"<html>nope</html>").decode()}, "not_image"),
    ({"path": "/etc/passwd"}, "path_not_allowed"),
    ({"url": "ftp://example.com/a.jpg"}, "bad_scheme"),
]


@pytest.mark.parametrize("kwargs, reason", BAD_QUERIES, ids=[r for _, r in BAD_QUERIES])
def test_bad_query_messages_get_a_clear_error(other_service: Celery, kwargs: dict, reason: str):
    result = other_service.send_task("neardup.query", kwargs=kwargs, queue="query").get(timeout=30)
    assert result["ok"] is False
    assert result["error"]["reason"] == reason, result
    assert result["error"]["detail"]


def test_oversized_image_and_positional_args_are_refused(other_service: Celery, workers, base_settings):
    pids_before = pool_pids(workers)
    too_big = "A" * ((base_settings.max_query_bytes * 4) // 3 + 400)
    big = other_service.send_task("neardup.query", kwargs={"image_b64": too_big}, queue="query")
    positional = other_service.send_task("neardup.query", args=["p1", "extra"], queue="query")
    assert big.get(timeout=60)["error"]["reason"] == "too_large"
    assert positional.get(timeout=30)["error"]["reason"] == "bad_request"
    assert workers.alive() and pool_pids(workers) == pids_before


def publish_raw(broker_url: str, body: bytes, content_type: str, task: str = "neardup.query") -> str:
    """A message on the query queue as any client could craft it, bypassing Celery's serializers."""
    task_id = str(uuid.uuid4())
    headers = {
        "lang": "py",
        "task": task,
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "retries": 0,
        "timelimit": [None, None],
        "eta": None,
        "expires": None,
        "argsrepr": "()",
        "kwargsrepr": "{}",
        "origin": "attacker",
        "ignore_result": False,
    }
    with Connection(broker_url) as conn:
        conn.Producer().publish(
            body,
            exchange="",
            routing_key="query",
            content_type=content_type,
            content_encoding="binary",
            headers=headers,
            correlation_id=task_id,
        )
    return task_id


class _OpensAFile:
    """Unpickling this creates the marker file: if the worker ever unpickles, the test sees it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_non_json_messages_are_refused_without_running(
    other_service: Celery, workers: WorkerProcess, redis_server: RedisServer, tmp_path: Path
):
    # Given a pickle, a YAML and a broken-JSON message for neardup.query, and one for an unknown task
    broker_url = with_db(redis_server.url, 1)
    broker = redis.Redis.from_url(broker_url)
    backend = redis.Redis.from_url(with_db(redis_server.url, 2))
    marker = tmp_path / "pickle-ran"
    pids_before = (workers.proc.pid, pool_pids(workers))
    log_before = workers.log_path.stat().st_size
    payload = pickle.dumps(((_OpensAFile(marker),), {}, {"callbacks": None, "errbacks": None, "chain": None}))
    sent = [
        publish_raw(broker_url, payload, "application/x-python-serialize"),
        publish_raw(broker_url, b"- !!python/object/apply:os.system ['true']", "application/x-yaml"),
        publish_raw(broker_url, b'[[], {"product_id": "p1"', "application/json"),
        publish_raw(broker_url, json.dumps([[], {}, {}]).encode(), "application/json", task="neardup.nope"),
    ]

    # When the worker has taken them off the queue
    wait_until(lambda: jobs.queue_lengths(broker)["query"] == 0, 30, "the query queue to drain")
    wait_until(lambda: broker.hlen("unacked") == 0, 30, "no message left unacknowledged")

    # Then none ran: the pickle was never loaded, no task succeeded, the log says why,
    assert not marker.exists()
    for task_id in sent:  # Celery may store a FAILURE for a refused message, never anything else
        meta = backend.get(f"celery-task-meta-{task_id}")
        assert meta is None or json.loads(meta)["status"] == "FAILURE", meta
    log = workers.log_path.read_bytes()[log_before:].decode(errors="replace")
    assert "Refusing to deserialize untrusted content of type pickle" in log, log[-2000:]
    assert "untrusted content of type yaml" in log and "Can't decode message body" in log
    assert "Received unregistered task of type 'neardup.nope'" in log
    # and the same worker processes still answer a well-formed query.
    ok = other_service.send_task("neardup.query", kwargs={"product_id": "never-indexed-2"}, queue="query")
    assert ok.get(timeout=30)["error"]["reason"] == "not_indexed"
    assert (workers.proc.pid, pool_pids(workers)) == pids_before
    broker.close()
    backend.close()
