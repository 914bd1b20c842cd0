"""The per-process blob cache: answers like the store, fetches only what it lacks, forgets rewrites."""

from __future__ import annotations

from common.index.blob_cache import BlobCache


class CountingStore:
    def __init__(self) -> None:
        self.data = {("pdq", "a"): b"A" * 10, ("pdq", "b"): b"B" * 10, ("orb", "a"): b"x" * 500}
        self.asked: list[list[str]] = []

    def blobs(self, signal: str, ids: list[str]) -> list[bytes | None]:
        self.asked.append(list(ids))
        return [self.data.get((signal, i)) for i in ids]


def test_answers_like_the_store_and_fetches_only_what_it_lacks() -> None:
    store = CountingStore()
    cache = BlobCache(store.blobs, max_bytes=1 << 20)
    assert cache.blobs("pdq", ["a", "b", "zz", "a"]) == [b"A" * 10, b"B" * 10, None, b"A" * 10]
    assert store.asked == [["a", "b", "zz"]]  # each id once, even when asked twice
    assert cache.blobs("pdq", ["b", "zz", "a"]) == [b"B" * 10, None, b"A" * 10]
    assert store.asked == [["a", "b", "zz"]]  # all cached, a missing blob included
    assert cache.blobs("orb", ["a"]) == [b"x" * 500]  # another signal is another entry
    assert store.asked[-1] == ["a"]


def test_a_rewritten_product_is_fetched_again() -> None:
    # Given a cached blob
    store = CountingStore()
    cache = BlobCache(store.blobs, max_bytes=1 << 20)
    cache.blobs("pdq", ["a", "b"])
    cache.blobs("orb", ["a"])
    # When the product is rewritten and the cache told so (the index cache does it on every sync)
    store.data[("pdq", "a")] = b"new"
    cache.forget(["a"])
    # Then its blobs come from the store again, the others still from the cache
    assert cache.blobs("pdq", ["a", "b"]) == [b"new", b"B" * 10]
    assert store.asked[-1] == ["a"]
    cache.clear()
    assert len(cache) == 0
    cache.blobs("pdq", ["b"])
    assert store.asked[-1] == ["b"]


def test_stays_within_its_byte_budget_dropping_the_least_recently_used() -> None:
    store = CountingStore()
    store.data.update({("t", str(k)): bytes(1000) for k in range(50)})
    cache = BlobCache(store.blobs, max_bytes=10 * 1100)
    for k in range(50):
        cache.blobs("t", [str(k)])
        cache.blobs("t", ["0"])  # kept warm: never the least recently used
    assert len(cache) <= 10
    before = len(store.asked)
    cache.blobs("t", ["0", "49"])
    assert len(store.asked) == before  # the warm one and the newest are still there
    cache.blobs("t", ["1"])
    assert store.asked[-1] == ["1"]  # an old one was dropped


def test_a_products_blobs_come_from_one_fetch_unless_all_are_cached() -> None:
    store = CountingStore()
    products: list[str] = []

    def blobs_of(pid: str) -> dict[str, bytes]:
        products.append(pid)
        return {s: v for (s, p), v in store.data.items() if p == pid}

    cache = BlobCache(store.blobs, max_bytes=1 << 20)
    # Given nothing cached: one product fetch, the missing signal left out as blobs_of does
    assert cache.product("a", ("pdq", "orb", "thumb"), blobs_of) == {"pdq": b"A" * 10, "orb": b"x" * 500}
    assert products == ["a"]
    # When asked again, or after a batch prefetched every signal: no fetch at all
    assert cache.product("a", ("pdq", "orb", "thumb"), blobs_of) == {"pdq": b"A" * 10, "orb": b"x" * 500}
    cache.blobs("pdq", ["b"]), cache.blobs("orb", ["b"]), cache.blobs("thumb", ["b"])
    assert cache.product("b", ("pdq", "orb", "thumb"), blobs_of) == {"pdq": b"B" * 10}
    assert products == ["a"]
