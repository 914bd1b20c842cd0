"""Threshold curves on seller-edit sets: one preset with one Rule field swept, scored on the `tune`
part (where the value is chosen) and the `held` part (reported), in one run.

    python benchmarks/bench_curves.py --seller-seeds 1,2 --preset balanced \\
        --sweep orb_min_inliers=18,20,22,24,26 --sweep photo_min=0.5,0.6,0.7

Each row: precision, recall, the worst family's recall, distractors falsely matched and variants
flagged, per part. Sets are built in a temp dir (benchmarks/seller_edits.py) or given with --set.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import _families  # noqa: E402
import seller_edits  # noqa: E402
from bench_accuracy import DEVSET, MemoryIndex  # noqa: E402

from common.match import pipeline, presets  # noqa: E402


def _load(folder: Path, workers: int) -> tuple[dict, list[str], list[dict], MemoryIndex]:
    labels = json.loads((folder / "labels.json").read_text())
    ids, names = labels["inventory"], list(labels["queries"])
    with ProcessPoolExecutor(workers) as pool:
        inv = list(
            pool.map(_families._describe, [str(folder / "inventory" / f"{p}.jpg") for p in ids], chunksize=8)
        )
        qs = list(
            pool.map(_families._describe_query, [str(folder / "queries" / n) for n in names], chunksize=8)
        )
    return labels, names, [q for q, _ in qs], MemoryIndex(ids, [s for s, _ in inv])


def _value(field: str, text: str) -> object:
    kind = {f.name: f.type for f in fields(presets.Rule)}[field]
    return float(text) if "float" in str(kind) else int(text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", type=Path, action="append", default=[])
    ap.add_argument("--seller-seeds", default="1")
    ap.add_argument("--per-family", type=int, default=40)
    ap.add_argument("--devset", type=Path, default=DEVSET)
    ap.add_argument("--preset", default="balanced")
    ap.add_argument("--sweep", action="append", default=[], help="FIELD=v1,v2,... (a presets.Rule field)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    base = presets.PRESETS[args.preset]
    rules = [("(preset)", base)]
    for spec in args.sweep:
        field, values = spec.split("=", 1)
        rules += [(f"{field}={v}", replace(base, **{field: _value(field, v)})) for v in values.split(",")]

    with tempfile.TemporaryDirectory(prefix="neardup-curves-") as tmp:
        folders = list(args.set)
        for seed in [int(s) for s in args.seller_seeds.split(",") if s]:
            folder = Path(tmp) / f"seed{seed}"
            seller_edits.build(folder, seed, args.per_family, devset=args.devset)
            folders.append(folder)
        loaded = [_load(f, args.workers) for f in folders]
    print(f"preset {args.preset}; sets: {len(loaded)} ({sum(len(n) for _, n, _, _ in loaded)} queries)")
    head = f"{'rule':28s} " + " ".join(
        f"{s}:{c:>5s}" for s in ("tune", "held") for c in ("P", "R", "minF", "distr", "var")
    )
    print(head)
    for label, rule in rules:
        cells = []
        for part in ("tune", "held"):
            preds: dict[str, list[str]] = {}
            labels_all: dict = {"inventory": [], "queries": {}}
            names_all: list[str] = []
            for k, (labels, names, qs, index) in enumerate(loaded):
                for name, q in zip(names, qs, strict=True):
                    if labels["queries"][name]["split"] != part:
                        continue
                    key = f"{k}/{name}"
                    found = pipeline.find_matches(q, index.snap, rule, blobs=index.blobs)
                    preds[key] = [f"{k}/{m.product_id}" for m in found]
                    labels_all["queries"][key] = {
                        **labels["queries"][name],
                        "matches": [f"{k}/{p}" for p in labels["queries"][name]["matches"]],
                        "ignore": [f"{k}/{p}" for p in labels["queries"][name]["ignore"]],
                    }
                    names_all.append(key)
                labels_all["inventory"] += [f"{k}/{p}" for p in labels["inventory"]]
            r = _families.score(labels_all, preds, names_all)
            worst = min(r["recall_by_family"].values()) if r["recall_by_family"] else 0.0
            cells += [r["precision"], r["recall"], worst, r["distractor_false_match_rate"] or 0.0,
                      r["variant_flag_rate"] or 0.0]  # fmt: skip
        print(f"{label:28s} " + " ".join(f"{v:10.3f}" for v in cells), flush=True)


if __name__ == "__main__":
    main()
