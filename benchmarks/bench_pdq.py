"""PDQ in numpy (common.signals.pdq) against pdqhash, the compiled reference: same bits? how much slower?

For every image: decoded as the pipeline decodes it (exact and draft mode), reduced to its working
copy (describe.working_copy), then hashed by both. Prints, per image set, the fraction of images
whose 256 bits, quality and eight dihedral hashes are identical, the largest bit difference, and
ms per image of each (best of 5 rounds in which they take turns, luma conversion included in
both, as pipeline._pdq calls them).

Sets: the bundled samples/, the devset (../shared/devset, skipped when absent), and a generated
set (common.samplegen, its own seed: not the images the port was checked on while writing it).

    python benchmarks/bench_pdq.py              # samples + devset + 200 generated
    python benchmarks/bench_pdq.py --quick      # samples + 40 generated
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import machine, table

from common.match import describe
from common.signals import pdq, signal_set
from tests.support import samplegen

ROOT = Path(__file__).resolve().parent.parent
DEVSET = ROOT.parent / "shared" / "devset"


def working_copies(paths: list[Path], mode: str) -> list[np.ndarray]:
    out = []
    for p in paths:
        image = describe.decode_for(p.read_bytes(), 60_000_000, mode)
        out.append(np.asarray(describe.working_copy(image.convert("RGB"))))
    return out


def compare(arrays: list[np.ndarray], reference) -> tuple[int, int, int]:
    """(images identical in everything, largest bit difference of the plain hash, quality mismatches)."""
    same = worst = bad_quality = 0
    for a in arrays:
        want, want_q = reference.compute(a)
        got, got_q = pdq.compute(a)
        diff = int((np.asarray(want, np.uint8) != got).sum())
        want_all, _ = reference.compute_dihedral(a)
        got_all, got_dq = pdq.compute_dihedral(a)
        pairs = zip(want_all, got_all, strict=True)
        dihedral_same = all((np.asarray(w, np.uint8) == g).all() for w, g in pairs)
        worst, bad_quality = max(worst, diff), bad_quality + (want_q != got_q or got_dq != want_q)
        same += diff == 0 and want_q == got_q and dihedral_same
    return same, worst, bad_quality


def interleaved_ms(fns: list, arrays: list[np.ndarray], repeat: int = 5) -> list[float]:
    """Best-of-`repeat` ms per image of each fn, the fns taking turns in every round so that a
    machine shared with other jobs slows them alike."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            for a in arrays:
                fn(a)
            best[i] = min(best[i], (time.perf_counter() - start) / len(arrays) * 1000)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--generated", type=int, default=200, help="generated images (inventory + queries)")
    ap.add_argument("--seed", type=int, default=41)
    args = ap.parse_args()
    try:
        import pdqhash
    except ImportError:
        pdqhash = None
        print("pdqhash is not installed (pip install -e .[bench]): timing common.signals.pdq alone")
    print(machine())
    n_gen = 40 if args.quick else args.generated
    sets: dict[str, list[Path]] = {"samples": sorted((ROOT / "samples").rglob("*.jpg"))}
    if DEVSET.exists() and not args.quick:
        sets["devset"] = sorted((DEVSET / "inventory").glob("*.jpg"))
        sets["devset"] += sorted((DEVSET / "queries").glob("*.jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        per_kind = max(1, n_gen // 2 // len(samplegen.KINDS))
        n_products = n_gen - per_kind * len(samplegen.KINDS)
        samplegen.generate(tmp, n_products, n_queries_per_kind=per_kind, seed=args.seed, n_other=0)
        sets["generated"] = sorted(Path(tmp).glob("*/*.jpg"))
        rows = []
        for name, paths in sets.items():
            for mode in (signal_set.EXACT, signal_set.DRAFT):
                arrays = working_copies(paths, mode)
                if pdqhash is None:
                    (ours,) = interleaved_ms([pdq.compute], arrays)
                    rows.append([name, mode, len(arrays), "-", "-", "-", ours, "-", "-"])
                    continue
                same, worst, bad_q = compare(arrays, pdqhash)
                ours, ref = interleaved_ms([pdq.compute, pdqhash.compute], arrays)
                identical = f"{same / len(arrays):.4f}"
                rows.append(
                    [name, mode, len(arrays), identical, worst, bad_q, ours, ref, f"{ours / ref:.2f}"]
                )
    headers = ["set", "decode", "images", "identical", "max bits", "quality diff", "ms numpy", "ms pdqhash"]
    headers.append("ratio")
    print(table(headers, rows))


if __name__ == "__main__":
    main()
