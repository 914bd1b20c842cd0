"""Accuracy benchmark: precision, recall, F1 per criterion and edit, for every preset and the original rule.

In-process (describe inventory -> Snapshot -> find_matches per query), on ../shared/devset when
present and on a generated labelled set:

    python benchmarks/bench_accuracy.py                   # devset (if present) + generated 60
    python benchmarks/bench_accuracy.py --generated 300 --no-devset
    python benchmarks/bench_accuracy.py --scale 1000000   # also: per-query cost at 1M synthetic rows
    python benchmarks/bench_accuracy.py --system          # the real system: `neardup run` per preset
    python benchmarks/bench_accuracy.py --seller-seeds 1,2   # + recall per seller-edit family
    python benchmarks/bench_accuracy.py --upscale 2       # devset x2 (720x1080, JPEG q92, temp dir)
    NEARDUP_DECODE=draft python benchmarks/bench_accuracy.py   # the reduced-decode signal set

`--system` runs the CLI end to end (embedded Redis + Celery workers, one data dir so the inventory
is ingested once and re-used by later presets) and scores its near_duplicate_image.json with the
same code; wall times include worker start-up, and ingest for the first preset.

`score_predictions(labels, preds)` takes {query file: [product ids]} and returns the scores, so a
mode that gets predictions from the real workers only has to produce that mapping.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import Tally  # noqa: E402

from common.index import orb_words  # noqa: E402
from common.index.snapshot import Snapshot  # noqa: E402
from common.match import describe, pipeline, presets  # noqa: E402
from common.signals import (
    plugins,  # noqa: E402
    signal_set,
)
from common.signals.plugins import GarmentColour  # noqa: E402
from tests.support import samplegen  # noqa: E402

DEVSET = ROOT.parent / "shared" / "devset"
ORDER = ("original", "strict", "balanced", "loose")


def _load_scorer(folder: Path) -> Callable[[dict, dict], dict] | None:
    path = folder / "score.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("devset_score", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.score


def score_predictions(labels: dict, preds: dict[str, list[str]], scorer: Callable | None = None) -> dict:
    """The devset's score.py when given, else the same logic reimplemented here."""
    if scorer is not None:
        return scorer(labels, preds)
    inventory = set(labels["inventory"])
    tally = Tally()
    per_cat: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    per_op: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name, q in labels["queries"].items():
        hits = tally.add(set(preds.get(name, ())) & inventory, q)
        n_truth, cat = len(set(q["matches"])), q["category"]
        per_cat[cat][0] += hits
        per_cat[cat][1] += n_truth
        if cat in ("2", "4"):
            for op in {part.split()[0] for part in q["transform"].split("; ")}:
                per_op[op][0] += hits
                per_op[op][1] += n_truth
    return {
        **tally.figures(),
        "true_positives": tally.tp,
        "false_positives": tally.fp,
        "recall_by_criterion": {c: f / e for c, (f, e) in sorted(per_cat.items()) if e},
        "recall_by_edit": {op: f / e for op, (f, e) in sorted(per_op.items()) if e},
        "distractor_false_match_rate": tally.rate("distractor"),
        "variant_flag_rate": tally.rate("variant"),
    }


def _describe_file(path: str, query: bool = False) -> dict[str, bytes]:
    # The workers' own decode + describe, in the mode NEARDUP_DECODE selects (exact or draft).
    return describe.describe_bytes(Path(path).read_bytes(), 10**9, signal_set.from_env(), query=query)


def _describe_query(path: str) -> dict[str, bytes]:
    return _describe_file(path, query=True)


def _upscale_file(job: tuple[str, str, float]) -> None:
    src, dst, factor = job
    with Image.open(src) as im:
        im = im.convert("RGB")
        size = (round(im.width * factor), round(im.height * factor))
        im.resize(size, Image.Resampling.LANCZOS).save(dst, "JPEG", quality=92)


def upscaled_copy(folder: Path, factor: float, dest: Path, workers: int) -> Path:
    """The labelled set with every inventory photo and query rescaled by `factor` (LANCZOS, JPEG q92),
    written under `dest` (a temp dir: devset images never go into the repository)."""
    jobs = []
    for sub in ("inventory", "queries"):
        (dest / sub).mkdir(parents=True)
        jobs += [(str(p), str(dest / sub / p.name), factor) for p in sorted((folder / sub).iterdir())]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_upscale_file, jobs, chunksize=16))
    for name in ("labels.json", "score.py"):
        if (folder / name).is_file():
            (dest / name).write_bytes((folder / name).read_bytes())
    return dest


def describe_all(paths: list[Path], workers: int, query: bool = False) -> list[dict[str, bytes]]:
    with ProcessPoolExecutor(workers) as pool:
        fn = _describe_query if query else _describe_file
        return list(pool.map(fn, [str(p) for p in paths], chunksize=8))


class MemoryIndex:
    """Snapshot + blob dict: what the query worker has (scan columns) and fetches (blobs)."""

    def __init__(self, ids: list[str], sigs: list[dict[str, bytes]]) -> None:
        self.snap = Snapshot(signal_set.from_env().scan)
        self.snap.load(ids, {k: [s[k] for s in sigs] for k in signal_set.from_env().scan}, version=1)
        self.store = {
            k: dict(zip(ids, (s[k] for s in sigs), strict=True)) for k in signal_set.from_env().blobs
        }
        self.fetched = 0

    def blobs(self, key: str, ids: list[str]) -> list[bytes | None]:
        self.fetched += len(ids)
        return [self.store[key].get(i) for i in ids]


def evaluate(folder: Path, workers: int, title: str) -> dict[str, dict]:
    labels = json.loads((folder / "labels.json").read_text())
    scorer = _load_scorer(folder)
    t0 = time.perf_counter()
    inv = describe_all([folder / "inventory" / f"{p}.jpg" for p in labels["inventory"]], workers)
    names = list(labels["queries"])
    qs = describe_all([folder / "queries" / n for n in names], workers, query=True)
    n_img = len(inv) + len(qs)
    print(
        f"\n== {title}: {len(inv)} products, {len(qs)} queries "
        f"(describe {1000 * (time.perf_counter() - t0) * workers / n_img:.1f} ms/image/core)"
    )
    index = MemoryIndex(labels["inventory"], inv)
    results: dict[str, dict] = {}
    for name in ORDER:
        rule = presets.PRESETS[name]
        index.fetched = 0
        preds: dict[str, list[str]] = {}
        stages: dict[str, int] = defaultdict(int)
        t = time.perf_counter()
        for qname, q in zip(names, qs, strict=True):
            found = pipeline.find_matches(q, index.snap, rule, blobs=index.blobs)
            preds[qname] = [m.product_id for m in found]
            for m in found:
                stages[m.stage] += 1
        ms = 1000 * (time.perf_counter() - t) / len(qs)
        r = score_predictions(labels, preds, scorer)
        r.update(ms_per_query=ms, blobs_per_query=index.fetched / len(qs), stages=dict(stages))
        results[name] = r
    _print_table(results)
    _plugin_report(labels, names, qs, index)
    return results


def _print_table(results: dict[str, dict]) -> None:
    system = any("wall_s" in r for r in results.values())
    cols = ("P", "R", "F1", "c1", "c2", "c4", "distr", "var", "ms/q") + (("wall s",) if system else ())
    print(f"{'preset':9s} " + " ".join(f"{c:>6s}" for c in cols))
    for name, r in results.items():
        c = r["recall_by_criterion"]
        print(
            f"{name:9s} {r['precision']:6.3f} {r['recall']:6.3f} {r['f1']:6.3f} {c.get('1', 0):6.3f} "
            f"{c.get('2', 0):6.3f} {c.get('4', 0):6.3f} {r['distractor_false_match_rate'] or 0:6.3f} "
            f"{r['variant_flag_rate'] or 0:6.3f} {r['ms_per_query']:6.2f}"
            + (f" {r['wall_s']:6.1f}" if system else "")
        )
    for name, r in results.items():
        edits = ", ".join(f"{k} {v:.2f}" for k, v in r["recall_by_edit"].items())
        print(f"  {name:9s} by edit: {edits}")
        if "stages" in r:
            print(f"  {name:9s} stages: {r['stages']}  blobs fetched/query: {r['blobs_per_query']:.1f}")


def evaluate_system(folder: Path, title: str, timeout: float = 1800) -> dict[str, dict]:
    """The real system per preset: `neardup run <inventory> --queries <queries>` in embedded mode.

    One private data dir for all presets, so the first run ingests the inventory and the later ones
    find it indexed (ms/q of the first preset therefore includes ingest)."""
    labels = json.loads((folder / "labels.json").read_text())
    scorer = _load_scorer(folder)
    n_queries = len(labels["queries"])
    n_products = len(labels["inventory"])
    print(f"\n== {title} [system: neardup run, embedded]: {n_products} products, {n_queries} queries")
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="neardup-acc-") as tmp:
        env = {k: v for k, v in os.environ.items() if k != "NEARDUP_REDIS_URL"}
        env["NEARDUP_DATA_DIR"] = str(Path(tmp) / "data")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        for name in ORDER:
            out = Path(tmp) / f"{name}.json"
            cmd = [sys.executable, "-m", "producer.cli", "run", str(folder / "inventory")]
            cmd += ["--queries", str(folder / "queries"), "--preset", name, "-o", str(out), "--quiet"]
            t = time.perf_counter()
            done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
            wall = time.perf_counter() - t
            if not out.is_file():
                raise RuntimeError(f"neardup run ({name}) wrote no output:\n{done.stdout}\n{done.stderr}")
            raw = json.loads(out.read_text())
            # Keys are the query paths as given; the labels name files.
            preds = {Path(k).name: [pid for pid, _ in v] for k, v in raw.items()}
            r = score_predictions(labels, preds, scorer)
            r.update(ms_per_query=1000 * wall / n_queries, wall_s=wall, exit_code=done.returncode)
            results[name] = r
    _print_table(results)
    return results


def _plugin_report(labels: dict, names: list[str], qs: list[dict], index: MemoryIndex) -> None:
    """Criterion-3 proxy: does the garment-colour plugin rank a colour variant's sibling high?"""
    plugin = GarmentColour()
    key = plugins.key(plugin)
    if key not in index.store:
        return  # plugins are opt-in (NEARDUP_PLUGINS): nothing stored to report on
    store = index.store[key]
    ids = labels["inventory"]
    ranks, sib_scores = [], []
    for qname, q in zip(names, qs, strict=True):
        lab = labels["queries"][qname]
        if lab["category"] != "variant":
            continue
        scores = np.array([plugin.compare(q[key], store[p]) for p in ids])
        sib = ids.index(lab["ignore"][0])
        ranks.append(int((scores > scores[sib]).sum()))
        sib_scores.append(scores[sib])
    if ranks:
        r = np.array(ranks)
        print(
            f"  plugin {key}: variant sibling rank (0 = best of {len(ids)}): "
            f"median {np.median(r):.0f}, "
            f"top-10 {np.mean(r < 10):.2f}; sibling score median {np.median(sib_scores):.2f}"
        )


def measure_scale(n_rows: int, folder: Path, workers: int, n_queries: int = 100) -> None:
    """Per-query cost of find_matches with `n_rows` synthetic random rows plus the real inventory."""
    labels = json.loads((folder / "labels.json").read_text())
    inv = describe_all([folder / "inventory" / f"{p}.jpg" for p in labels["inventory"]], workers)
    names = list(labels["queries"])[:n_queries]
    qs = describe_all([folder / "queries" / n for n in names], workers, query=True)
    rng = np.random.default_rng(0)
    fake_ids = [f"9{i:09d}" for i in range(n_rows)]
    snap = Snapshot(signal_set.from_env().scan)
    cols = {}
    for k in signal_set.from_env().scan:
        real = [s[k] for s in inv]
        fake = rng.integers(0, 2**63, size=n_rows, dtype=np.int64).astype(">u8").tobytes()
        cols[k] = real + [fake[i * 8 : i * 8 + 8] for i in range(n_rows)]
    snap.load(labels["inventory"] + fake_ids, cols, version=1)
    index = MemoryIndex(labels["inventory"], inv)
    # The word index is built by the first query after a bulk load: timed apart, as the worker pays it once.
    t = time.perf_counter()
    orb_words.index_for(snap).scores(np.zeros(1, np.uint16))
    print(f"  scale {len(snap):,} rows: word index built in {time.perf_counter() - t:.2f} s (once per load)")
    for name in ORDER:
        t = time.perf_counter()
        for q in qs:
            pipeline.find_matches(q, snap, presets.PRESETS[name], blobs=index.blobs)
        print(
            f"  scale {len(snap):,} rows, {name:9s}: "
            f"{1000 * (time.perf_counter() - t) / len(qs):.2f} ms/query"
        )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devset", type=Path, default=DEVSET)
    ap.add_argument("--no-devset", action="store_true")
    ap.add_argument("--generated", type=int, default=60, help="products in the generated set (0: skip)")
    ap.add_argument("--per-kind", type=int, default=3)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--scale", type=int, default=0, help="also time queries against this many rows")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write all results here")
    ap.add_argument("--system", action="store_true", help="score the real CLI + workers, not in-process")
    ap.add_argument(
        "--upscale", type=float, default=0, help="devset rescaled by this factor (temp copy), instead"
    )
    ap.add_argument("--set", type=Path, action="append", help="a seller-edits set dir (seller_edits.py)")
    ap.add_argument("--seller-seeds", default="", help="build seller-edits sets with these seeds, e.g. 1,2")
    ap.add_argument("--per-family", type=int, default=40, help="queries per family in --seller-seeds sets")
    ap.add_argument("--seller-generated", type=int, default=100, help="generated tops in those sets")
    args = ap.parse_args(argv)
    mode = "system (neardup run, embedded stack)" if args.system else "in-process (describe + find_matches)"
    print(f"mode: {mode}; decode: {signal_set.from_env().decode} (NEARDUP_DECODE)")

    def run(folder: Path, title: str) -> dict[str, dict]:
        return evaluate_system(folder, title) if args.system else evaluate(folder, args.workers, title)

    out: dict[str, dict] = {}
    if not args.no_devset:
        if (args.devset / "labels.json").is_file() and args.upscale:
            with tempfile.TemporaryDirectory(prefix="neardup-upscaled-") as tmp:
                folder = upscaled_copy(args.devset, args.upscale, Path(tmp), args.workers)
                out["devset"] = run(folder, f"devset {args.devset} upscaled x{args.upscale:g}")
        elif (args.devset / "labels.json").is_file():
            out["devset"] = run(args.devset, f"devset {args.devset}")
        else:
            print(f"devset not found at {args.devset}: skipped")
    if args.generated:
        with tempfile.TemporaryDirectory() as tmp:
            samplegen.generate(tmp, args.generated, args.per_kind, args.seed)
            out["generated"] = run(Path(tmp), f"generated (seed {args.seed})")
    if args.set or args.seller_seeds:
        import _families  # benchmarks/: recall per seller-edit family, held-apart and tune parts

        out["families"] = _families.run(args, MemoryIndex)
    if args.scale:
        folder = args.devset if (args.devset / "labels.json").is_file() else ROOT / "samples"
        measure_scale(args.scale, folder, args.workers)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
