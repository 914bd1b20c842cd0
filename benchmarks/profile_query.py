"""Where an image query's time goes inside one worker process: ms per query by stage.

    python benchmarks/profile_query.py              # devset: 700 queries against its 400 inventory
    python benchmarks/profile_query.py --queries 200

A private redis-server (free port) holds the index; the inventory is ingested in this process with
common.ingestion, then each query runs through common.querying.run_query exactly as the
query_batch task runs it (path source, the worker's index cache), first without a profiler
(CPU ms per query: what the worker pays) and then under cProfile (cumulative ms per query by part).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from _common import MATCH_PARTS, cpu_profile, machine, mean_median, profile_rows, table

from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
DEVSET = ROOT.parent / "shared" / "devset"

PARTS = [
    "run_query", "  describe_bytes (decode + signals)", "    decode", "    PDQ (dihedral)",
    "    ORB extract", "    thumbnail", "    trim box", "    query-only views", "  fetch (read the file)",
    *MATCH_PARTS, "      blobs (cache)", "      blobs from Redis", "      ORB unpack", "      ORB stage",
    "      ORB + RANSAC", "      photometric",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--queries", type=int, default=700)
    ap.add_argument("--no-cache", action="store_true", help="blobs from Redis every time (no blob cache)")
    args = ap.parse_args()
    if not DEVSET.is_dir():
        raise SystemExit(f"needs the devset at {DEVSET}")
    work = Path(tempfile.mkdtemp(prefix="neardup-profq-"))
    from producer.redis_server import RedisServer

    server = RedisServer(work / "redis", port=free_port(), appendonly=False).start()
    os.environ.update(
        NEARDUP_REDIS_URL=server.url, NEARDUP_FILE_ROOTS=str(DEVSET), NEARDUP_DATA_DIR=str(work)
    )
    try:
        from common import allocator, ingestion
        from common.match.querying import run_query
        from workers import index_cache

        settings, store = index_cache.settings(), index_cache.store()
        store.check_signals()
        inv = sorted((DEVSET / "inventory").glob("*.jpg"))
        items = [(f.stem, str(f)) for f in inv]
        for a in range(0, len(items), 16):
            ingestion.ingest_items(items[a : a + 16], store, settings)
        queries = sorted((DEVSET / "queries").glob("*.jpg"))[: args.queries]
        snap = index_cache.snapshot
        import cv2

        cv2.setNumThreads(1)  # as in the workers (workers/process_init.py), with their allocator
        allocator.tune_once()
        cache = None if args.no_cache else index_cache.blob_cache()
        for q in queries[:10]:  # warm: index load, word index, imports
            run_query({"path": str(q)}, snap, store, settings, cache=cache)
        cpu, elapsed = [], []
        for q in queries:
            c0 = time.process_time()
            res = run_query({"path": str(q)}, snap, store, settings, cache=cache)
            cpu.append((time.process_time() - c0) * 1e3)
            elapsed.append(res.get("elapsed_ms", 0.0))
        print(machine())
        print(
            f"# {len(queries)} devset queries against {len(inv)} indexed; preset {settings.preset}; "
            f"blob cache {'off' if args.no_cache else 'on'}"
        )
        print(
            mean_median(
                "no profiler, per query", [("CPU", cpu), ("elapsed_ms (the result's own)", elapsed)]
            )
        )
        prof = cpu_profile(
            lambda: [run_query({"path": str(q)}, snap, store, settings, cache=cache) for q in queries]
        )
        rows = profile_rows(prof, PARTS, len(queries))
        print()
        print(table(["cProfile (cumulative, CPU)", "calls/query", "ms/query"], rows))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
