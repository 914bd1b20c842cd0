"""Meta's PDQ hash (256 bits + quality) in numpy: no compiler needed to install it.

A port of the C++ reference that `pdqhash` 0.2.8 wraps (facebook/ThreatExchange pdq/cpp:
hashing/pdqhashing.cpp, downscaling/downscaling.cpp, hashing/torben.cpp), written to give the SAME
bits, not merely close ones: every float32 operation happens in the reference's order.

- luma: what pdqhash's binding does (float64 0.299 R + 0.587 G + 0.114 B, then float32), through
  cv2.transform where it rounds the same (checked once per process);
- blur: two X,Y passes of a 1-D box filter (Jarosz tent) whose running float32 sum adds the
  entering pixel, then subtracts the leaving one. The C++ keeps one running sum per line, so the
  rounding of every output depends on the whole line before it: the sums are reproduced in order,
  vectorised across all lines at once (see _box);
- decimation to 64x64 at pixel centres; quality = clipped sum of quantised gradients / 90;
- the 16x16 slice of the 2-D DCT as two float32 matrix products whose sums run in index order
  (a BLAS product or np.sum would add pairwise and round differently; see _dct16);
- bits = coefficient > median (Torben's median of 256 is the 128th smallest value).

The order-preserving sums rest on one numpy behaviour: np.add.reduce down axis 0 of a 2-D array
whose rows are contiguous, with two or more columns, adds row after row. tests/unit/test_pdq.py
checks it against loop transcriptions of the C++ and against pdqhash (golden file; live when
pdqhash is installed).

Bits come out in pdqhash's order (hash bit k of coefficient k = 16 i + j is element 255 - k), so
np.packbits(bits) is the same 32 bytes the pipeline stored from pdqhash. The dihedral hashes come
from sign flips and transposes of the DCT, as in the reference, so they cost almost nothing.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Iterator
from typing import NamedTuple

import cv2
import numpy as np
import numpy.typing as npt

F32 = np.float32
_MIN_DIM = 5  # the reference's MIN_HASHABLE_DIM: smaller images hash to zeros, quality 0
_NUM_PASSES = 2  # X,Y,X,Y box passes make the tent filter

# Names of the eight dihedral hashes, in pdqhash.compute_dihedral's order.
DIHEDRAL = ("original", "rotate90", "rotate180", "rotate270", "flipx", "flipy", "flipplus1", "flipminus1")


def _dct_matrix() -> np.ndarray:
    """Rows 1..16 of the 64-point DCT-II, computed as the C++ does: a float32 scale times a double
    cosine (libm, so math.cos rather than numpy's own SIMD cos), rounded to float32."""
    scale = float(F32(math.sqrt(2.0 / 64.0)))
    d = np.empty((16, 64), F32)
    for i in range(16):
        for j in range(64):
            d[i, j] = scale * math.cos((math.pi / 2.0 / 64.0) * float(i + 1) * float(2 * j + 1))
    return d


_D = _dct_matrix()
_DT = np.ascontiguousarray(_D.T)


def luma(rgb: np.ndarray) -> np.ndarray:
    """pdqhash's luma of an H x W x 3 uint8 array: (R * 0.299 + G * 0.587) + B * 0.114 in float64,
    stored as float32 (the same operations numpy runs for pdqhash's expression)."""
    with _workspace() as ws:
        return _luma(rgb, ws).copy()


_LUMA = np.array([[0.299, 0.587, 0.114]])


@functools.cache
def cv2_luma_agrees() -> bool:
    """Does cv2.transform (float64) give numpy's luma bits here? It does on x86-64 for all 2**24
    colours (tests/unit/test_pdq.py checks them all); a build that fused the multiply-adds would
    round differently, so a sample of colours decides once per process."""
    rng = np.random.default_rng(11)
    sample = rng.integers(0, 256, (255, 511, 3), dtype=np.uint8)  # odd: SIMD loop tails run too
    sample[0, :256] = np.arange(256)[:, None]  # every grey level, and the extremes
    with _workspace() as ws:
        return bool(np.array_equal(_numpy_luma(sample, ws), _cv2_luma(sample)))


def _cv2_luma(rgb: np.ndarray) -> np.ndarray:
    """The same float64 expression through cv2.transform: 2.3x faster than numpy's three passes."""
    out: np.ndarray = cv2.transform(rgb.astype(np.float64), _LUMA).astype(F32)
    return out


def _luma(rgb: np.ndarray, ws: _Workspace) -> np.ndarray:
    """luma() (into the workspace's buffers when numpy computes it)."""
    if rgb.dtype == np.uint8 and rgb.shape[2:] == (3,) and min(rgb.shape[:2]) > 1 and cv2_luma_agrees():
        return _cv2_luma(np.ascontiguousarray(rgb))
    return _numpy_luma(rgb, ws)


def _numpy_luma(rgb: np.ndarray, ws: _Workspace) -> np.ndarray:
    shape = rgb.shape[:2]
    acc, term = ws.get("luma", shape, np.float64), ws.get("luma2", shape, np.float64)
    np.multiply(rgb[:, :, 0], 0.299, out=acc)
    np.multiply(rgb[:, :, 1], 0.587, out=term)
    acc += term
    np.multiply(rgb[:, :, 2], 0.114, out=term)
    out = ws.get("luma32", shape)
    np.add(acc, term, out=out, casting="same_kind")  # a float64 sum, rounded to float32 like astype
    return out


def _window(old: int) -> int:
    return (old + 2 * 64 - 1) // (2 * 64)  # computeJaroszFilterWindowSize(old, 64)


class _Plan(NamedTuple):
    """Where box1DFloat's operands and outputs sit in the segmented buffer (see _box)."""

    gather: np.ndarray  # buffer row -> row of [x; -x; 0] that fills it
    segments: int  # G segments of `width` rows (row 0: the incoming running sum)
    width: int
    full: bool  # every prefix wanted (scan within segments) or only the segment ends
    out_rows: np.ndarray  # buffer row holding each wanted output's running sum
    size: np.ndarray  # the C++'s current_window_size for each wanted output (float32)


@functools.lru_cache(maxsize=64)
def _plan(n: int, w: int, keep: tuple[int, ...] | None) -> _Plan:
    """box1DFloat on a line of n with window w as one sequence of signed operands: x[0..w-1]
    (phases 1-2), then +x[w+i], -x[i] per full-window step (phase 3), then -x[n-w+i] (phase 4).
    Output p is the running sum after operand src[p], divided by size[p]."""
    h = (w + 2) // 2
    k = n - w
    length = 2 * n - w + h - 1
    operand = np.empty(length, np.int64)  # index into [x; -x]: i for +x[i], n + i for -x[i]
    operand[:w] = np.arange(w)
    operand[w : w + 2 * k : 2] = np.arange(w, n)
    operand[w + 1 : w + 2 * k : 2] = n + np.arange(k)
    operand[w + 2 * k :] = n + np.arange(k, k + h - 1)
    src = np.concatenate([np.arange(h - 1, w), np.arange(w + 1, w + 2 * k, 2), np.arange(w + 2 * k, length)])
    size = np.concatenate([np.arange(h, w + 1), np.full(k, w), np.arange(w - 1, w - h, -1)]).astype(F32)
    full = keep is None
    if keep is not None:
        src, size = src[list(keep)], size[list(keep)]
    # Segments: equal blocks of ~sqrt(L) operands when every prefix is wanted (they are then scanned
    # side by side); otherwise segments ending exactly at the wanted operands (no scan needed).
    if full:
        per = math.isqrt(length - 1) + 1
        ends = np.minimum(np.arange(per, length + per, per), length)
    else:
        ends = np.unique(src) + 1
        if ends[-1] < length:  # operands after the last wanted output are never needed
            length = int(ends[-1])
    starts = np.concatenate([[0], ends[:-1]])
    width = int((ends - starts).max()) + 1
    segments = len(ends) + 1  # a last, empty segment receives the final running sum
    zero = 2 * n
    gather = np.full(segments * width, zero, np.int64)
    seg_of = np.searchsorted(ends, np.arange(length), side="right")
    pos_of = 1 + (np.arange(length) - starts[seg_of])
    # Full: position-major (width, segments) rows, so the scan adds contiguous blocks; selective:
    # segment-major (segments, width), each segment one contiguous block to reduce.
    row_of = pos_of * segments + seg_of if full else seg_of * width + pos_of
    gather[row_of] = operand[:length]
    # Selective: the running sum after segment g lands in row 0 of segment g + 1.
    out_rows = row_of[src] if full else (np.searchsorted(ends, src + 1) + 1) * width
    return _Plan(gather, segments, width, full, out_rows, size)


class _Workspace:
    """Reusable buffers, one growing block per role: the passes' arrays are a few MB each, and glibc
    hands blocks that large back to the kernel on free, so fresh ones page-fault in on every image
    (measured: it doubled the cost); one block per role, whatever the pass, keeps the working set
    small. A buffer is overwritten by the next request for the same role."""

    def __init__(self) -> None:
        self.blocks: dict[tuple[str, type], np.ndarray] = {}

    def get(self, tag: str, shape: tuple[int, ...], dtype: type = F32) -> np.ndarray:
        size = math.prod(shape)
        block = self.blocks.get((tag, dtype))
        if block is None or block.size < size:
            block = self.blocks[(tag, dtype)] = np.empty(size, dtype)
        return block[:size].reshape(shape)

    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.blocks.values())


# Idle workspaces: as many as hashes ever ran at once (describe runs two at a time in the ingest
# worker, whichever of its download threads does it), not one per thread.
_idle: list[_Workspace] = []
_idle_lock = threading.Lock()
_KEEP_BYTES = 64 * 1024 * 1024  # a workspace grown by a huge image is dropped, not kept


@contextlib.contextmanager
def _workspace() -> Iterator[_Workspace]:
    with _idle_lock:
        ws = _idle.pop() if _idle else _Workspace()
    try:
        yield ws
    finally:
        if ws.nbytes() <= _KEEP_BYTES:
            with _idle_lock:
                _idle.append(ws)


def _box(x: np.ndarray, w: int, keep: np.ndarray | None, ws: _Workspace, tag: str) -> np.ndarray:
    """box1DFloat down axis 0 of a float32 array (n steps, m lines), all m lines at once.

    The C++ keeps one running float32 sum per line, adding the entering pixel and subtracting the
    leaving one, so each output's rounding depends on the whole line before it. np.cumsum is
    sequential but slow; a loop over the ~2n operands pays numpy's call overhead per operand.
    Instead the operand sequence is cut into segments, each preceded by a row for the running sum
    it starts from: np.add.reduce down axis 0 of a block of contiguous lines (>= 2 columns) adds
    row after row in order (pairwise summation only applies along the contiguous axis), so reducing
    segment g gives the exact running sum that starts segment g + 1. Then, if every output is
    wanted, all segments are scanned side by side (~sqrt(2n) steps; the buffer is laid out position
    by position so each step adds two contiguous blocks). `keep`: wanted output rows.
    The result is the workspace buffer `tag` (the input may be the previous pass's result: it is
    copied before anything is written)."""
    n, m = x.shape
    if m < 2:  # one column: numpy would reduce it pairwise (see the module docstring)
        raise ValueError("PDQ's box filter needs at least two lines")
    plan = _plan(n, w, None if keep is None else tuple(int(i) for i in keep))
    source = ws.get("src", (2 * n + 1, m))
    if x.T.flags.c_contiguous:  # the passes hand in transposed views: cv2's blocked transpose
        head = source[:n]
        if cv2.transpose(x.T, head) is not head:  # cv2 wrote elsewhere (never seen): copy it in
            head[:] = x
    else:
        source[:n] = x
    np.negative(source[:n], out=source[n : 2 * n])
    source[2 * n] = 0
    flat = ws.get("buf", (plan.segments * plan.width, m))
    np.take(source, plan.gather, axis=0, out=flat)
    if plan.full:  # (width, segments, m): segment g is the strided column buf[:, g]
        buf = flat.reshape(plan.width, plan.segments, m)
        for g in range(plan.segments - 1):
            np.add.reduce(buf[:, g], axis=0, out=buf[0, g + 1])
        for j in range(1, plan.width):
            np.add(buf[j - 1], buf[j], out=buf[j])
    else:
        buf = flat.reshape(plan.segments, plan.width, m)
        for g in range(plan.segments - 1):
            np.add.reduce(buf[g], axis=0, out=buf[g + 1, 0])
    out = ws.get(tag, (len(plan.out_rows), m))
    np.take(flat, plan.out_rows, axis=0, out=out)
    out /= plan.size[:, None]
    return out


def _downsample(buf: np.ndarray, ws: _Workspace) -> np.ndarray:
    """jaroszFilterFloat (2 x rows then columns) and decimateFloat to 64 x 64.

    Only the pixels the decimation reads are finished: the last row pass writes only the 64
    sampled columns (its sums still run over whole rows), the last column pass only those 64."""
    rows, cols = buf.shape
    w_rows, w_cols = _window(cols), _window(rows)
    ri = (((np.arange(64) + 0.5) * rows) / 64).astype(np.int64)
    ci = (((np.arange(64) + 0.5) * cols) / 64).astype(np.int64)
    for rep in range(_NUM_PASSES):
        last = rep == _NUM_PASSES - 1
        across = _box(buf.T, w_rows, ci if last else None, ws, "across")  # along rows: (cols or 64, rows)
        buf = _box(across.T, w_cols, ri if last else None, ws, "down")  # along columns: (rows or 64, ...)
    return buf.copy()


def _quality(b: np.ndarray) -> int:
    """pdqImageDomainQualityMetric: int(((u - v) * 100) / 255) in float32, truncated, summed."""
    dy = ((b[:-1, :] - b[1:, :]) * F32(100)) / F32(255)
    dx = ((b[:, :-1] - b[:, 1:]) * F32(100)) / F32(255)
    total = int(np.abs(dy.astype(np.int32)).sum()) + int(np.abs(dx.astype(np.int32)).sum())
    return min(100, total // 90)


def _dct16(a: np.ndarray) -> np.ndarray:
    """dct64To16: T = D A, then B = T D^T, each sum of float32 products accumulated in k order.

    The products are laid out C-contiguous with k on the middle axis, so np.add.reduce adds them
    in order, lane by lane. (A BLAS product, or a reduction along the contiguous axis, sums
    pairwise; numpy picks that axis as the inner loop when the product's layout is not C order,
    e.g. when an operand is a transposed view, hence the explicit C-ordered outputs.)"""
    prod = np.multiply(_D[:, :, None], a[None, :, :], order="C")  # [i, k, j] = D[i, k] A[k, j]
    t = np.add.reduce(prod, axis=1)
    prod2 = np.multiply(t[:, :, None], _DT[None, :, :], order="C")  # [i, k, j] = T[i, k] D[j, k]
    b: np.ndarray = np.add.reduce(prod2, axis=1)
    return b


def _bits(dct: np.ndarray) -> npt.NDArray[np.uint8]:
    """pdqBuffer16x16ToBits: 1 where a coefficient exceeds Torben's median (the 128th smallest of
    256), in pdqhash's output order (reversed coefficient index)."""
    flat = dct.ravel()
    median = np.partition(flat, 127)[127]
    bits: npt.NDArray[np.uint8] = (flat > median)[::-1].astype(np.uint8)
    return bits


def _as_luma(image: np.ndarray, ws: _Workspace) -> np.ndarray:
    if image.ndim == 3:
        return _luma(image, ws)
    if image.ndim == 2:
        return np.ascontiguousarray(image, dtype=F32)
    raise ValueError(f"PDQ needs an H x W x 3 RGB or H x W luma array, got shape {image.shape}")


def float_luma(lum: np.ndarray, *, skip_filter_at_64: bool = True) -> tuple[np.ndarray, int]:
    """The 16 x 16 DCT buffer and quality of a float32 luma array of at least 5 x 5
    (pdqFloat256FromFloatLuma; pdqhash.compute_float returns the same buffer flattened, reversed).

    A 64 x 64 input is used as is, unfiltered, as the reference's single-hash path does (its
    dihedral path always filters: skip_filter_at_64=False)."""
    if min(lum.shape) < _MIN_DIM:
        raise ValueError(f"PDQ needs at least {_MIN_DIM} x {_MIN_DIM} pixels, got {lum.shape}")
    with _workspace() as ws:
        return _float_luma(np.asarray(lum, F32), ws, skip_filter_at_64=skip_filter_at_64)


def _float_luma(lum: np.ndarray, ws: _Workspace, *, skip_filter_at_64: bool) -> tuple[np.ndarray, int]:
    small = lum.astype(F32) if skip_filter_at_64 and lum.shape == (64, 64) else _downsample(lum, ws)
    return _dct16(small), _quality(small)


def compute(image: np.ndarray) -> tuple[np.ndarray, int]:
    """(256 bits as uint8 0/1, quality 0..100) of an RGB uint8 (or float luma) array, as
    pdqhash.compute returns them."""
    with _workspace() as ws:
        lum = _as_luma(image, ws)
        if min(lum.shape) < _MIN_DIM:
            return np.zeros(256, np.uint8), 0
        dct, quality = _float_luma(lum, ws, skip_filter_at_64=True)
    return _bits(dct), quality


def dihedral_dcts(dct: np.ndarray) -> list[np.ndarray]:
    """The DCT buffers of the eight dihedral images (DIHEDRAL order), from the original's: a left-
    right mirror flips the sign of odd horizontal frequencies, an up-down one of odd vertical ones
    (even indices: the 16 x 16 slice starts at frequency 1), and a transpose swaps the axes (the
    reference's dct16OriginalTo* functions)."""
    col_odd = (np.arange(16) & 1).astype(bool)[None, :]  # j odd
    row_odd = col_odd.T  # i odd
    sum_odd = row_odd ^ col_odd
    return [
        dct,
        np.where(col_odd, dct, -dct).T,  # rotate90
        np.where(sum_odd, -dct, dct),  # rotate180
        np.where(row_odd, dct, -dct).T,  # rotate270
        np.where(row_odd, dct, -dct),  # flipx
        np.where(col_odd, dct, -dct),  # flipy
        dct.T,  # flipplus1
        np.where(sum_odd, -dct, dct).T,  # flipminus1
    ]


def compute_dihedral(image: np.ndarray) -> tuple[list[np.ndarray], int]:
    """The eight dihedral hashes (DIHEDRAL order) and the quality, as pdqhash.compute_dihedral."""
    with _workspace() as ws:
        lum = _as_luma(image, ws)
        if min(lum.shape) < _MIN_DIM:
            return [np.zeros(256, np.uint8) for _ in DIHEDRAL], 0
        dct, quality = _float_luma(lum, ws, skip_filter_at_64=False)
    return [_bits(d) for d in dihedral_dcts(dct)], quality


def pack(bits: np.ndarray) -> bytes:
    """32 bytes, the first bit of `bits` most significant (np.packbits)."""
    return np.packbits(np.asarray(bits, np.uint8)).tobytes()
