"""The index's own size: Redis bytes per product, by part, on real and generated photos.

    python benchmarks/bench_footprint.py                  # devset inventory + samples + 300 generated
    python benchmarks/bench_footprint.py --generated 100
    python benchmarks/bench_footprint.py --copies 250       # the devset written 250 times (100,000)

Each set is described (describe_bytes, the default signal set) and written with the store's own Lua
write into a private redis-server (started on a free port, emptied between sets). Per product:
`used_memory` after minus before, and `MEMORY USAGE` of every index key (SAMPLES 0: exact), summed by
part. The change stream is bounded (STREAM_MAXLEN entries, whatever the catalog size), so it is
shown apart and left out of the 20 GB projection. The first set is also written `--copies` times under
new ids (the same blobs): Redis packs a hash of up to 512 small entries as a listpack, so the index's
per-product hashes (rows, metadata, first version, small blobs) cost less in a small set than in a
catalogue-sized one. Peer in the same server: the original's layout, one Redis hash of productId ->
imagehash.dhash hex string.
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
    if key.startswith(keys.PREFIX + "sig:"):  # neardup:sig:<signal>
        return blobs.get(key.removeprefix(keys.PREFIX + "sig:"), "other blobs")
    if key.startswith(keys.PREFIX + "col:"):
        return "scanned columns (8 B each)"
    if key == keys.CHANGES:
        return "change stream (bounded)"
    return "ids, rows, metadata"


def _measure(
    r: redis.Redis, products: list[tuple[str, bytes]], copies: int = 1
) -> tuple[dict[str, float], float, float]:
    """Bytes per product, by part. `copies` > 1 writes every described photo that many times under new
    ids: a catalogue-sized index (its hashes outgrow Redis's listpacks as they do at scale)."""
    sigs = signal_set.DEFAULT
    store = index_store(r, sigs)
    blobs = {s: f"{s} blob" for s in sigs.blobs}
    described = [(pid, describe.describe_bytes(data, _LIMIT, sigs)) for pid, data in products]
    dhashes = [str(imagehash.dhash(Image.open(io.BytesIO(data)))) for _, data in products]
    ids = [[pid if k == 0 else f"{pid}.{k}" for pid, _ in described] for k in range(copies)]
    n = copies * len(products)
    before = r.info("memory")["used_memory"]
    batch: list[Product] = []
    for copy_ids in ids:
        for pid, (_, signatures) in zip(copy_ids, described, strict=True):
            batch.append(Product(pid, f"file:///{pid}.jpg", signatures))
            if len(batch) == 64:
                store.write(batch)
                batch = []
    store.write(batch)
    used = r.info("memory")["used_memory"] - before
    parts: dict[str, float] = {}
    for key in r.scan_iter(match=keys.PREFIX + "*", count=1000):
        name = _part(key.decode(), blobs)
        parts[name] = parts.get(name, 0) + int(r.memory_usage(key, samples=0) or 0) / n
    r.flushall()
    original: dict[str | bytes, str] = {
        pid: h for copy_ids in ids for pid, h in zip(copy_ids, dhashes, strict=True)
    }
    before = r.info("memory")["used_memory"]
    r.hset("original:dhash", mapping=original)  # type: ignore[arg-type]
    peer = (r.info("memory")["used_memory"] - before) / n
    r.flushall()
    return parts, used / n, peer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--generated", type=int, default=300)
    ap.add_argument(
        "--copies", type=int, default=100, help="the first set also written this many times (0 or 1: not)"
    )
    args = ap.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory(prefix="neardup-footprint-") as tmp:
        server = RedisServer(Path(tmp), port=free_port(), appendonly=False)
        server.start()
        try:
            r = redis.Redis.from_url(server.url)
            sets = _sets(args.generated)
            if args.copies > 1:
                name, products = sets[0]
                sets.insert(1, (f"{name} x{args.copies}", products))
            for name, products in sets:
                copies = args.copies if name.endswith(f" x{args.copies}") and args.copies > 1 else 1
                parts, used, peer = _measure(r, products, copies)
                steady = sum(v for k, v in parts.items() if k != "change stream (bounded)")
                rows = [[k, round(v)] for k, v in sorted(parts.items(), key=lambda kv: -kv[1])]
                rows += [["all index keys (stream left out)", round(steady)]]
                rows += [["used_memory delta", round(used)]]
                print(f"\n{name}: {len(products) * copies:,} products, Redis bytes per product")
                print(table(["part", "B/product"], rows))
                print(
                    f"# products in {BUDGET / 1e9:.0f} GB: {BUDGET / steady / 1e6:.1f} M;"
                    f" original (productId -> dHash hex): {peer:.0f} B/product, neardup x{steady / peer:.0f}"
                )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
