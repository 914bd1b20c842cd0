"""Ingest and query through a real redis-server and real prefork Celery workers."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
import redis

from common.index import keys
from producer import jobs
from producer.catalog import read_catalog
from producer.connection import celery_app, index_store
from tests.conftest import SAMPLES

pytestmark = pytest.mark.integration


@pytest.fixture
def session(base_settings, workers, index_redis):
    app = celery_app(base_settings)
    return app, index_redis, index_store(index_redis)


def ingest(app, r, store, items, force=False):
    job_id, sent, skipped = jobs.enqueue_ingest(app, store, items, chunk=8, force=force)
    state = jobs.wait(r, job_id, sent, "ingest", lambda: True, progress=False, timeout=120)
    return job_id, state, skipped


def query(app, r, specs):
    job_id = jobs.enqueue_queries(app, r, specs)
    jobs.wait(r, job_id, len(specs), "query", lambda: True, progress=False, timeout=60)
    return jobs.gather(r, job_id)


def test_ingest_then_query_finds_labelled_duplicates(session):
    # Given the bundled sample inventory ingested through the workers
    app, r, store = session
    report = read_catalog(SAMPLES / "inventory")
    _, state, _ = ingest(app, r, store, report.items)
    assert state.done == len(report.items) and state.failed == 0
    assert store.size() == len(report.items)

    # When every exact-copy query is sent as a path
    labels = json.loads((SAMPLES / "labels.json").read_text())
    exact = {name: q for name, q in labels["queries"].items() if q["category"] == "1"}
    assert exact
    results = query(app, r, [{"key": n, "path": str(SAMPLES / "queries" / n)} for n in exact])

    # Then each finds its product at distance 0 and the answers name the index version
    for name, q in exact.items():
        res = results[name]
        assert res["ok"], res
        found = {m["product_id"]: m for m in res["matches"]}
        assert q["matches"][0] in found
        assert found[q["matches"][0]]["distance"] == 0
        assert res["index_version"] == store.version()


def test_query_by_product_id_excludes_itself_and_sees_a_fresh_write(session, tmp_path):
    # Given an index of two products, one a byte copy of the other
    app, r, store = session
    src = sorted((SAMPLES / "inventory").glob("*.jpg"))[0]
    shutil.copy(src, tmp_path / "1000000001.jpg")
    ingest(app, r, store, [("1000000000", str(src))])
    first = query(app, r, [{"key": "a", "product_id": "1000000000"}])["a"]
    assert first["ok"] and first["matches"] == []  # never itself

    # When the copy is ingested a moment later
    ingest(app, r, store, [("1000000001", str(tmp_path / "1000000001.jpg"))])

    # Then the very next query finds it, from the newer index version
    second = query(app, r, [{"key": "a", "product_id": "1000000000"}])["a"]
    assert [m["product_id"] for m in second["matches"]] == ["1000000001"]
    assert second["matches"][0]["similarity"] == 100.0
    assert second["index_version"] > first["index_version"]


def test_ingest_is_idempotent_and_skips_indexed(session):
    app, r, store = session
    items = read_catalog(SAMPLES / "inventory").items[:5]
    ingest(app, r, store, items)
    version = store.version()
    # Re-running skips at the producer: an interrupted job resumes instead of starting over
    _, _, skipped = ingest(app, r, store, items)
    assert skipped == 5 and store.version() == version
    # Forcing re-downloads; identical signatures leave one row per product
    _, state, _ = ingest(app, r, store, items, force=True)
    assert state.done == 5 and store.size() == 5
    # A plain rewrite of unchanged signatures is a no-op: no version bump, no change-feed entry
    sigs = store.signatures_of(items[0][0])
    from common.index.store import Product

    written, after = store.write([Product(items[0][0], items[0][1], sigs)])
    assert written == 0 and after == store.version()


def test_failures_are_recorded_with_reason(session, tmp_path):
    app, r, store = session
    (tmp_path / "bad.jpg").write_bytes(b"this is not an image")
    items = [
        ("2000000001", str(tmp_path / "bad.jpg")),
        ("2000000002", str(tmp_path / "missing.jpg")),
        ("2000000003", "/etc/passwd"),
    ]
    job_id, state, _ = ingest(app, r, store, items)
    assert state.failed == 3 and state.done == 0
    failures = jobs.failed_items(r, store, job_id)
    assert set(failures) == {"2000000001", "2000000002", "2000000003"}
    assert failures["2000000003"]["reason"] == "path_not_allowed"
    assert failures["2000000002"]["stage"] == "fetch"
    assert failures["2000000001"]["stage"] == "decode"


def test_public_query_task_by_name_returns_json_result(session, base_settings):
    app, r, store = session
    report = read_catalog(SAMPLES / "inventory")
    ingest(app, r, store, report.items[:3])
    pid, path = report.items[0]
    data = base64.b64encode(Path(path).read_bytes()).decode()
    res = app.send_task("neardup.query", kwargs={"image_b64": data, "details": True}).get(timeout=30)
    assert res["ok"] and res["matches"][0]["product_id"] == pid
    bad = app.send_task("neardup.query", kwargs={"url": "x", "product_id": pid}).get(timeout=30)
    assert bad == {
        "ok": False,
        "error": {"stage": "request", "reason": "need_one_source", "detail": bad["error"]["detail"]},
    }
    assert r.hlen(keys.FAILURES) == 0


def test_signature_mismatch_is_refused(index_redis):
    index_redis.set(keys.SIGNALS, json.dumps(["some-other-hash@9"]))
    store = index_store(index_redis)
    with pytest.raises(Exception, match="signature_mismatch"):
        store.check_signals()
    assert isinstance(index_redis, redis.Redis)


def test_an_index_written_with_older_verification_blobs_is_refused(index_redis):
    # An index whose products carry the blobs of the versions before this one (orb112@1: 32-byte
    # descriptors under a 4-byte header; thumb@3: exact planes under zlib): verifying against it would
    # misread every blob, so it is refused by name, not silently weakened.
    from common.signals import signal_set

    for old_orb, old_thumb in (("orb112@1", "thumb@3"), ("orb124x128@1", "thumb@3")):
        old = [*signal_set.DEFAULT.scan, "pdq256@1", old_orb, old_thumb, "pdq256.mirror@1"]
        index_redis.set(keys.SIGNALS, json.dumps(old))
        with pytest.raises(Exception, match=r"signature_mismatch.*thumb@3.*thumb@4"):
            index_store(index_redis).check_signals()


def test_an_index_that_recorded_only_its_scanned_signals_is_refused(index_redis):
    # What every index written before the verified blobs were recorded holds: its scans only. Its
    # blobs are of older versions (orb256@1, thumb@2), so it must be rebuilt, and the error says so.
    from common.signals import signal_set

    index_redis.set(keys.SIGNALS, json.dumps(list(signal_set.DEFAULT.scan)))
    with pytest.raises(Exception, match=r"signature_mismatch.*orb124x128@1.*thumb@4.*new index"):
        index_store(index_redis).check_signals()


def test_a_damaged_index_entry_gives_an_error_result_not_a_dead_task(session):
    # Given a product whose stored ORB blob is garbage (a damaged or foreign index entry)
    app, r, store = session
    report = read_catalog(SAMPLES / "inventory")
    ingest(app, r, store, report.items[:2])
    from common.signals import signal_set

    pid, path = report.items[0]
    r.hset(keys.signal(signal_set.ORB), pid, b"\x01garbage")
    r.hset(keys.signal(signal_set.PDQ), pid, b"\x00")

    # When a query lands on it as a candidate
    data = base64.b64encode(Path(path).read_bytes()).decode()
    res = app.send_task("neardup.query", kwargs={"image_b64": data}).get(timeout=30)

    # Then the damaged candidate is skipped (and logged); the query is answered from the rest
    assert res["ok"], res
    assert all(m["stage"] not in ("pdq", "orb") for m in res["matches"] if m["product_id"] == pid)
    again = app.send_task("neardup.query", kwargs={"product_id": report.items[1][0]}).get(timeout=30)
    assert again["ok"], again


def test_an_index_of_other_signatures_gives_recorded_errors_not_a_hang(session, tmp_path):
    # Given an index that records another signal set (another decode mode or signature version)
    app, r, store = session
    r.set(keys.SIGNALS, json.dumps(["dhash64@0"]))

    # When products are ingested and a query is sent by workers computing today's signals
    src = sorted((SAMPLES / "inventory").glob("*.jpg"))[0]
    job_id, sent, _ = jobs.enqueue_ingest(app, store, [("3000000001", str(src))], chunk=8)
    state = jobs.wait(r, job_id, sent, "ingest", lambda: True, progress=False, timeout=60)
    res = app.send_task("neardup.query", kwargs={"path": str(src)}).get(timeout=30)

    # Then every product is recorded as failed with the reason, and the query answers with it
    assert (
        state.failed == 1
        and jobs.failed_items(r, store, job_id)["3000000001"]["reason"] == "signature_mismatch"
    )
    assert res["ok"] is False and res["error"]["reason"] == "signature_mismatch"
    assert r.hlen(keys.ROWS) == 0


def test_a_changed_photo_url_is_reindexed_without_force(session):
    # Given a product indexed from one photo
    app, r, store = session
    first, second = sorted((SAMPLES / "inventory").glob("*.jpg"))[:2]
    ingest(app, r, store, [("4000000001", str(first))])
    before = store.signatures_of("4000000001")

    # When the catalog gives it another photo URL, and the run is repeated unchanged afterwards
    _, state, skipped = ingest(app, r, store, [("4000000001", str(second))])
    version = store.version()
    _, _, skipped_again = ingest(app, r, store, [("4000000001", str(second))])

    # Then the new photo replaces the old one (no --force needed), and an unchanged row is skipped
    assert skipped == 0 and state.done == 1
    assert store.signatures_of("4000000001") != before and store.size() == 1
    assert skipped_again == 1 and store.version() == version
