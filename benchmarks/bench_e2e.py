"""End to end through the broker: index load in a fresh worker, query by productId latency
(p50/p99), and batch throughput, at catalog sizes, with real Redis and real Celery workers.

    python benchmarks/bench_e2e.py                 # 1M indexed hashes
    python benchmarks/bench_e2e.py --sizes 100000  # quicker

Peer in the same run: the original system's per-row Python loop over the same hashes (timed on a
slice and extrapolated to N), which it ran for every query.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from _common import machine, parse_sizes, planted_hashes, table
from _stack import BenchStack, timed_load

from common.config import tasks
from producer import jobs

HEADERS = ["N", "preset", "fill s", "index load s", "p50 ms", "p99 ms", "in-worker ms", "batch q/s",
           "orig loop ms", "p50 vs loop ×"]  # fmt: skip


def original_loop_seconds(hashes: np.ndarray, query: int, sample: int = 50_000) -> float:
    """The replaced system: a Python loop over every row, per query (timed on `sample` rows)."""
    rows = [int(h) for h in hashes[:sample]]
    t0 = time.perf_counter()
    found = []
    for k, h in enumerate(rows):
        d = bin(h ^ query).count("1")
        if (64 - d) * 100 / 64 >= 90:
            found.append((k, d))
    return (time.perf_counter() - t0) * len(hashes) / sample


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="1000000")
    ap.add_argument("--latency-queries", type=int, default=500)
    ap.add_argument("--batch-queries", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2, help="query worker processes")
    ap.add_argument("--presets", default="original,balanced", help="comma-separated presets to time")
    ap.add_argument("--quick", action="store_true", help="20k hashes, few queries: a smoke run")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.latency_queries, args.batch_queries = "20000", 50, 500
    print(machine())
    rows = []
    for n in parse_sizes(args.sizes):
        rng = np.random.default_rng(n)
        hashes = planted_hashes(rng, n)
        with BenchStack() as stack:
            t0 = time.perf_counter()
            stack.fill_synthetic(hashes)
            fill = time.perf_counter() - t0
            _, load = timed_load(stack)
            stack.start_workers(("query",), args.workers)
            loop = original_loop_seconds(hashes, int(hashes[0]))
            for preset in args.presets.split(","):
                row = [n, preset, fill, load, *time_queries(stack, rng, n, preset, args), loop * 1000]
                row.append(loop * 1000 / row[4])  # p50 against the loop
                rows.append(row)
                print(table(HEADERS, [row]), flush=True)
    print()
    print(table(HEADERS, rows))
    print("# p50/p99: send_task + result, one query at a time, query by productId; in-worker: the task's own")
    print("# elapsed_ms (signatures, scans, verification); batch: neardup.query_batch, 32 queries a message;")
    print("# orig loop: the replaced system's per-row Python loop, timed on 50k rows and extrapolated to N.")


def time_queries(
    stack: BenchStack, rng: np.random.Generator, n: int, preset: str, args: argparse.Namespace
) -> list[float]:
    """[p50 ms, p99 ms, median in-worker ms, batch queries/s] for one preset."""
    pids = [f"{1_000_000_000 + int(k)}" for k in rng.integers(0, n, args.latency_queries)]
    # warm every child's index copy, then time one query at a time, as a service would
    for pid in pids[: 4 * args.workers]:
        stack.app.send_task(tasks.QUERY, kwargs={"product_id": pid, "preset": preset}).get(timeout=300)
    lat, inside = [], []
    for pid in pids:
        t = time.perf_counter()
        res = stack.app.send_task(tasks.QUERY, kwargs={"product_id": pid, "preset": preset}).get(timeout=30)
        lat.append((time.perf_counter() - t) * 1000)
        assert res["ok"], res
        inside.append(res["elapsed_ms"])
    lat.sort()
    keys = {f"{1_000_000_000 + int(k)}" for k in rng.integers(0, n, args.batch_queries)}
    batch = [{"key": k, "product_id": k, "preset": preset} for k in sorted(keys)]
    t = time.perf_counter()
    job = jobs.enqueue_queries(stack.app, stack.r, batch)
    jobs.wait(stack.r, job, len(batch), "query", lambda: True, progress=False, timeout=900)
    batch_s = time.perf_counter() - t
    assert all(r["ok"] for r in jobs.gather(stack.r, job).values())
    return [
        statistics.median(lat),
        lat[int(0.99 * (len(lat) - 1))],
        statistics.median(inside),
        len(batch) / batch_s,
    ]


if __name__ == "__main__":
    main()
