"""The query side of the learned embedding: a float32 matrix of unit vectors, cosine top-k by numpy.

Redis keeps each vector as int8 (common.embedding.pack: 7 + d bytes); a query worker holds them as
float32 rows (4 d bytes per product) because a BLAS matrix-vector product over float32 is the
fastest exact scan numpy has: int8 rows converted block by block cost ~6x more per query (measured
on the 2-core VM, 200k x 512: 64 ms float32 against 396 ms int8 blocked). Rows are aligned with the
Snapshot's rows; a row without a vector (none stored) scores -inf and is never a candidate.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import redis

from common.index import keys
from common.signals import embedding

log = logging.getLogger(__name__)


class EmbeddingMatrix:
    """Unit vectors by row, growing by capacity doubling like the Snapshot's columns."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.n = 0
        self._m = np.zeros((0, dim), dtype=np.float32)
        self._ok = np.zeros(0, dtype=bool)

    def __len__(self) -> int:
        return self.n

    @property
    def nbytes(self) -> int:
        return self._m.nbytes + self._ok.nbytes

    @classmethod
    def from_blobs(cls, blobs: Sequence[bytes | None], dim: int | None = None) -> EmbeddingMatrix:
        """Rows 0..len(blobs)-1 from stored blobs (None or damaged: no vector for that row)."""
        if dim is None:
            dim = next((embedding.dimension_of(b) for b in blobs if b is not None and len(b) > 7), 1)
        m = cls(dim)
        m._grow(len(blobs))
        m.n = len(blobs)
        m.set_many(range(len(blobs)), blobs)
        return m

    def set(self, row: int, blob: bytes | None) -> None:
        """Insert or overwrite one row (rows between the old end and `row` stay empty)."""
        if row >= self.n:
            self._grow(row + 1)
            self.n = row + 1
        self._put(row, blob)

    def set_many(self, rows: Sequence[int], blobs: Sequence[bytes | None]) -> None:
        """`set` for many rows at once (a full load of a million vectors: one numpy pass, not a loop)."""
        size = embedding.packed_size(self.dim)
        good = [
            (r, b) for r, b in zip(rows, blobs, strict=True) if b is not None and len(b) == size and b[0] == 1
        ]
        for r, b in zip(rows, blobs, strict=True):
            if b is None or len(b) != size or b[0] != 1:
                self.set(r, b)  # missing or odd: row by row, with the reason logged
        if not good:
            return
        idx = np.fromiter((r for r, _ in good), dtype=np.int64, count=len(good))
        if int(idx.max()) >= self.n:
            self._grow(int(idx.max()) + 1)
            self.n = int(idx.max()) + 1
        raw = np.frombuffer(b"".join(b for _, b in good), dtype=np.int8).reshape(len(good), size)
        q = raw[:, size - self.dim :].astype(np.float32)
        norms = np.linalg.norm(q, axis=1)
        ok = norms > 0
        self._m[idx[ok]] = q[ok] / norms[ok, None]  # the stored scale cancels in the renormalisation
        self._ok[idx] = ok

    def _put(self, row: int, blob: bytes | None) -> None:
        self._ok[row] = False
        if blob is None:
            return
        try:
            v = embedding.unpack(blob)
        except ValueError as exc:
            log.warning("row %d: skipping a damaged embedding (%s)", row, exc)
            return
        if len(v) != self.dim:
            log.warning("row %d: embedding of %d dimensions in a %d-d index", row, len(v), self.dim)
            return
        self._m[row] = v
        self._ok[row] = True

    def _grow(self, needed: int) -> None:
        if len(self._m) >= needed:
            return
        size = max(needed, 2 * len(self._m), 1024)
        grown = np.zeros((size, self.dim), dtype=np.float32)
        grown[: self.n] = self._m[: self.n]
        ok = np.zeros(size, dtype=bool)
        ok[: self.n] = self._ok[: self.n]
        self._m, self._ok = grown, ok

    def cosines(self, query: np.ndarray, rows: Iterable[int] | None = None) -> np.ndarray:
        """Cosine of the unit query to every row (or to `rows`); -inf where a row has no vector."""
        if rows is None:
            scores: np.ndarray = self._m[: self.n] @ query
            scores[~self._ok[: self.n]] = -np.inf
            return scores
        idx = np.fromiter((r for r in rows), dtype=np.int64)
        if self.n == 0:
            return np.full(len(idx), -np.inf, dtype=np.float32)
        inside = (idx >= 0) & (idx < self.n)
        scores = np.full(len(idx), -np.inf, dtype=np.float32)  # aligned with `rows`, even past the end
        scores[inside] = self._m[idx[inside]] @ query
        scores[inside & ~self._ok[np.clip(idx, 0, max(self.n - 1, 0))]] = -np.inf
        return scores

    def top(self, query: np.ndarray, k: int, skip: Iterable[int] = ()) -> list[tuple[int, float]]:
        """The k rows nearest the query by cosine, best first (ties by row), never a row in `skip`."""
        if k <= 0 or self.n == 0:
            return []
        scores = self.cosines(query)
        skip_rows = [r for r in skip if r is not None and 0 <= r < self.n]
        if skip_rows:
            scores[np.asarray(skip_rows, dtype=np.int64)] = -np.inf
        k = min(k, self.n)
        part = np.argpartition(-scores, k - 1)[:k] if k < self.n else np.arange(self.n)
        best = sorted(part.tolist(), key=lambda r: (-scores[r], r))
        return [(r, float(scores[r])) for r in best if np.isfinite(scores[r])]


def query_vector(
    query: dict[str, bytes], signal: str | None, matrix: EmbeddingMatrix | None
) -> np.ndarray | None:
    """The query's unit vector when the embedding is on and comparable with the matrix, else None."""
    if signal is None or matrix is None or signal not in query or query[signal] is None:
        return None
    try:
        v = embedding.unpack(query[signal])
    except ValueError as exc:
        log.warning("query embedding unusable: %s", exc)
        return None
    return v if len(v) == matrix.dim else None


def read_calibration(r: redis.Redis[bytes], signal: str) -> dict[str, Any] | None:
    """The calibration `neardup calibrate --write` stored for this model (None: the tier stays off)."""
    raw = r.get(keys.EMBEDDING_CALIBRATION)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("signal") != signal:
        return None  # another model's threshold means nothing for this one
    threshold = data.get("threshold")
    return data if isinstance(threshold, (int, float)) and -1.0 <= threshold <= 1.0 else None


def write_calibration(r: redis.Redis[bytes], record: dict[str, Any]) -> None:
    r.set(keys.EMBEDDING_CALIBRATION, json.dumps(record))
