"""The index follows the catalog, through a real redis-server and real prefork Celery workers:
remove (read-your-writes on every worker), ingest --sync with --dry-run, and review feedback
honoured by queries and dedup."""

from __future__ import annotations

import base64
import json

import pytest

from common.index import keys
from producer import cli, jobs
from producer.connection import celery_app, index_store
from producer.dedup import run_dedup
from producer.session import Session
from tests.conftest import SAMPLES

pytestmark = pytest.mark.integration

A, B, C = "0827601110", "q_00003", "0149978036"  # B: A re-encoded at JPEG q15 (not byte-identical)
A_PATH, B_PATH = SAMPLES / "inventory" / f"{A}.jpg", SAMPLES / "queries" / f"{B}.jpg"


@pytest.fixture
def stack(base_settings, workers, index_redis):
    app = celery_app(base_settings)
    return app, index_redis, index_store(index_redis)


def ingest(app, r, store, items) -> None:
    job_id, sent, _ = jobs.enqueue_ingest(app, store, items, chunk=8)
    state = jobs.wait(r, job_id, sent, "ingest", lambda: True, progress=False, timeout=120)
    assert state.failed == 0


def ask(app, many: int = 1, **kwargs) -> list[dict]:
    """`many` copies of one query sent at once, so both prefork children answer some of them."""
    pending = [app.send_task("neardup.query", kwargs=kwargs) for _ in range(many)]
    return [p.get(timeout=60) for p in pending]


def listed(result: dict) -> list[str]:
    assert result["ok"], result
    return [m["product_id"] for m in result["matches"]]


def three_products(app, r, store):
    ingest(app, r, store, [(A, str(A_PATH)), (B, str(B_PATH)), (C, str(SAMPLES / "inventory" / f"{C}.jpg"))])


def test_removed_product_is_never_listed_by_the_next_query_on_any_worker(stack, base_settings):
    # Given A and its copy B indexed, and every worker child holding B in its in-memory index
    app, r, store = stack
    three_products(app, r, store)
    before = ask(app, 8, product_id=A)
    assert all(B in listed(res) for res in before)

    # When B is removed through the public task (with an unknown and a bad id in the same request)
    res = app.send_task("neardup.remove", kwargs={"product_ids": [B, "9999999999", "../x"]}).get(timeout=30)

    # Then the result counts each kind, and the very next queries, on every child, never list B
    assert res["ok"] and (res["removed"], res["not_indexed"], res["bad"]) == (1, 1, 1)
    assert res["not_indexed_ids"] == ["9999999999"] and res["bad_ids"][0]["reason"] == "bad_product_id"
    after = ask(app, 8, product_id=A)
    assert all(B not in listed(x) and x["index_version"] >= res["index_version"] for x in after)
    image = base64.b64encode(B_PATH.read_bytes()).decode()
    by_bytes = ask(app, 4, image_b64=image)
    assert all(listed(x) == [A] for x in by_bytes)  # B's own bytes now find only A
    gone = ask(app, 1, product_id=B)[0]
    assert not gone["ok"] and gone["error"]["reason"] == "not_indexed"
    # status counts drop, dedup skips it, and B's blobs are gone from Redis
    assert store.size() == 2 and res["index_size"] == 2
    assert not r.hexists(keys.signal("pdq256@1"), B)
    sess = Session(base_settings, app, r, store, None)
    out = run_dedup(sess, radius=8, n_shards=2, progress=False, timeout=60, preset="balanced")
    assert all(B not in g for g in out["groups"])

    # And a re-ingest of B takes its row back and is found again by the next query
    ingest(app, r, store, [(B, str(B_PATH))])
    assert all(B in listed(x) for x in ask(app, 8, product_id=A))


def test_remove_task_rejects_bad_requests(stack):
    app, _, _ = stack
    for kwargs, reason in [
        ({"product_ids": "A"}, "bad_type"),
        ({"product_ids": []}, "bad_type"),
        ({"ids": ["A"]}, "unknown_field"),
        ({"product_ids": ["1"] * 10_001}, "too_large"),  # one request is one atomic write: bounded
    ]:
        res = app.send_task("neardup.remove", kwargs=kwargs).get(timeout=30)
        assert not res["ok"] and res["error"]["reason"] == reason, res
    res = app.send_task("neardup.remove", args=[["A"]]).get(timeout=30)
    assert res["error"]["reason"] == "bad_request"


def test_feedback_is_honoured_by_queries_and_dedup(stack, base_settings):
    app, r, store = stack
    three_products(app, r, store)
    assert B in listed(ask(app, 1, product_id=A)[0])
    sess = Session(base_settings, app, r, store, None)
    first = run_dedup(sess, radius=8, n_shards=2, progress=False, timeout=60, preset="balanced")
    assert [A, B] in first["groups"]

    # When a reviewer marks A / B as not a duplicate (public task)
    res = app.send_task("neardup.feedback", kwargs={"product_ids": [B, A], "verdict": "not_duplicate"}).get(
        timeout=30
    )
    assert res["ok"] and res["pair"] == sorted([A, B]) and res["previous"] is None

    # Then no query between them lists the other: by id either way, or by A's exact bytes
    assert all(B not in listed(x) for x in ask(app, 6, product_id=A))
    assert all(A not in listed(x) for x in ask(app, 6, product_id=B))
    image = base64.b64encode(A_PATH.read_bytes()).decode()
    assert all(listed(x) == [A] for x in ask(app, 4, image_b64=image))  # exact: A; never B
    # and dedup neither lists nor groups the pair
    out = run_dedup(sess, radius=8, n_shards=2, progress=False, timeout=60, preset="balanced")
    assert all({A, B} - set(g) for g in out["groups"])
    assert all({a, b} != {A, B} for a, b, *_ in out["pairs"])
    assert out["feedback"]["not_duplicate"] == [sorted([A, B])]

    # When A / C (unrelated photos) are confirmed duplicates, dedup groups them and names a member
    confirm = {"product_ids": [A, C], "verdict": "duplicate"}
    res = app.send_task("neardup.feedback", kwargs=confirm).get(timeout=30)
    assert res["ok"]
    out = run_dedup(sess, radius=8, n_shards=2, progress=False, timeout=60, preset="balanced")
    group = next(g for g in out["groups"] if A in g)
    assert sorted(group) == sorted([A, C])
    first_indexed = min(group, key=lambda pid: int(r.hget(keys.ADDED, pid)))
    assert out["canonical"][out["groups"].index(group)] == first_indexed  # NEARDUP_CANONICAL=earliest
    assert any(p[:2] == sorted([A, C]) and p[3] == "confirmed" for p in out["pairs"])

    # When the verdict on A / B is cleared, they match again
    clear = {"product_ids": [A, B], "verdict": "clear"}
    res = app.send_task("neardup.feedback", kwargs=clear).get(timeout=30)
    assert res["ok"] and res["previous"] == "not_duplicate"
    assert B in listed(ask(app, 1, product_id=A)[0])


def test_feedback_task_errors(stack):
    app, r, store = stack
    three_products(app, r, store)
    for kwargs, reason in [
        ({"product_ids": [A, "9999999999"], "verdict": "duplicate"}, "not_indexed"),
        ({"product_ids": [A, "../x"], "verdict": "duplicate"}, "bad_product_id"),
        ({"product_ids": [A, A], "verdict": "duplicate"}, "same_product"),
        ({"product_ids": [A], "verdict": "duplicate"}, "bad_type"),
        ({"product_ids": [A, B], "verdict": "maybe"}, "bad_verdict"),
    ]:
        res = app.send_task("neardup.feedback", kwargs=kwargs).get(timeout=30)
        assert not res["ok"] and res["error"]["reason"] == reason, (kwargs, res)


def test_ingest_sync_dry_run_lists_then_sync_removes(stack, base_settings, tmp_path, monkeypatch, capsys):
    # Given five indexed products, and a new catalog that lists three of them plus one new product
    app, r, store = stack
    inventory = sorted((SAMPLES / "inventory").glob("*.jpg"))
    ingest(app, r, store, [(p.stem, str(p)) for p in inventory[:5]])
    folder = tmp_path / "catalog.csv"  # a productId,url list: the kept ones at the URLs they have
    folder.write_text("".join(f"{p.stem},{p}\n" for p in inventory[:3] + inventory[5:6]))
    monkeypatch.setenv("NEARDUP_REDIS_URL", base_settings.redis_url)
    monkeypatch.setenv("NEARDUP_FILE_ROOTS", str(tmp_path))
    monkeypatch.setenv("NEARDUP_ALLOW_PRIVATE_URLS", "1")
    version = store.version()

    # When the sync is previewed
    rc = cli.main(["ingest", str(folder), "--sync", "--dry-run", "-q"])

    # Then it lists exactly the two absent products, and nothing changed
    out = capsys.readouterr()
    assert rc == 0 and out.out.split() == sorted(p.stem for p in inventory[3:5])
    assert "would ingest 1 products and remove 2" in out.err
    assert store.size() == 5 and store.version() == version

    # When it runs for real
    rc = cli.main(["ingest", str(folder), "--sync", "-q"])

    # Then the new product is indexed, the two absent ones removed and counted, and status agrees
    err = capsys.readouterr().err
    assert rc == 0 and "ingest --sync: 2 removed" in err
    assert sorted(store.indexed_ids()) == sorted(p.stem for p in inventory[:3] + inventory[5:6])
    assert cli.main(["status"]) == 0
    assert "index: 4 products" in capsys.readouterr().out
    # A second sync of the same catalog removes nothing and still says what the index holds
    assert cli.main(["ingest", str(folder), "--sync", "-q"]) == 0
    assert f"0 removed, 0 not indexed, 0 bad ids; index holds 4 products at version {store.version()}" in (
        capsys.readouterr().err
    )
    assert cli.main(["ingest", str(tmp_path / "empty"), "--sync"]) == 2  # missing: nothing removed
    (tmp_path / "empty").mkdir()
    assert cli.main(["ingest", str(tmp_path / "empty"), "--sync"]) == 2  # lists nothing: refused
    assert store.size() == 4


def test_the_cli_names_a_refused_request_once(stack, base_settings, monkeypatch, capsys):
    app, r, store = stack
    three_products(app, r, store)
    monkeypatch.setenv("NEARDUP_REDIS_URL", base_settings.redis_url)
    # a pair of one product, and an id that cannot be one: each reason said once, with its detail
    assert cli.main(["feedback", "--duplicate", A, A]) == 2
    err = capsys.readouterr().err
    assert "feedback: same_product: " in err and err.count("same_product") == 1, err
    assert cli.main(["remove", "../x"]) == 1
    err = capsys.readouterr().err
    assert "../x: bad_product_id: " in err and err.count("bad_product_id") == 1, err
    assert store.size() == 3


def test_a_cut_off_set_for_the_cli_goes_with_its_queries(stack, base_settings, monkeypatch, tmp_path):
    # Given workers started without one, and a CLI whose environment sets a cut-off
    app, r, store = stack
    three_products(app, r, store)
    monkeypatch.setenv("NEARDUP_REDIS_URL", base_settings.redis_url)
    monkeypatch.setenv("NEARDUP_MAX_DISTANCE", "3")
    out = tmp_path / "d.json"
    # When it queries with --details, then the answer used that cut-off and says so
    assert cli.main(["query", "--product-id", A, "--details", "-q", "-o", str(out)]) == 0
    details = json.loads(out.read_text())
    assert details["queries"][A]["rule"] == "balanced+d3"
    assert (details["settings"]["max_distance"], details["settings"]["min_similarity"]) == (3, None)
    # and a flag overrides the environment
    flagged = ["query", "--product-id", A, "--max-distance", "5", "--details", "-q", "-o", str(out)]
    assert cli.main(flagged) == 0
    assert json.loads(out.read_text())["queries"][A]["rule"] == "balanced+d5"


def test_client_wraps_remove_and_feedback(stack, base_settings):
    from producer.client import NeardupClient

    app, r, store = stack
    three_products(app, r, store)
    with NeardupClient(base_settings.redis_url) as nd:
        assert nd.feedback(A, B, "not_duplicate")["ok"]
        assert nd.status()["feedback"] == {"not_duplicate": 1, "duplicate": 0}
        res = nd.remove([C, "nope-1"])
        assert (res["removed"], res["not_indexed"]) == (1, 1) and nd.status()["index_size"] == 2
        assert nd.feedback(A, C, "duplicate")["error"]["reason"] == "not_indexed"  # C is gone
