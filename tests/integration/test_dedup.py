"""`neardup dedup` through the workers, checked exact against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from common.index.store import Product
from common.signals import signal_set
from common.signals.signatures import pack64
from producer.connection import celery_app, index_store
from producer.dedup import run_dedup
from producer.session import Session

pytestmark = pytest.mark.integration


def test_dedup_shards_match_brute_force(base_settings, workers, index_redis):
    # Given 600 products whose hashes form planted clusters plus noise
    rng = np.random.default_rng(3)
    base = rng.integers(0, 2**63, size=40, dtype=np.uint64)
    hashes = []
    for k in range(600):
        h = int(base[k % 40]) if k < 400 else int(rng.integers(0, 2**63))
        for bit in rng.choice(64, size=int(rng.integers(0, 5)), replace=False):
            h ^= 1 << int(bit)
        hashes.append(h)
    store = index_store(index_redis)
    # dedup reads only the dHash column; the other signals just need to be present
    filler = {s: pack64(0) for s in store.scan_signals} | {s: b"" for s in store.blob_signals}
    store.write(
        [
            Product(f"p{k:04d}", "", filler | {signal_set.DEFAULT.primary: pack64(h)})
            for k, h in enumerate(hashes)
        ]
    )
    sess = Session(base_settings, celery_app(base_settings), index_redis, store, None)

    # When dedup runs split into 5 shards across the workers
    out = run_dedup(sess, radius=6, n_shards=5, progress=False, timeout=60)

    # Then its groups are exactly the components of the brute-force pairs within 6, every pair it
    # lists is one of them, and every pair of distinct hashes is listed (identical hashes come as a
    # star from their first row: linear in a crowd, the same groups)
    arr = np.array(hashes, dtype=np.uint64)
    dist = np.bitwise_count(arr[:, None] ^ arr[None, :])
    ii, jj = np.nonzero(np.triu(dist <= 6, k=1))
    expected = {(f"p{i:04d}", f"p{j:04d}") for i, j in zip(ii, jj, strict=True)}
    found = {(a, b) for a, b, *_ in out["pairs"]}
    assert found <= expected and len(found) > 100
    distinct = {(f"p{i:04d}", f"p{j:04d}") for i, j in zip(ii, jj, strict=True) if arr[i] != arr[j]}
    first_of = {int(h): f"p{int(np.flatnonzero(arr == h)[0]):04d}" for h in arr}
    reps = {(first_of[int(arr[int(a[1:])])], first_of[int(arr[int(b[1:])])]) for a, b in distinct}
    assert {(min(a, b), max(a, b)) for a, b in reps} <= found
    parent = list(range(len(hashes)))

    def root(k: int) -> int:
        while parent[k] != k:
            k = parent[k]
        return k

    for i, j in zip(ii, jj, strict=True):
        parent[root(int(i))] = root(int(j))
    components: dict[int, set[str]] = {}
    for k in range(len(hashes)):
        components.setdefault(root(k), set()).add(f"p{k:04d}")
    assert sorted(map(sorted, (c for c in components.values() if len(c) > 1))) == sorted(out["groups"])


def test_verified_dedup_groups_only_true_duplicates(base_settings, workers, index_redis):
    # Given the sample inventory and the sample queries ingested together as one catalog
    import json

    from producer import jobs
    from producer.catalog import read_catalog
    from tests.conftest import SAMPLES

    store = index_store(index_redis)
    app = celery_app(base_settings)
    items = read_catalog(SAMPLES / "inventory").items + read_catalog(SAMPLES / "queries").items
    job, sent, _ = jobs.enqueue_ingest(app, store, items, chunk=8)
    assert jobs.wait(index_redis, job, sent, "ingest", lambda: True, progress=False, timeout=120).failed == 0
    sess = Session(base_settings, app, index_redis, store, None)

    # When the whole index is deduplicated with the balanced preset
    out = run_dedup(sess, radius=8, n_shards=3, progress=False, timeout=60, preset="balanced")

    # Then every pair is a labelled query with its own product (or its colour sibling), each once,
    # and every exact copy is among them
    labels = json.loads((SAMPLES / "labels.json").read_text())["queries"]
    allowed = {
        (p, q.removesuffix(".jpg")) for q, lab in labels.items() for p in lab["matches"] + lab["ignore"]
    }
    found = {(a, b) if not a.startswith("q_") else (b, a) for a, b, *_ in out["pairs"]}
    assert len(found) == len(out["pairs"]) and found <= allowed
    exact = {
        (lab["matches"][0], q.removesuffix(".jpg")) for q, lab in labels.items() if lab["category"] == "1"
    }
    assert exact <= found
    assert {stage for *_, stage in out["pairs"]} <= {"exact", "pdq", "orb"}


def test_verified_dedup_groups_a_mirrored_upload(base_settings, workers, index_redis, tmp_path):
    # Given six inventory photos and a seller's mirrored (and re-encoded) upload of one of them
    from PIL import Image, ImageOps

    from producer import jobs
    from producer.catalog import read_catalog
    from tests.conftest import SAMPLES

    photos = sorted((SAMPLES / "inventory").glob("*.jpg"))[:6]
    for src in photos:
        (tmp_path / src.name).write_bytes(src.read_bytes())
    ImageOps.mirror(Image.open(photos[2]).convert("RGB")).save(tmp_path / "7777777.jpg", quality=85)
    store = index_store(index_redis)
    app = celery_app(base_settings)
    job, sent, _ = jobs.enqueue_ingest(app, store, read_catalog(tmp_path).items, chunk=4)
    assert jobs.wait(index_redis, job, sent, "ingest", lambda: True, progress=False, timeout=120).failed == 0
    sess = Session(base_settings, app, index_redis, store, None)

    # When the whole index is deduplicated with the balanced preset
    out = run_dedup(sess, radius=8, n_shards=2, progress=False, timeout=60, preset="balanced")

    # Then the mirrored upload and its original form a group, confirmed by the mirror, and nothing else
    original = photos[2].stem
    assert [[a, b, stage] for a, b, _, stage in out["pairs"]] == [[original, "7777777", "mirror"]]
    assert out["groups"] == [[original, "7777777"]]
    assert f"{signal_set.DEFAULT.primary}~{signal_set.DHASH_MIRROR}" in out["candidate_signals"]

    # And a query by productId for either one, through the workers, names the other as mirrored
    from common.config import tasks

    for pid, other in ((original, "7777777"), ("7777777", original)):
        kwargs = {"product_id": pid, "preset": "balanced", "details": True}
        res = app.send_task(tasks.QUERY, kwargs=kwargs, queue=tasks.QUEUE_OF[tasks.QUERY]).get(timeout=60)
        assert res["ok"], res
        assert [m["product_id"] for m in res["matches"]] == [other]
        assert res["matches"][0]["signals"].get("mirrored") is True
