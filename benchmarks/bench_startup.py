"""Embedded stack start-up: where the seconds go before the first task runs.

Phases, each from the start of `LocalStack.__enter__`: redis-server answering, workers answering a
ping (the readiness wait), and the first query answered (a real task through the broker). Prints the
median of a few rounds. Run: `python benchmarks/bench_startup.py [--rounds N] [--workers N] [--quick]`.
For a fair before/after on a busy machine, interleave two trees with farm-bench (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import _common  # noqa: F401  (puts the project on sys.path)

from common.config.settings import Settings
from producer import jobs
from producer.connection import celery_app, redis_client
from producer.local import LocalStack

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "queries"


def one_round(workers: int) -> dict[str, float]:
    data_dir = Path(tempfile.mkdtemp(prefix="neardup-startup-"))
    settings = replace(Settings.from_env({}), data_dir=data_dir, workers=workers)
    marks: dict[str, float] = {}
    t0 = time.monotonic()
    stack = LocalStack(settings, extra_roots=[SAMPLE])
    with stack:
        marks["ready"] = time.monotonic()
        marks.update({f"{k}_up": t0 + v for k, v in getattr(stack, "timings", {}).items()})
        app = celery_app(stack.settings)
        r = redis_client(stack.settings)
        query = sorted(SAMPLE.iterdir())[0]
        job = jobs.enqueue_queries(app, r, [{"key": "q", "path": str(query)}])
        jobs.wait(r, job, 1, "query", lambda: True, progress=False, timeout=60)
        marks["first_task"] = time.monotonic()
        job = jobs.enqueue_queries(app, r, [{"key": "q", "path": str(query)}])
        jobs.wait(r, job, 1, "query", lambda: True, progress=False, timeout=60)
        marks["second_task"] = time.monotonic()
        app.close()
    marks["stopped"] = time.monotonic()
    return dict(sorted(((k, v - t0) for k, v in marks.items()), key=lambda kv: kv[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rounds_pos", nargs="?", type=int, help=argparse.SUPPRESS)
    parser.add_argument("workers_pos", nargs="?", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (prefork children)")
    parser.add_argument("--quick", action="store_true", help="one round")
    args = parser.parse_args()
    rounds = 1 if args.quick else (args.rounds_pos or args.rounds)
    workers = args.workers_pos or args.workers
    results = [one_round(workers) for _ in range(rounds)]
    print(f"embedded start-up, {workers} worker processes, median of {rounds} rounds (s from __enter__):")
    for phase in results[0]:
        values = [r[phase] for r in results if phase in r]
        print(
            f"  {phase:<14} {statistics.median(values):6.2f}  (min {min(values):.2f}, max {max(values):.2f})"
        )


if __name__ == "__main__":
    main()
