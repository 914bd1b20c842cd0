"""Query scan: exact radius search over N uint64 dHashes, per query and batched, against its peers.

Peers measured in the same run: the original's per-row Python loop (ImageHash subtraction, timed on
a slice and extrapolated linearly), numpy XOR + popcount, FAISS IndexBinaryFlat and
IndexBinaryMultiHash range search (single thread, like one Celery worker process). Every answer of
every method is checked equal to brute force. Also: build and bulk-load times, memory per hash in
the worker and in Redis (a real redis-server on a free port when one is on PATH).

    python benchmarks/bench_scan.py --sizes 350000,1000000,10000000
    python benchmarks/bench_scan.py --quick
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time

import numpy as np
from _common import (
    best_of,
    clustered_hashes,
    machine,
    parse_sizes,
    planted_hashes,
    queries_near,
    table,
)

from common.index import hamming
from common.index.snapshot import Snapshot
from tests.support.processes import free_port

KEY = "dhash64@1"


def python_loop_per_query(hashes: np.ndarray, queries: np.ndarray, radius: int, rows: int) -> float:
    """The original: a Python loop comparing ImageHash objects, timed on `rows` rows, scaled to N."""
    import imagehash

    def as_imagehash(v: int) -> imagehash.ImageHash:
        bits = np.unpackbits(np.frombuffer(int(v).to_bytes(8, "big"), dtype=np.uint8)).astype(bool)
        return imagehash.ImageHash(bits.reshape(8, 8))

    sample = [as_imagehash(v) for v in hashes[:rows]]
    qs = [as_imagehash(v) for v in queries[:3]]
    t = best_of(lambda: [[i for i, h in enumerate(sample) if q - h <= radius] for q in qs], 1) / len(qs)
    return t * len(hashes) / rows


def faiss_codes(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.uint64).view(np.uint8).reshape(-1, 8)


def faiss_range(index, queries: np.ndarray, radius: int) -> list[np.ndarray]:
    lims, _, labels = index.range_search(faiss_codes(queries), radius + 1)  # FAISS keeps d < radius
    return [np.sort(labels[lims[i] : lims[i + 1]]) for i in range(len(queries))]


def check(name: str, got: list[np.ndarray], want: list[np.ndarray]) -> None:
    for g, w in zip(got, want, strict=True):
        if not np.array_equal(np.sort(np.asarray(g, dtype=np.int64)), w):
            raise AssertionError(f"{name}: answer differs from brute force")


def mih_params(radius: int) -> tuple[int, int, int]:
    """FAISS MultiHash (nhash, bits, nflip) that is exact at this radius: nhash * (nflip + 1) > r."""
    return (4, 16, 1) if radius < 8 else (4, 16, 2)


def bench_one(kind: str, n: int, radii: list[int], n_queries: int, batch: int, seed: int, use_faiss: bool):
    rng = np.random.default_rng(seed)
    hashes = planted_hashes(rng, n) if kind == "planted" else clustered_hashes(rng, n)
    rows = []
    ids = [f"p{i:09d}" for i in range(n)]
    t_load = best_of(lambda: Snapshot(signal_keys=(KEY,)).load_arrays(ids, {KEY: hashes}, 1), 1)
    snap = Snapshot(signal_keys=(KEY,))
    snap.load_arrays(ids, {KEY: hashes}, 1)
    faiss_flat = None
    if use_faiss:
        import faiss

        faiss.omp_set_num_threads(1)
        faiss_flat = faiss.IndexBinaryFlat(64)
        faiss_flat.add(faiss_codes(hashes))
    for radius in radii:
        rows.append(
            bench_radius(kind, n, hashes, snap, faiss_flat, radius, rng, n_queries, batch, use_faiss, t_load)
        )
        print(f"  done {kind} n={n:,} r={radius}", flush=True)
    return rows


def bench_radius(kind, n, hashes, snap, faiss_flat, radius, rng, n_queries, batch, use_faiss, t_load) -> dict:
    queries = queries_near(rng, hashes, n_queries, max_flips=radius)
    want = [hamming.scan(hashes, int(q), radius)[0] for q in queries]
    t0 = time.perf_counter()
    plan = snap.prepare(KEY, radius)
    t_build = time.perf_counter() - t0
    t_brute = best_of(lambda: [hamming.scan(hashes, int(q), radius) for q in queries], 2) / n_queries
    got = [snap.scan(KEY, int(q), radius) for q in queries]
    check("snapshot.scan", [g[0] for g in got], want)
    t_mih = best_of(lambda: [snap.scan(KEY, int(q), radius) for q in queries], 3) / n_queries
    qb = queries_near(rng, hashes, batch, max_flips=radius)
    got_b = snap.scan_batch(KEY, qb, radius)
    check(
        "snapshot.scan_batch",
        [g[0] for g in got_b[:50]],
        [hamming.scan(hashes, int(q), radius)[0] for q in qb[:50]],
    )
    t_batch = best_of(lambda: snap.scan_batch(KEY, qb, radius), 2) / batch
    t_loop = python_loop_per_query(hashes, queries, radius, rows=min(n, 20_000))
    t_flat = t_mh = float("nan")
    mh_bytes = float("nan")
    if use_faiss:
        import faiss

        fq = queries[: max(10, n_queries // 4)] if n > 2_000_000 else queries
        check("faiss flat", faiss_range(faiss_flat, fq, radius), want[: len(fq)])
        t_flat = best_of(lambda: faiss_range(faiss_flat, fq, radius), 1) / len(fq)
        nhash, bits, nflip = mih_params(radius)
        faiss_mh = faiss.IndexBinaryMultiHash(64, nhash, bits)
        faiss_mh.nflip = nflip
        t0 = time.perf_counter()
        faiss_mh.add(faiss_codes(hashes))
        t_mh_build = time.perf_counter() - t0
        check("faiss multihash", faiss_range(faiss_mh, queries, radius), want)
        t_mh = best_of(lambda: faiss_range(faiss_mh, queries, radius), 2) / n_queries
        mh_bytes = float(faiss.serialize_index_binary(faiss_mh).nbytes) / n
        del faiss_mh
    else:
        t_mh_build = float("nan")
    mem = snap.memory_bytes()
    found = sum(len(w) for w in want) / n_queries
    method = "brute" if plan.brute else f"MIH m={plan.m}"
    return dict(
        kind=kind,
        n=n,
        r=radius,
        method=method,
        found=found,
        loop=t_loop,
        brute=t_brute,
        flat=t_flat,
        mh=t_mh,
        mih=t_mih,
        batch=t_batch,
        build=t_build,
        mh_build=t_mh_build,
        load=t_load,
        worker_b=(mem["columns"] + mem["tables"]) / n,
        mh_b=mh_bytes,
    )


def redis_memory(n: int) -> dict[str, float] | None:
    """Bytes per product of one `productId -> 8-byte dHash` Redis hash, and HGETALL + numpy load time."""
    exe = shutil.which("redis-server")
    if exe is None:
        return None
    import redis

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                tmp,
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            r = redis.Redis(port=port)
            for _ in range(100):
                try:
                    r.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            base = r.info("memory")["used_memory"]
            rng = np.random.default_rng(1)
            values = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True).astype(">u8").tobytes()
            pipe = r.pipeline(transaction=False)
            step = 10_000
            for lo in range(0, n, step):
                pipe.hset(
                    "sig",
                    mapping={f"p{i:09d}": values[8 * i : 8 * i + 8] for i in range(lo, min(n, lo + step))},
                )
                pipe.execute()
            used = r.info("memory")["used_memory"] - base

            def fetch_and_load():
                d = r.hgetall("sig")
                ids = [k.decode() for k in d]
                arr = np.frombuffer(b"".join(d.values()), dtype=">u8").astype(np.uint64)
                s = Snapshot(signal_keys=(KEY,))
                s.load_arrays(ids, {KEY: arr}, 1)

            t0 = time.perf_counter()
            d = r.hgetall("sig")
            t_hgetall = time.perf_counter() - t0
            t0 = time.perf_counter()
            ids = [k.decode() for k in d]
            arr = np.frombuffer(b"".join(d.values()), dtype=">u8").astype(np.uint64)
            Snapshot(signal_keys=(KEY,)).load_arrays(ids, {KEY: arr}, 1)
            t_local = time.perf_counter() - t0
            return {"bytes": used / n, "hgetall": t_hgetall, "local": t_local}
        finally:
            proc.terminate()
            proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="350000,1000000,10000000")
    ap.add_argument("--radii", default="6,10")
    ap.add_argument("--data", default="planted,clustered", help="planted (uniform + near copies), clustered")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--batch", type=int, default=1000, help="queries per scan_batch call")
    ap.add_argument("--redis-size", type=int, default=1_000_000, help="0: skip the Redis measurement")
    ap.add_argument("--no-faiss", action="store_true")
    ap.add_argument("--quick", action="store_true", help="small sizes, a smoke run in seconds")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.queries, args.batch, args.redis_size = "20000,200000", 50, 200, 100_000
    sizes, radii = parse_sizes(args.sizes), [int(r) for r in args.radii.split(",")]
    print(machine())
    print(f"# queries: half within r of a row, half random; FAISS single-threaded; pid {os.getpid()}")
    results = []
    for kind in args.data.split(","):
        for n in sizes:
            results += bench_one(kind, n, radii, args.queries, args.batch, args.seed, not args.no_faiss)
    us = 1e6
    print("\nPer-query time in microseconds (every method's answers checked equal to brute force).")
    print("loop = the original per-row Python loop, timed on 20k rows and extrapolated linearly.")
    print(
        table(
            [
                "data",
                "N",
                "r",
                "method",
                "hits/q",
                "loop*",
                "numpy",
                "faiss flat",
                "faiss MH",
                "MIH",
                "MIH batch",
                "x flat",
                "x MH",
                "x numpy",
            ],
            [
                [
                    x["kind"],
                    x["n"],
                    x["r"],
                    x["method"],
                    x["found"],
                    x["loop"] * us,
                    x["brute"] * us,
                    x["flat"] * us,
                    x["mh"] * us,
                    x["mih"] * us,
                    x["batch"] * us,
                    x["flat"] / x["mih"],
                    x["mh"] / x["mih"],
                    x["brute"] / x["mih"],
                ]
                for x in results
            ],
        )
    )
    print("\nBuild, load and memory (worker bytes per hash = uint64 column + MIH tables, numpy only).")
    print(
        table(
            [
                "data",
                "N",
                "r",
                "load_arrays s",
                "MIH build s",
                "faiss MH add s",
                "worker B/hash",
                "faiss MH B/hash",
            ],
            [
                [x["kind"], x["n"], x["r"], x["load"], x["build"], x["mh_build"], x["worker_b"], x["mh_b"]]
                for x in results
            ],
        )
    )
    if args.redis_size:
        red = redis_memory(args.redis_size)
        if red is None:
            print("\nRedis: no redis-server on PATH, skipped.")
        else:
            print(f"\nRedis ({args.redis_size:,} products, ids like p000000001, one hash of 8-byte values):")
            print(
                table(
                    ["bytes/product in Redis", "HGETALL s", "decode + load_arrays s"],
                    [[red["bytes"], red["hgetall"], red["local"]]],
                )
            )


if __name__ == "__main__":
    main()
