"""The matching pipeline: which signatures describe an image, and how a query becomes matches."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from PIL import Image

from common import matching
from common.presets import Rule
from common.signatures import DHASH, dhash64, pack64, unpack64
from common.snapshot import Snapshot

# Signals loaded into every query worker's memory and scanned.
SCAN_SIGNALS: tuple[str, ...] = (DHASH,)


@dataclass(frozen=True)
class Match:
    product_id: str
    similarity: float  # dHash similarity percent, the original system's figure
    distance: int  # dHash Hamming distance of 64
    stage: str  # which stage or signal matched it
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def describe(image: Image.Image, raw: bytes | None = None) -> dict[str, bytes]:
    """Every signature stored for one inventory image (and computed for a query)."""
    return {DHASH: pack64(dhash64(image))}


def find_matches(query: dict[str, bytes], snap: Snapshot, rule: Rule, exclude: str | None = None) -> list[Match]:
    """Inventory products matching the query, best first, ties by productId, never `exclude`."""
    if not len(snap):
        return []
    rows, dist = matching.scan(snap.column(DHASH), unpack64(query[DHASH]), rule.max_distance)
    found = [
        Match(snap.ids[r], matching.similarity(int(d)), int(d), "dhash")
        for r, d in zip(rows.tolist(), dist.tolist(), strict=True)
        if snap.ids[r] != exclude
    ]
    found.sort(key=lambda m: (m.distance, m.product_id))
    return found
