"""Where a by-id query's time goes inside one worker process at catalog size (synthetic index).

    python benchmarks/profile_byid.py --size 200000 --queries 2000

The index is filled like bench_e2e.py (BenchStack.fill_synthetic: planted dHashes, random views and
PDQ, empty ORB, one shared thumbnail); queries run through run_query as the query_batch task runs
them, then under cProfile (cumulative CPU ms per query by part).
"""

from __future__ import annotations

import argparse
import os
import pstats
import time

import numpy as np
from _common import MATCH_PARTS, cpu_profile, machine, mean_median, planted_hashes, profile_rows, table
from _stack import BenchStack

PARTS = [
    "run_query", "  parse_request", "  indexed_signatures", "    blobs_of (Redis)", *MATCH_PARTS,
    "      blobs from Redis", "    ranked", "  snapshot sync",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=200_000)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--preset", default="balanced")
    args = ap.parse_args()
    rng = np.random.default_rng(args.size)
    with BenchStack() as stack:
        t0 = time.perf_counter()
        stack.fill_synthetic(planted_hashes(rng, args.size))
        fill = time.perf_counter() - t0
        os.environ["NEARDUP_REDIS_URL"] = stack.redis.url
        from common.match.querying import run_query
        from workers import index_cache

        store, settings = index_cache.store(), index_cache.settings()
        pids = [f"{1_000_000_000 + int(k)}" for k in rng.integers(0, args.size, args.queries)]
        t0 = time.perf_counter()
        for pid in pids[:20]:
            run_query({"product_id": pid, "preset": args.preset}, index_cache.snapshot, store, settings)
        warm = time.perf_counter() - t0
        cpu, inside = [], []
        for pid in pids:
            c0 = time.process_time()
            res = run_query({"product_id": pid, "preset": args.preset}, index_cache.snapshot, store, settings)
            cpu.append((time.process_time() - c0) * 1e3)
            inside.append(res["elapsed_ms"])
        print(machine())
        print(f"# {args.size:,} indexed (fill {fill:.0f} s, first 20 queries incl. index load {warm:.1f} s)")
        print(mean_median("no profiler, per query", [("CPU", cpu), ("elapsed_ms", inside)]))
        prof = cpu_profile(
            lambda: [
                run_query({"product_id": pid, "preset": args.preset}, index_cache.snapshot, store, settings)
                for pid in pids
            ]
        )
        rows = profile_rows(prof, PARTS, len(pids))
        print(table(["cProfile (cumulative, CPU)", "calls/query", "ms/query"], rows))
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
