"""Churn: N adds, N/2 removes, N/2 adds against N adds alone — Redis memory, query worker memory and
index load time, on a real redis-server and a real Celery query worker (synthetic rows, as
bench_e2e.py writes them, with the thumbnail cut short so a million rows fit a shared machine).

    python benchmarks/bench_churn.py            # N = 1M (a few minutes)
    python benchmarks/bench_churn.py --quick    # N = 100k, a smoke run

Removed products free their row and new ones take it, so after the churn the index has the same
row slots as before; a worker that follows the churn from the change stream (one query after each
chunk of 5000 changes) never reloads. Peer in the same run: the same index without churn.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from _common import machine, planted_hashes, random_hashes, table
from _stack import BenchStack, timed_load

from common.index import keys, orb_words
from common.match import pipeline, presets
from common.signals import signal_set
from common.signals.signatures import pack64

CHUNK = 5000
HEADERS = ["index", "products", "row slots", "row patch", "Redis used MB", "Redis RSS MB", "bulk load s",
           "load+warm s", "worker RSS MB", "worker"]  # fmt: skip


def pid(k: int) -> str:
    return f"{1_000_000_000 + k}"


def redis_mb(stack: BenchStack) -> tuple[float, float]:
    info = stack.r.info("memory")
    return info["used_memory"] / 2**20, info["used_memory_rss"] / 2**20


def load_seconds(stack: BenchStack, repeat: int = 3) -> tuple[float, float]:
    """(bulk read + numpy columns, best of `repeat`; the same plus what a worker warms after a load:
    the dHash scan tables and the ORB word index), as workers.index_cache does it."""
    snap, best = timed_load(stack, repeat)
    t0 = time.perf_counter()
    blank = {key: pack64(0) for key in signal_set.from_env().scan}
    pipeline.find_matches(blank, snap, presets.resolve("balanced"))
    orb_words.index_for(snap).top(np.zeros(1, np.uint16), 1)
    return best, best + time.perf_counter() - t0


def worker_rss_mb(stack: BenchStack) -> float:
    """Resident memory of the query worker's pool child (it holds the index), from /proc."""
    main = stack.workers[-1].proc.pid
    children = Path(f"/proc/{main}/task/{main}/children").read_text().split()
    total = 0
    for child in children:
        for line in Path(f"/proc/{child}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total / 2**20


def query(stack: BenchStack, product_id: str) -> dict:
    return stack.app.send_task("neardup.query", kwargs={"product_id": product_id, "preset": "balanced"}).get(
        timeout=600
    )


def row(stack: BenchStack, name: str, worker: str) -> list:
    used, rss = redis_mb(stack)
    bulk_s, warm_s = load_seconds(stack)
    slots = int(stack.r.get(keys.ROW_COUNT) or stack.store.size())
    patch = stack.r.hlen(keys.ROW_PATCH)
    return [name, stack.store.size(), slots, patch, used, rss, bulk_s, warm_s, worker_rss_mb(stack), worker]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="products added first (N)")
    ap.add_argument("--thumb-side", type=int, default=8, help="side of the shared synthetic thumbnail (px)")
    ap.add_argument("--quick", action="store_true", help="N = 100k: a smoke run")
    args = ap.parse_args()
    n = 100_000 if args.quick else args.n
    half = n // 2
    print(machine())
    rng = np.random.default_rng(n)
    rows = []
    with BenchStack() as stack:
        t0 = time.perf_counter()
        stack.fill_synthetic(planted_hashes(rng, n), chunk=CHUNK, thumb_side=args.thumb_side)
        fill_s = time.perf_counter() - t0
        stack.start_workers(("query",), 1)
        assert query(stack, pid(0))["ok"]  # the worker loads the index
        rows.append(row(stack, f"{n:,} adds", "fresh"))
        print(table(HEADERS, rows[-1:]), flush=True)

        # Churn: remove half at random, then add as many new products, one chunk at a time; the worker
        # answers a query after every chunk, catching up from the change stream.
        gone = rng.choice(n, half, replace=False)
        survivor = pid(int(np.setdiff1d(np.arange(min(n, 1000)), gone)[0]))
        catch_up_ms, remove_s, add_s = [], 0.0, 0.0
        for a in range(0, half, CHUNK):
            t = time.perf_counter()
            stack.store.remove([pid(int(k)) for k in gone[a : a + CHUNK]])
            remove_s += time.perf_counter() - t
            t = time.perf_counter()
            assert query(stack, survivor)["ok"]
            catch_up_ms.append((time.perf_counter() - t) * 1000)
        fresh = random_hashes(rng, half)
        for a in range(0, half, CHUNK):
            t = time.perf_counter()
            stack.fill_synthetic(
                fresh[a : a + CHUNK], chunk=CHUNK, first_id=n + a, thumb_side=args.thumb_side
            )
            add_s += time.perf_counter() - t
            t = time.perf_counter()
            res = query(stack, survivor)
            catch_up_ms.append((time.perf_counter() - t) * 1000)
        # the worker that followed the churn answers from the same index as Redis holds, never a removed one
        assert (
            res["ok"]
            and res["index_size"] == stack.store.size()
            and res["index_version"] == stack.store.version()
        )
        assert query(stack, pid(int(gone[0])))["error"]["reason"] == "not_indexed"
        rows.append(row(stack, f"+ {half:,} removes + {half:,} adds", "followed the churn"))
        print(table(HEADERS, rows[-1:]), flush=True)
        stack.stop_workers()
        stack.start_workers(("query",), 1)
        assert query(stack, survivor)["ok"]
        rows.append(row(stack, f"+ {half:,} removes + {half:,} adds", "fresh"))
    print()
    print(table(HEADERS, rows))
    base, churned = rows[0], rows[2]
    ratio = [churned[k] / base[k] for k in (2, 4, 5, 6, 7, 8)]
    print(
        f"# churned / adds alone: row slots x{ratio[0]:.2f}, Redis used x{ratio[1]:.2f}, "
        f"Redis RSS x{ratio[2]:.2f}, bulk load x{ratio[3]:.2f}, load+warm x{ratio[4]:.2f}, "
        f"worker RSS x{ratio[5]:.2f} (fresh) / x{rows[1][8] / base[8]:.2f} (followed)"
    )
    print(
        f"# fill {n:,}: {fill_s:.1f} s; remove {half:,}: {remove_s:.1f} s ({half / remove_s:,.0f}/s, "
        f"chunks of {CHUNK}); add {half:,} into freed rows: {add_s:.1f} s"
    )
    print(
        f"# query after each chunk of {CHUNK} changes (worker catch-up + query, through the broker): "
        f"median {statistics.median(catch_up_ms):.0f} ms, max {max(catch_up_ms):.0f} ms"
    )
    print("# without row reuse the columns, ids and worker arrays would hold 1.5x the row slots")


if __name__ == "__main__":
    main()
