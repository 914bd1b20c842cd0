"""Recall per seller-edit family (benchmarks/seller_edits.py sets), every method in one run.

Methods: the original rule (dHash <= 6), PDQ alone and PDQ-dihedral (min over the query's eight
dihedral hashes) at the threshold that maximises F1 on the `tune` part, and every neardup preset.
Scores are printed for the `held` part (products never seen while choosing thresholds) and `tune`.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from _common import Tally

from common.match import describe, pipeline, presets
from common.signals import signal_set

ORDER = ("original", "strict", "balanced", "loose")
SPLITS = ("held", "tune")


def _describe(path: str, query: bool = False) -> tuple[dict[str, bytes], list[bytes]]:
    data = Path(path).read_bytes()
    image = describe.decode_for(data, 10**9, signal_set.from_env().decode)
    sigs = describe.describe(image, data, signal_set.from_env(), query=query)
    return sigs, describe.pdq_dihedral(describe.working_copy(image.convert("RGB")))


def _describe_query(path: str) -> tuple[dict[str, bytes], list[bytes]]:
    return _describe(path, query=True)


def _bits(blobs: list[bytes]) -> np.ndarray:
    return np.unpackbits(np.frombuffer(b"".join(b[:32] for b in blobs), np.uint8).reshape(-1, 32), axis=1)


def score(labels: dict, preds: dict[str, list[str]], names: list[str]) -> dict:
    """Precision, recall, per-family recall, distractor false-match and variant flag rates over `names`."""
    inventory = set(labels["inventory"])
    tally = Tally()
    fam: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name in names:
        q = labels["queries"][name]
        hits = tally.add(set(preds.get(name, ())) & inventory, q)
        if q["matches"]:
            fam[q["family"]][0] += hits
            fam[q["family"]][1] += len(set(q["matches"]))
    return {
        **tally.figures(),
        "recall_by_family": {f: a / b for f, (a, b) in sorted(fam.items()) if b},
        "distractor_false_match_rate": tally.rate("distractor"),
        "variant_flag_rate": tally.rate("variant"),
        "queries": len(names),
    }


def _threshold_preds(dist: np.ndarray, ids: list[str], names: list[str], t: int) -> dict[str, list[str]]:
    return {n: [ids[j] for j in np.flatnonzero(dist[i] <= t)] for i, n in enumerate(names)}


def _best_threshold(dist: np.ndarray, labels: dict, ids: list[str], names: list[str], part: list[str]):
    """The PDQ distance with the best F1 on `part` (the tune split)."""
    rows = [names.index(n) for n in part]
    best = (-1.0, 0)
    for t in range(0, 129, 2):
        f1 = score(labels, _threshold_preds(dist[rows], ids, part, t), part)["f1"]
        if f1 > best[0]:
            best = (f1, t)
    return best[1]


def evaluate_set(folder: Path, workers: int, title: str, memory_index) -> dict:
    labels = json.loads((folder / "labels.json").read_text())
    ids = labels["inventory"]
    names = list(labels["queries"])
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        inv = list(pool.map(_describe, [str(folder / "inventory" / f"{p}.jpg") for p in ids], chunksize=8))
        qs = list(pool.map(_describe_query, [str(folder / "queries" / n) for n in names], chunksize=8))
    ms = 1000 * (time.perf_counter() - t0) * workers / (len(inv) + len(qs))
    split = {s: [n for n in names if labels["queries"][n]["split"] == s] for s in SPLITS}
    print(
        f"\n== {title}: {len(ids)} products indexed, {len(names)} queries "
        f"(held {len(split['held'])}, tune {len(split['tune'])}; describe {ms:.1f} ms/image/core)"
    )
    preds: dict[str, dict[str, list[str]]] = {}
    # PDQ baselines: plain (identity hash) and dihedral (min over the query's 8 hashes).
    inv_bits = _bits([d[0] for _, d in inv]).astype(bool)
    plain = np.zeros((len(qs), len(ids)), np.int16)
    dihedral = np.zeros_like(plain)
    for i, (_, dh) in enumerate(qs):
        qb = _bits(dh).astype(bool)  # (8, 256)
        d = (qb[:, None, :] ^ inv_bits[None, :, :]).sum(axis=2)
        plain[i], dihedral[i] = d[0], d.min(axis=0)
    thresholds = {}
    for label, dist in (("pdq", plain), ("pdq-dihedral", dihedral)):
        t = _best_threshold(dist, labels, ids, names, split["tune"])
        thresholds[label] = t
        preds[f"{label}<={t}"] = _threshold_preds(dist, ids, names, t)
    index = memory_index(ids, [s for s, _ in inv])
    cost = {}
    for name in ORDER:
        rule = presets.PRESETS[name]
        out: dict[str, list[str]] = {}
        t = time.perf_counter()
        for qname, (q, _) in zip(names, qs, strict=True):
            out[qname] = [m.product_id for m in pipeline.find_matches(q, index.snap, rule, blobs=index.blobs)]
        cost[name] = 1000 * (time.perf_counter() - t) / len(qs)
        preds[name] = out
    results = {s: {m: score(labels, p, split[s]) for m, p in preds.items()} for s in SPLITS}
    for s in SPLITS:
        print_family_table(results[s], f"{s} part ({len(split[s])} queries)")
    chosen = ", ".join(f"{k} {v}" for k, v in thresholds.items())
    print(f"  PDQ thresholds chosen on the tune part (max F1): {chosen}")
    print("  find_matches ms/query: " + ", ".join(f"{k} {v:.2f}" for k, v in cost.items()))
    return {"results": results, "thresholds": thresholds, "ms_per_query": cost}


def print_family_table(res: dict[str, dict], title: str) -> None:
    methods = list(res)
    fams = sorted({f for r in res.values() for f in r["recall_by_family"]})
    width = max(8, *(len(m) for m in methods))
    print(f"-- {title}: recall per family; then P, R, distractors falsely matched, variants flagged")
    print(f"{'family':12s} " + " ".join(f"{m:>{width}s}" for m in methods))
    for f in fams:
        print(f"{f:12s} " + " ".join(f"{res[m]['recall_by_family'].get(f, 0):{width}.3f}" for m in methods))
    for key, label in (("precision", "P"), ("recall", "R"), ("distractor_false_match_rate", "distr"),
                       ("variant_flag_rate", "var")):  # fmt: skip
        print(f"{label:12s} " + " ".join(f"{res[m][key] or 0:{width}.3f}" for m in methods))


def run(args, memory_index) -> dict:
    """The --set / --seller-seeds part of bench_accuracy: one evaluation per set (built in a temp dir)."""
    out = {}
    for folder in args.set or []:
        out[str(folder)] = evaluate_set(folder, args.workers, f"set {folder}", memory_index)
    if args.seller_seeds:
        import seller_edits  # benchmarks/ is on sys.path when bench_accuracy runs

        for seed in [int(s) for s in args.seller_seeds.split(",") if s]:
            with tempfile.TemporaryDirectory(prefix="neardup-seller-") as tmp:
                seller_edits.build(tmp, seed, args.per_family, args.seller_generated, devset=args.devset)
                title = f"seller edits (seed {seed}, {args.per_family}/family)"
                out[f"seller-{seed}"] = evaluate_set(Path(tmp), args.workers, title, memory_index)
    return out
