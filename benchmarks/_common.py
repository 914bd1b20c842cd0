"""Shared by the benchmarks: generated data (hashes, photos), timing, and plain-text tables."""

from __future__ import annotations

import cProfile
import io
import os
import platform
import pstats
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing


# --------------------------------------------------------------------------------------------------
# Data


def random_hashes(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)


def flip_bits(rng: np.random.Generator, values: np.ndarray, max_flips: int) -> np.ndarray:
    """Each value with between 0 and max_flips random bits flipped (a flip may repeat: <= max_flips)."""
    out = values.copy()
    k = rng.integers(0, max_flips + 1, len(values))
    for step in range(max_flips):
        on = np.flatnonzero(k > step)
        out[on] ^= np.uint64(1) << rng.integers(0, 64, len(on)).astype(np.uint64)
    return out


def planted_hashes(rng: np.random.Generator, n: int, near_fraction: float = 0.02, max_flips: int = 6):
    """Uniform random hashes plus planted near-duplicates (copies with <= max_flips bits flipped)."""
    h = random_hashes(rng, n)
    k = int(n * near_fraction)
    src = rng.integers(0, n, k)
    dst = rng.choice(n, k, replace=False)
    h[dst] = flip_bits(rng, h[src], max_flips)
    return h


def clustered_hashes(rng: np.random.Generator, n: int, bases: int = 300, max_flips: int = 12) -> np.ndarray:
    """Real dHashes are not uniform: `bases` base values, each row one of them with <= max_flips bit
    flips. Hard for multi-index hashing: whole clusters share their blocks."""
    base = random_hashes(rng, bases)
    return flip_bits(rng, base[rng.integers(0, bases, n)], max_flips)


def queries_near(rng: np.random.Generator, hashes: np.ndarray, k: int, max_flips: int) -> np.ndarray:
    """Half near an indexed row (<= max_flips flips), half random (mostly no match)."""
    near = flip_bits(rng, hashes[rng.integers(0, len(hashes), k - k // 2)], max_flips)
    return np.concatenate([near, random_hashes(rng, k // 2)])


def photo_jpeg(
    rng: np.random.Generator, width: int, height: int, quality: int = 90, noise: float = 4.0
) -> bytes:
    """A photo-like JPEG: smooth colour gradients, a few soft shapes, sensor-like noise (sigma `noise`).

    Noise sets the entropy-coded size, which bounds any reduced decode: sigma 4 gives ~140 KB at
    800x1000, sigma 2 ~95 KB (product photos on plain backgrounds are usually at the low end)."""
    from PIL import Image, ImageDraw, ImageFilter

    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), dtype=np.float32)
    for c in range(3):
        a, b, ph = rng.uniform(-1, 1, 3)
        img[..., c] = 128 + 60 * np.sin(a * x / width * 3 + b * y / height * 3 + ph * 3)
    pil = Image.fromarray(img.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(3, 8))):
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(0.1, 0.5) * width, rng.uniform(0.1, 0.5) * height
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x0 + w, y0 + h], fill=colour)
    pil = pil.filter(ImageFilter.GaussianBlur(radius=max(1.0, width / 200)))
    arr = np.asarray(pil).astype(np.float32) + rng.normal(0, noise, (height, width, 3)).astype(np.float32)
    buf = io.BytesIO()
    Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# Scoring labelled queries (the devset's score.py rules)


class Tally:
    """Running counts over labelled queries ({matches, ignore, category}): a flagged product in
    `matches` is a true positive, one in neither list a false positive; a variant query counts as
    flagged when it flags an `ignore` product, any other when it flags something not ignored."""

    def __init__(self) -> None:
        self.tp = self.fp = self.n_true = 0
        self.flagged_any: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # category -> [flagged, of]

    def add(self, flagged: set[str], q: dict) -> int:
        """Count one query's flagged products; returns its true positives."""
        truth, ignore = set(q["matches"]), set(q["ignore"])
        hits = len(flagged & truth)
        self.tp += hits
        self.fp += len(flagged - truth - ignore)
        self.n_true += len(truth)
        cat = q["category"]
        self.flagged_any[cat][0] += bool(flagged & ignore) if cat == "variant" else bool(flagged - ignore)
        self.flagged_any[cat][1] += 1
        return hits

    def figures(self) -> dict[str, float]:
        """Precision (1.0 when nothing was flagged), recall and F1."""
        p = self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0
        r = self.tp / self.n_true if self.n_true else 0.0
        return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}

    def rate(self, cat: str) -> float | None:
        """Share of the queries of a category that flagged (None when there were none)."""
        a, b = self.flagged_any[cat]
        return a / b if b else None


# --------------------------------------------------------------------------------------------------
# Timing and output


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    """Best wall time of `repeat` runs, in seconds (the least disturbed by the other engineers' jobs)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def per_call(fn: Callable[[object], object], items: Sequence[object], repeat: int = 3) -> float:
    """Best-of-`repeat` mean seconds per item of fn(item) over items."""
    return best_of(lambda: [fn(x) for x in items], repeat) / max(1, len(items))


def cpu_profile(fn: Callable[[], object]) -> cProfile.Profile:
    """fn() under cProfile, timed in CPU seconds (as the workers are measured: not the waits)."""
    prof = cProfile.Profile(time.process_time)
    prof.enable()
    try:
        fn()
    finally:
        prof.disable()
    return prof


# Every part a profile can list, once: label -> (file suffix, function name). A profile names the
# labels it shows (indent = nesting); a part this version does not have is simply not listed.
PARTS: dict[str, tuple[str, str]] = {
    "decode": ("imaging.py", "decode"),
    "describe_bytes (decode + signals)": ("describe.py", "describe_bytes"),
    "describe": ("describe.py", "describe"),
    "PDQ (dihedral)": ("describe.py", "pdq_dihedral"),
    "draft hashes (dHash, pHash, crops)": ("describe.py", "_draft_hashes"),
    "pHash": ("describe.py", "_phash"),
    "pHash (of the 32x32 copy)": ("describe.py", "_phash32"),
    "dHash (primary)": ("signatures.py", "dhash64"),
    "dHash (box-reduced views)": ("describe.py", "_dhash_gap"),
    "mirror hashes": ("describe.py", "_mirror_hashes"),
    "query-only views": ("describe.py", "_query_views"),
    "trim box": ("normalise.py", "trim_box"),
    "halved copy": ("normalise.py", "halved"),
    "trim box (halved copy)": ("normalise.py", "halved_trim_box"),
    "trim: depth": ("normalise.py", "depth"),
    "ORB extract": ("verify.py", "extract"),
    "ORB pack": ("verify.py", "pack"),
    "ORB unpack": ("verify.py", "unpack"),
    "ORB + RANSAC": ("verify.py", "verify"),
    "ORB words": ("orb_words.py", "words_of"),
    "thumbnail": ("photometric.py", "thumbnail"),
    "photometric": ("photometric.py", "photometric"),
    "PIL resize (all)": ("Image.py", "resize"),
    "PIL reduce (all)": ("Image.py", "reduce"),
    "PIL convert (all)": ("Image.py", "convert"),
    "cv2.resize (all)": ("~", "<built-in method cv2.resize>"),
    "fetch (read the file)": ("guarded.py", "fetch_with_retries"),
    "run_query": ("querying.py", "run_query"),
    "parse_request": ("querying.py", "parse_request"),
    "indexed_signatures": ("querying.py", "indexed_signatures"),
    "blobs_of (Redis)": ("store.py", "blobs_of"),
    "find_matches": ("pipeline.py", "find_matches"),
    "scans": ("pipeline.py", "_scan"),
    "word candidates": ("pipeline.py", "_word_candidates"),
    "verification": ("confirm.py", "verify_candidates"),
    "ORB stage": ("confirm.py", "_orb_stage"),
    "blobs (cache)": ("blob_cache.py", "blobs"),
    "blobs from Redis": ("store.py", "blobs"),
    "ranked": ("pipeline.py", "_ranked"),
    "snapshot sync": ("index_cache.py", "snapshot"),
}
# find_matches and its parts, as the query profiles list them (under a run_query line).
MATCH_PARTS = ["  find_matches", "    scans", "    word candidates", "    verification"]


def profile_rows(prof: cProfile.Profile, labels: Sequence[str], n: int) -> list[list[object]]:
    """[label, calls per item, cumulative CPU ms per item] of each PARTS label in `labels` that ran,
    over n items; a name this version does not have is simply not listed."""
    # {(file, line, name): (cc, nc, tt, ct, callers)}: pstats keeps it, typeshed does not declare it
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    rows: list[list[object]] = []
    for label in labels:
        suffix, name = PARTS[label.strip()]
        hits = [(v[1], v[3]) for (f, _, n), v in stats.items() if n == name and f.endswith(suffix)]
        if hits:
            calls, cum = sum(h[0] for h in hits), sum(h[1] for h in hits)
            rows.append([label, calls / n, cum / n * 1e3])
    return rows


def mean_median(title: str, series: Sequence[tuple[str, Sequence[float]]]) -> str:
    """A table of the mean and median ms of each named series."""
    rows = [[label, statistics.mean(v), statistics.median(v)] for label, v in series]
    return table([title, "mean ms", "median ms"], rows)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 1:
            return f"{v:.2f}"
        return f"{v:.3g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def machine() -> str:
    import numpy

    py = platform.python_version()
    return f"# {platform.machine()} {os.cpu_count()} cpu, Python {py}, numpy {numpy.__version__}"


def parse_sizes(text: str) -> list[int]:
    return [int(float(s)) for s in text.split(",") if s]
