"""The query worker's blob cache follows the index: a rewritten product's blobs are fetched again at
the next sync, and a reset index empties the cache (real redis-server, the worker's own module)."""

from __future__ import annotations

import pytest

from common.index.store import Product
from common.match import describe
from common.signals import signal_set
from tests.conftest import SAMPLES
from workers import index_cache


@pytest.fixture
def worker_state(base_settings, index_redis, monkeypatch):
    monkeypatch.setenv("NEARDUP_REDIS_URL", base_settings.redis_url)
    for name, value in (("_snap", None), ("_blob_cache", None), ("_last_change", "0-0"), ("_epoch", "")):
        monkeypatch.setattr(index_cache, name, value)
    monkeypatch.setattr(index_cache, "_state", {})
    yield index_cache.store()
    index_cache._state.clear()


def _product(pid: str, path) -> Product:
    return Product(pid, str(path), describe.describe_bytes(path.read_bytes(), 60_000_000))


def test_a_rewritten_product_is_not_verified_from_a_stale_blob(worker_state, index_redis):
    store = worker_state
    store.check_signals()
    one, two = sorted((SAMPLES / "inventory").glob("*.jpg"))[:2]
    first, second = _product("4100000001", one), _product("4100000001", two)
    # Given a product indexed, its PDQ blob read once through the cache
    store.write([first])
    index_cache.snapshot()
    cache = index_cache.blob_cache()
    assert cache.blobs(signal_set.PDQ, ["4100000001"]) == [first.signatures[signal_set.PDQ]]
    assert cache.blobs(signal_set.PDQ, ["4100000001"]) == [first.signatures[signal_set.PDQ]]
    assert cache.hits == 1

    # When the product is rewritten with another photo and the worker syncs its index
    store.write([second], force=True)
    index_cache.snapshot()

    # Then the cache answers with the new blob, fetched from Redis again
    assert cache.blobs(signal_set.PDQ, ["4100000001"]) == [second.signatures[signal_set.PDQ]]

    # And when the whole index is replaced, the cache starts empty
    index_redis.flushdb()
    store.check_signals()
    store.write([first])
    index_cache.snapshot()
    assert len(index_cache.blob_cache()) == 0
    assert index_cache.blob_cache().blobs(signal_set.PDQ, ["4100000001"]) == [
        first.signatures[signal_set.PDQ]
    ]
