"""The index's own size: Redis bytes per product, by part, on real and generated photos.

    python benchmarks/bench_footprint.py                  # devset inventory + samples + 300 generated
    python benchmarks/bench_footprint.py --generated 100

Each set is described (describe_bytes, the default signal set) and written with the store's own Lua
write into a private redis-server (started on a free port, emptied between sets). Per product:
`used_memory` after minus before, and `MEMORY USAGE` of every index key (SAMPLES 0: exact), summed by
part. The change stream is bounded (STREAM_MAXLEN entries, whatever the catalog size), so it is
shown apart and left out of the 20 GB projection. Peer in the same server: the original's layout,
one Redis hash of productId -> imagehash.dhash hex string.
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import _common  # noqa: F401  (puts the project on sys.path)
import imagehash
import numpy as np
import redis
from _common import machine, photo_jpeg, table
from PIL import Image

from common.index import keys
from common.index.store import Product
from common.match import describe
from common.signals import signal_set
from producer.connection import index_store
from producer.redis_server import RedisServer
from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
DEVSET = ROOT.parent / "shared" / "devset" / "inventory"
BUDGET = 20 * 10**9  # the one 20 GB Redis
_LIMIT = 100_000_000


def _sets(generated: int) -> list[tuple[str, list[tuple[str, bytes]]]]:
    sets = []
    if DEVSET.is_dir():
        sets.append(("devset", [(p.stem, p.read_bytes()) for p in sorted(DEVSET.glob("*.jpg"))]))
    samples = sorted((ROOT / "samples" / "inventory").glob("*.jpg"))
    sets.append(("samples", [(p.stem, p.read_bytes()) for p in samples]))
    rng = np.random.default_rng(11)
    noisy = [(f"{9_000_000_000 + i}", photo_jpeg(rng, 800, 1000, noise=6.0)) for i in range(generated)]
    sets.append(("generated 800x1000", noisy))
    return sets


def _part(key: str, blobs: dict[str, str]) -> str:
    if key in blobs:
        return blobs[key]
    if key.startswith(keys.PREFIX + "col:"):
        return "scanned columns (8 B each)"
    if key == keys.CHANGES:
        return "change stream (bounded)"
    return "ids, rows, metadata"


def _measure(r: redis.Redis, products: list[tuple[str, bytes]]) -> tuple[dict[str, float], float, float]:
    sigs = signal_set.DEFAULT
    store = index_store(r, sigs)
    blobs = {keys.signal(s): f"{s} blob" for s in sigs.blobs}
    before = r.info("memory")["used_memory"]
    batch: list[Product] = []
    for pid, data in products:
        batch.append(Product(pid, f"file:///{pid}.jpg", describe.describe_bytes(data, _LIMIT, sigs)))
        if len(batch) == 64:
            store.write(batch)
            batch = []
    store.write(batch)
    used = r.info("memory")["used_memory"] - before
    parts: dict[str, float] = {}
    for key in r.scan_iter(match=keys.PREFIX + "*"):
        name = _part(key.decode(), blobs)
        parts[name] = parts.get(name, 0) + int(r.memory_usage(key, samples=0) or 0) / len(products)
    r.flushall()
    original: dict[str | bytes, str] = {
        pid: str(imagehash.dhash(Image.open(io.BytesIO(data)))) for pid, data in products
    }
    before = r.info("memory")["used_memory"]
    r.hset("original:dhash", mapping=original)  # type: ignore[arg-type]
    peer = (r.info("memory")["used_memory"] - before) / len(products)
    r.flushall()
    return parts, used / len(products), peer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--generated", type=int, default=300)
    args = ap.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory(prefix="neardup-footprint-") as tmp:
        server = RedisServer(Path(tmp), port=free_port(), appendonly=False)
        server.start()
        try:
            r = redis.Redis.from_url(server.url)
            for name, products in _sets(args.generated):
                parts, used, peer = _measure(r, products)
                steady = sum(v for k, v in parts.items() if k != "change stream (bounded)")
                rows = [[k, round(v)] for k, v in sorted(parts.items(), key=lambda kv: -kv[1])]
                rows += [["all index keys (stream left out)", round(steady)]]
                rows += [["used_memory delta", round(used)]]
                print(f"\n{name}: {len(products)} products, Redis bytes per product")
                print(table(["part", "B/product"], rows))
                print(
                    f"# products in {BUDGET / 1e9:.0f} GB: {BUDGET / steady / 1e6:.1f} M;"
                    f" original (productId -> dHash hex): {peer:.0f} B/product, neardup x{steady / peer:.0f}"
                )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
