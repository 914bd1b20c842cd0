"""Vectorised Hamming scans over uint64 signatures (never a per-row Python loop)."""

from __future__ import annotations

import numpy as np

BITS = 64


def distances(index: np.ndarray, query: int) -> np.ndarray:
    """Hamming distance from `query` to every row of `index` (uint64 array)."""
    return np.bitwise_count(index ^ np.uint64(query)).astype(np.uint8)


def scan(index: np.ndarray, query: int, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows within `radius` of `query`: (row positions, distances), unsorted."""
    dist = distances(index, query)
    rows = np.flatnonzero(dist <= radius)
    return rows, dist[rows]


def similarity(distance: int, bits: int = BITS) -> float:
    """The original system's similarity percent: (bits - distance) * 100 / bits."""
    return round((bits - distance) * 100.0 / bits, 2)


def distance_for_similarity(percent: float, bits: int = BITS) -> int:
    """Largest distance whose similarity is still >= percent (90 % -> 6 of 64)."""
    return int(np.floor(bits * (100.0 - percent) / 100.0 + 1e-9))
