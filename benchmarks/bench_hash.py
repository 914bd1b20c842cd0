"""Hashing per core: imagehash.dhash as is against the reduced-decode dHash (tests.support.fastdhash).

Photo-like JPEGs (gradients + shapes + noise, quality 90) at 800x1000 and 224x224. Prints
images/s on one core, the ratio to imagehash, and the histogram of bits that differ from the exact
dHash on the same images (the accuracy price of DHASH_FAST). simplejpeg's scaled greyscale decode
is the default front end when installed (same libjpeg-turbo IDCT, same bits as Pillow's draft).

    python benchmarks/bench_hash.py            # 200 images per size
    python benchmarks/bench_hash.py --quick    # 30 images per size
"""

from __future__ import annotations

import argparse
import io
from collections import Counter

import numpy as np
from _common import machine, per_call, photo_jpeg, table
from PIL import Image

from common.signals.signatures import dhash64
from tests.support.fastdhash import DHASH_FAST, dhash64_fast


def imagehash_dhash(data: bytes) -> int:
    import imagehash

    return int(str(imagehash.dhash(Image.open(io.BytesIO(data)))), 16)


def exact_dhash(data: bytes) -> int:
    return dhash64(Image.open(io.BytesIO(data)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--sizes", default="800x1000,224x224", help="WxH list")
    ap.add_argument("--noise", default="2,6", help="photo noise sigmas (sets the JPEG size)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n = 30 if args.quick else args.images
    rng = np.random.default_rng(args.seed)
    methods = {
        "imagehash.dhash": imagehash_dhash,
        "signatures.dhash64": exact_dhash,
        f"{DHASH_FAST} (Pillow draft)": lambda b: dhash64_fast(b, use_simplejpeg=False),
        f"{DHASH_FAST} (default)": dhash64_fast,
    }
    print(machine())
    print(f"# {n} generated photo-like JPEGs per size, quality 90, one process, best of 3")
    rows, hist_rows = [], []
    for size, noise in [(s, float(z)) for s in args.sizes.split(",") for z in args.noise.split(",")]:
        w, h = (int(v) for v in size.split("x"))
        images = [photo_jpeg(rng, w, h, noise=noise) for _ in range(n)]
        kb = np.mean([len(b) for b in images]) / 1024
        exact = [imagehash_dhash(b) for b in images]
        base = None
        for name, fn in methods.items():
            t = per_call(fn, images)
            base = base or t
            diffs = [bin(fn(b) ^ e).count("1") for b, e in zip(images, exact, strict=True)]
            hist = Counter(diffs)
            rows.append([size, noise, f"{kb:.0f}", name, 1 / t, base / t, max(diffs), float(np.mean(diffs))])
            hist_rows.append(
                [size, noise, name]
                + [hist.get(k, 0) for k in range(7)]
                + [sum(v for k, v in hist.items() if k > 6)]
            )
    print("\nThroughput per core (ratio to imagehash.dhash in the same run) and bits moved vs exact dHash.")
    print(
        table(["size", "noise", "KB/img", "method", "images/s", "x imagehash", "max bits", "mean bits"], rows)
    )
    print("\nHistogram: number of images whose hash differs from exact dHash by k bits.")
    print(table(["size", "noise", "method"] + [f"{k}" for k in range(7)] + [">6"], hist_rows))


if __name__ == "__main__":
    main()
