"""Ingest throughput: a local HTTP server on 127.0.0.1 serves 800x1000 JPEGs with 100 ms of added
latency per response (a CDN far away); real Celery ingest workers download, decode, describe and
write them into a private Redis. Images/s with 1 and 2 worker processes and rising concurrency.

    python benchmarks/bench_ingest.py              # 600 images per configuration
    python benchmarks/bench_ingest.py --images 200 --quick
    NEARDUP_DECODE=exact python benchmarks/bench_ingest.py      # the other decode mode
    python benchmarks/bench_ingest.py --configs 2x16,3x16,4x8   # processes x concurrency

Peer in the same run: the original system's loop (download one image, imagehash.dhash it, next),
timed on a few images from the same server.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import requests
from _common import machine, photo_jpeg, table
from _stack import BenchStack

from common.signals import signal_set
from producer import jobs

LATENCY = 0.100


def serve(port_queue: multiprocessing.Queue, n_distinct: int, latency: float) -> None:
    """A slow image host in its own process: /img/<k>.jpg -> one of n_distinct photos."""
    rng = np.random.default_rng(5)
    photos = [photo_jpeg(rng, 800, 1000) for _ in range(n_distinct)]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            time.sleep(latency)
            k = int(self.path.rsplit("/", 1)[-1].split(".")[0])
            body = photos[k % len(photos)]
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 512
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_queue.put(server.server_address[1])
    server.serve_forever()


def original_rate(base: str, n: int = 8) -> float:
    """The replaced system: one download, then imagehash.dhash, then the next."""
    import imagehash
    from PIL import Image

    t0 = time.perf_counter()
    for k in range(n):
        data = requests.get(f"{base}/img/{k}.jpg", timeout=10).content
        imagehash.dhash(Image.open(io.BytesIO(data)))
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--quick", action="store_true", help="fewer configurations")
    ap.add_argument("--configs", help="processes x concurrency, comma-separated, e.g. 2x16,4x8")
    args = ap.parse_args()
    print(machine())
    print(f"decode: {signal_set.from_env().decode} (NEARDUP_DECODE)")
    ctx = multiprocessing.get_context("spawn")
    ports: multiprocessing.Queue = ctx.Queue()
    server = ctx.Process(target=serve, args=(ports, 97, LATENCY), daemon=True)
    server.start()
    base = f"http://127.0.0.1:{ports.get(timeout=60)}"
    peer = original_rate(base)
    configs = [(1, 8), (1, 32), (2, 16), (2, 32), (4, 16), (6, 16)] if not args.quick else [(2, 16), (4, 16)]
    if args.configs:
        configs = [tuple(int(v) for v in c.split("x")) for c in args.configs.split(",")]
    rows = []
    # Workers describe in this process's mode, so the index and its signal list agree.
    stack_settings = {"allow_private_urls": True, "fetch_retries": 1, "ingest_chunk": 16}
    with BenchStack(**stack_settings, decode=signal_set.from_env().decode) as stack:
        for procs, conc in configs:
            stack.start_workers(("ingest",), procs, fetch_concurrency=conc)
            stack.r.flushdb()
            items = [(f"{2_000_000_000 + k}", f"{base}/img/{k}.jpg") for k in range(args.images)]
            t0 = time.perf_counter()
            job, sent, _ = jobs.enqueue_ingest(stack.app, stack.store, items, chunk=16)
            state = jobs.wait(stack.r, job, sent, "ingest", lambda: True, progress=False, timeout=900)
            rate = args.images / (time.perf_counter() - t0)
            rows.append(
                [
                    signal_set.from_env().decode,
                    procs,
                    conc,
                    args.images,
                    state.failed,
                    rate,
                    peer,
                    rate / peer,
                ]
            )
            print(table(HEADERS, rows[-1:]), flush=True)
            stack.stop_workers()
    server.terminate()
    print()
    print(table(HEADERS, rows))
    print(f"# images: 800x1000 JPEGs served from 127.0.0.1 with {LATENCY * 1000:.0f} ms added per response;")
    print("# processes: prefork children of one ingest worker; concurrency: parallel downloads per task;")
    print("# original: download then imagehash.dhash, one image at a time (the replaced system's loop).")


HEADERS = [
    "decode",
    "processes",
    "concurrency",
    "images",
    "failed",
    "images/s",
    "original img/s",
    "× original",
]

if __name__ == "__main__":
    main()
