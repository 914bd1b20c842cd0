"""Accuracy of queries by productId on seller-edit sets: stored signatures against stored signatures.

    python benchmarks/seller_edits.py /tmp/set3 --seed 3 --per-family 80
    python benchmarks/bench_byid_accuracy.py --set /tmp/set3

bench_accuracy.py scores image queries (a query's own describe against the index). A query by
productId and the whole-inventory dedup compare two indexed products instead, each as the index keeps
it (its strongest ORB keypoints, their stored bits, its stored words). Here every seller copy of a set
is indexed as a product beside the inventory, and each copy is queried by its stored signatures (as
`indexed_signatures` gives them to the pipeline); its labelled products are the expected matches,
other copies are not scored. In-process, per preset: precision and recall over (copy, product) pairs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import _common  # noqa: F401  (puts the project on sys.path)
from bench_accuracy import MemoryIndex, describe_all

from common.match import pipeline, presets

COPY = "copy:"  # id prefix of an indexed seller copy (never a productId of the inventory)


def score(folder: Path, workers: int) -> list[tuple[str, float, float, int, int, int]]:
    labels = json.loads((folder / "labels.json").read_text())
    inventory, names = labels["inventory"], list(labels["queries"])
    products = describe_all([folder / "inventory" / f"{p}.jpg" for p in inventory], workers)
    copies = describe_all([folder / "queries" / n for n in names], workers)  # as ingest describes them
    index = MemoryIndex([*inventory, *(COPY + n for n in names)], products + copies)
    rows = []
    for preset in ("strict", "balanced", "loose"):
        tp = fp = fn = 0
        for name, sigs in zip(names, copies, strict=True):
            truth = set(labels["queries"][name]["matches"])
            found = pipeline.find_matches(
                sigs, index.snap, presets.PRESETS[preset], exclude=COPY + name, blobs=index.blobs
            )
            got = {m.product_id for m in found if not m.product_id.startswith(COPY)}
            tp, fp, fn = tp + len(got & truth), fp + len(got - truth), fn + len(truth - got)
        rows.append((preset, tp / max(1, tp + fp), tp / max(1, tp + fn), tp, fp, fn))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", type=Path, action="append", required=True, help="a seller_edits.py set dir")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    print(f"{'set':12s} {'preset':9s} {'P':>6s} {'R':>6s} {'tp':>6s} {'fp':>4s} {'fn':>4s}")
    for folder in args.set:
        for preset, p, r, tp, fp, fn in score(folder, args.workers):
            print(f"{folder.name:12s} {preset:9s} {p:6.3f} {r:6.3f} {tp:6d} {fp:4d} {fn:4d}")


if __name__ == "__main__":
    main()
