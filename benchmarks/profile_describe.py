"""Where describing one image goes, per signal, in one process: ms per call for an 800x1000 JPEG.

    python benchmarks/profile_describe.py                 # 40 noisy 800x1000 JPEGs, quality 90
    python benchmarks/profile_describe.py --images 10 --width 360 --height 540   # query-sized

Two views: the wall time of decode and describe without a profiler (what the worker pays), and a
cProfile breakdown by the functions the signals are made of (cumulative ms per image: a line
includes what it calls, so lines overlap; the profiler adds a little to each call).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import cpu_profile, machine, photo_jpeg, profile_rows, table

from common.match import describe
from common.signals import signal_set

# The labels of _common.PARTS a describe is made of (indent = what calls what).
PARTS = [
    "decode", "describe", "  PDQ (dihedral)", "  draft hashes (dHash, pHash, crops)", "    pHash",
    "    pHash (of the 32x32 copy)", "    dHash (primary)", "    dHash (box-reduced views)",
    "  mirror hashes", "  halved copy", "  trim box", "  trim box (halved copy)",
    "    trim: depth", "  ORB extract", "  ORB pack", "  ORB words",
    "  thumbnail", "PIL resize (all)", "PIL reduce (all)", "PIL convert (all)", "cv2.resize (all)",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--width", type=int, default=800)
    ap.add_argument("--height", type=int, default=1000)
    ap.add_argument("--noise", type=float, default=8.0, help="pixel noise sigma (8: ~210 KB at 800x1000)")
    ap.add_argument("--cv-threads", type=int, default=1, help="OpenCV threads (workers use 1)")
    args = ap.parse_args()
    import cv2

    cv2.setNumThreads(args.cv_threads)
    rng = np.random.default_rng(11)
    files = [photo_jpeg(rng, args.width, args.height, 90, noise=args.noise) for _ in range(args.images)]
    print(machine())
    kb = np.mean([len(f) for f in files]) / 1e3
    print(
        f"# {args.images} JPEGs {args.width}x{args.height}, mean {kb:.0f} KB; "
        f"decode {signal_set.from_env().decode}"
    )
    print(f"# OpenCV threads: {args.cv_threads} (as in the workers)")
    limit = 60_000_000
    for data in files[:3]:  # warm up (imports, OpenCV thread pools, first allocations)
        describe.describe_bytes(data, limit, signal_set.from_env())

    def wall(fn) -> float:
        best = float("inf")
        for _ in range(3):
            t0 = time.process_time()
            for data in files:
                fn(data)
            best = min(best, time.process_time() - t0)
        return best / len(files) * 1000

    decode_ms = wall(lambda d: describe.decode_for(d, limit, signal_set.from_env().decode))
    total_ms = wall(lambda d: describe.describe_bytes(d, limit, signal_set.from_env()))
    print(
        table(
            ["no profiler (CPU ms/image, best of 3)", "ms"],
            [
                ["decode", decode_ms],
                ["describe_bytes (decode + every signal)", total_ms],
                ["describe alone", total_ms - decode_ms],
            ],
        )
    )
    print()
    prof = cpu_profile(lambda: [describe.describe_bytes(d, limit, signal_set.from_env()) for d in files])
    rows = profile_rows(prof, PARTS, len(files))
    print(table(["cProfile (cumulative)", "calls/image", "ms/image"], rows))


if __name__ == "__main__":
    main()
