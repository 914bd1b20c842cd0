"""The CLI as a user runs it, against the plain loop a user would write instead; every ratio in one run.

    python benchmarks/bench_cli.py                    # 2000 noisy 800x1000 JPEGs + the devset queries
    python benchmarks/bench_cli.py --images 400       # a smaller ingest run
    python benchmarks/bench_cli.py --corpus /tmp/c    # keep (and reuse) the generated photos there
    python benchmarks/bench_cli.py --skip-query       # ingest only

ingest: `neardup ingest DIR -q` in a subprocess with a fresh NEARDUP_DATA_DIR (embedded stack,
start-up and shut-down included) over N generated 800x1000 JPEGs (quality 90, photo-like content
plus pixel noise, ~210 KB each), against `imagehash.dhash(Image.open(f))` over the same files in
this process (its interpreter start and imports are not counted: generous to the loop). The loop is
timed before and after the CLI and averaged, so a neighbour's load hits both alike.

query: `neardup query DIR -q` (subprocess, start-up included) of the devset's 700 queries against
its 400 inventory photos (ingested first, into the same data dir; not part of the ratio), or of
generated edits when ../shared/devset is absent, against a one-process loop that PDQ-hashes each
query (pdqhash on the decoded RGB photo) and scans the inventory's PDQ hashes with numpy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import machine, photo_jpeg, table

ROOT = Path(__file__).resolve().parent.parent
DEVSET = ROOT.parent / "shared" / "devset"
ID_BASE = 3_000_000_000


def make_corpus(folder: Path, n: int, width: int = 800, height: int = 1000, noise: float = 8.0) -> list[Path]:
    """N photo-like JPEGs <id>.jpg in `folder`, reused when already there (one seed per file)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for k in range(n):
        path = folder / f"{ID_BASE + k}.jpg"
        if not path.exists():
            path.write_bytes(photo_jpeg(np.random.default_rng((2026, k)), width, height, 90, noise=noise))
        files.append(path)
    return files


def neardup(args: list[str], data_dir: Path, log: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one `neardup` command as a user starts it (embedded stack, fresh
    interpreter). CPU: the whole process tree (CLI, redis-server, workers), as each waits for its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEARDUP_")}
    env.update(NEARDUP_DATA_DIR=str(data_dir), **_passed_settings())
    exe = shutil.which("neardup", path=str(Path(sys.executable).parent)) or "neardup"
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    with open(log, "ab") as out:
        rc = subprocess.run([exe, *args], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=data_dir.parent)
    elapsed = time.perf_counter() - t0
    if rc.returncode not in (0, 1):
        raise SystemExit(f"neardup {' '.join(args)} exited {rc.returncode}; see {log}")
    return elapsed, _children_cpu() - cpu0


def _children_cpu() -> float:
    import resource

    _reap_orphans()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _become_subreaper() -> None:
    """Descendants orphaned by the CLI become this process's children (Linux PR_SET_CHILD_SUBREAPER).

    RUSAGE_CHILDREN only counts descendants whose parents waited for them: the Celery pool children
    that the CLI's process-group SIGKILL ends after their master exited were never waited for, so
    their CPU (nearly all of an ingest's) went uncounted. Reparented here, they are reaped and counted."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_child_subreaper = 36
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0) != 0:
        print("# warning: not a subreaper: CPU of orphaned worker processes is not counted")


def _reap_orphans(timeout: float = 10.0) -> None:
    """Wait for every child left (orphans reparented here), for up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)


def _passed_settings() -> dict[str, str]:
    """NEARDUP_* settings given to this benchmark that shape the CLI's run (workers, chunk...)."""
    wanted = ("NEARDUP_WORKERS", "NEARDUP_INGEST_CHUNK", "NEARDUP_FETCH_CONCURRENCY", "NEARDUP_DECODE")
    return {k: os.environ[k] for k in wanted if k in os.environ}


def imagehash_loop(files: list[Path]) -> float:
    import imagehash
    from PIL import Image

    t0, c0 = time.perf_counter(), time.process_time()
    for f in files:
        imagehash.dhash(Image.open(f))
    return time.perf_counter() - t0, time.process_time() - c0


def _pdq_bits(path: Path) -> np.ndarray:
    import pdqhash
    from PIL import Image

    bits, _quality = pdqhash.compute(np.asarray(Image.open(path).convert("RGB")))
    return np.packbits(bits.astype(np.uint8))


def pdq_loop(queries: list[Path], inventory: np.ndarray) -> tuple[float, float]:
    """Wall and CPU seconds: PDQ-hash every query, scan the inventory hashes (distance <= 31, the usual)."""
    t0, c0 = time.perf_counter(), time.process_time()
    for q in queries:
        d = np.bitwise_count(inventory ^ _pdq_bits(q)).sum(axis=1)
        np.flatnonzero(d <= 31)
    return time.perf_counter() - t0, time.process_time() - c0


def generated_query_set(folder: Path) -> tuple[Path, Path]:
    """400 inventory photos (360x540) and 700 queries (copies, crops, brightness, noise, distractors)."""
    from io import BytesIO

    from PIL import Image, ImageEnhance

    inv, qdir = folder / "inventory", folder / "queries"
    inv.mkdir(parents=True, exist_ok=True)
    qdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    photos = [photo_jpeg(rng, 360, 540, 90, noise=3.0) for _ in range(400)]
    for k, p in enumerate(photos):
        (inv / f"{ID_BASE + k}.jpg").write_bytes(p)
    for j in range(700):
        kind = j % 5
        if kind == 4:
            (qdir / f"q_{j:05d}.jpg").write_bytes(photo_jpeg(rng, 360, 540, 90, noise=3.0))
            continue
        img = Image.open(BytesIO(photos[int(rng.integers(0, 400))])).convert("RGB")
        if kind == 1:
            img = img.crop((20, 30, 340, 500))
        elif kind == 2:
            img = ImageEnhance.Brightness(img).enhance(1.2)
        elif kind == 3:
            arr = np.asarray(img).astype(np.int16) + rng.normal(0, 6, (540, 360, 3)).astype(np.int16)
            img = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
        img.save(qdir / f"q_{j:05d}.jpg", "JPEG", quality=85)
    return inv, qdir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000, help="ingest corpus size")
    ap.add_argument("--corpus", type=Path, help="folder for the generated photos (kept; reused next time)")
    ap.add_argument("--skip-ingest", action="store_true")
    ap.add_argument("--skip-query", action="store_true")
    args = ap.parse_args()
    _become_subreaper()
    print(machine())
    print(f"# settings passed to the CLI: {_passed_settings() or 'defaults'}")
    work = Path(tempfile.mkdtemp(prefix="neardup-bench-cli-"))
    rows: list[list] = []
    notes: list[str] = []
    try:
        if not args.skip_ingest:
            corpus = args.corpus or work / "corpus"
            t0 = time.perf_counter()
            files = make_corpus(corpus, args.images)
            sizes = [f.stat().st_size for f in files]
            print(
                f"# corpus: {len(files)} JPEGs 800x1000 q90, mean {np.mean(sizes) / 1e3:.0f} KB "
                f"(ready in {time.perf_counter() - t0:.0f} s) in {corpus}",
                flush=True,
            )
            if len(files) != len(list(corpus.glob("*.jpg"))):
                raise SystemExit(f"{corpus} holds other files: give an empty or benchmark-made folder")
            imagehash_loop(files[:20])  # warm the page cache and imports alike for both
            one = work / "one"
            one.mkdir()
            shutil.copy(files[0], one / files[0].name)
            start_wall, start_cpu = neardup(["ingest", str(one), "-q"], work / "data-one", work / "one.log")
            before = imagehash_loop(files)
            cli, cpu = neardup(["ingest", str(corpus), "-q"], work / "data-ingest", work / "ingest.log")
            after = imagehash_loop(files)
            rows.append(_row("ingest", len(files), cli, cpu, before, after))
            marginal = (cpu - start_cpu) / (len(files) - 1) * 1e3 if len(files) > 1 else 0.0
            notes.append(
                f"# ingest: a 1-image run (start-up + shut-down) takes {start_wall:.1f} s wall, "
                f"{start_cpu:.1f} s CPU; marginal CPU per image {marginal:.1f} ms (vs profile_describe.py)"
            )
            print(table(HEADERS, rows[-1:]), flush=True)
        if not args.skip_query:
            if DEVSET.is_dir():
                inv, qdir, source = DEVSET / "inventory", DEVSET / "queries", "devset"
            else:
                (inv, qdir), source = generated_query_set(work / "qset"), "generated"
            inv_files, queries = sorted(inv.glob("*.jpg")), sorted(qdir.glob("*.jpg"))
            data = work / "data-query"
            t_inv, _ = neardup(["ingest", str(inv), "-q"], data, work / "query.log")
            print(
                f"# query set: {source}, {len(queries)} queries, {len(inv_files)} inventory "
                f"(ingested in {t_inv:.1f} s, not in the ratio)",
                flush=True,
            )
            inventory = np.stack([_pdq_bits(f) for f in inv_files])  # the loop's index, prepared untimed
            pdq_loop(queries[:20], inventory)
            before = pdq_loop(queries, inventory)
            out = work / "near_duplicate_image.json"
            cli, cpu = neardup(["query", str(qdir), "-q", "-o", str(out)], data, work / "query.log")
            after = pdq_loop(queries, inventory)
            rows.append(_row("query", len(queries), cli, cpu, before, after))
            print(table(HEADERS, rows[-1:]), flush=True)
            if source == "devset":
                _score(out)
        print()
        print(table(HEADERS, rows))
        print("\n".join(notes))
        print("# neardup: the CLI subprocess with a fresh embedded stack (start-up included);")
        print("# loop: imagehash.dhash(Image.open(f)) for ingest, PDQ hash + numpy scan for query;")
        print("# one process each. CPU ms/item: the CLI's whole process tree (redis and workers included).")
        print("# CPU ratio: cores x loop CPU / neardup CPU, the ratio with every core ours (quiet machine);")
        print("# the wall ratio is what this run got, on a machine other jobs may share.")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _row(
    command: str, n: int, wall: float, cpu: float, before: tuple[float, float], after: tuple[float, float]
) -> list:
    peer_wall, peer_cpu = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
    cores = os.cpu_count() or 1
    return [
        command,
        n,
        wall,
        n / wall,
        n / peer_wall,
        peer_wall / wall,
        cpu / n * 1e3,
        peer_cpu / n * 1e3,
        cores * peer_cpu / cpu,
    ]


def _score(results: Path) -> None:
    """The devset's own scorer on the CLI's answers: speed must not come from answering less."""
    got = subprocess.run(
        [sys.executable, str(DEVSET / "score.py"), str(results)], capture_output=True, text=True
    )
    lines = [ln for ln in got.stdout.splitlines() if ln.strip()][:3]
    print("# devset score of the CLI's answers: " + " | ".join(lines))
    json.loads(results.read_text())  # the output is well-formed


HEADERS = ["command", "items", "neardup s", "neardup /s", "loop /s", "ratio", "CPU ms/item", "loop CPU ms",
           "CPU ratio"]  # fmt: skip

if __name__ == "__main__":
    main()
