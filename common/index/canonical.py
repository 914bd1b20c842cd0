"""Which member of a dedup group to keep: one documented rule, chosen by NEARDUP_CANONICAL.

- ``earliest`` (default): the product indexed first (the index version at which it was first
  written, kept at ingest; a product removed and indexed again counts from its new indexing).
  Products indexed before that order was kept come first, by id.
- ``largest``: the largest photo (pixels, then bytes, as read at ingest); products without a
  record count as 0.
- ``smallest-id``: the smallest product id (plain string order).
Ties always fall to the smallest product id, so the choice is deterministic.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from PIL import Image

EARLIEST, LARGEST, SMALLEST_ID = "earliest", "largest", "smallest-id"
RULES = (EARLIEST, LARGEST, SMALLEST_ID)

# Per product: (version when first indexed or None, stored meta {"pixels", "bytes", ...}).
Info = tuple[int | None, Mapping[str, Any]]
# What members are ordered by: the smallest key is kept; the product id last, so ties fall to it.
SortKey = tuple[bool | int | str, ...]


def _earliest(pid: str, info: Info) -> SortKey:
    added, _ = info
    return (added is not None, added or 0, pid)


def _largest(pid: str, info: Info) -> SortKey:
    _, meta = info
    return (-int(meta.get("pixels") or 0), -int(meta.get("bytes") or 0), pid)


def _smallest_id(pid: str, info: Info) -> SortKey:
    return (pid,)


_ORDER: dict[str, Callable[[str, Info], SortKey]] = {
    EARLIEST: _earliest,
    LARGEST: _largest,
    SMALLEST_ID: _smallest_id,
}


def canonical(members: Sequence[str], info: Mapping[str, Info], rule: str) -> str:
    """The member to keep under `rule` (members must be non-empty)."""
    order = _ORDER[rule]
    return min(members, key=lambda pid: order(pid, info.get(pid, (None, {}))))


def image_info(data: bytes) -> dict[str, int]:
    """What the `largest` rule compares: the photo's bytes and pixels (header only, no decode)."""
    out = {"bytes": len(data)}
    try:
        with Image.open(io.BytesIO(data)) as im:
            out["pixels"] = int(im.width) * int(im.height)
    except Exception:  # noqa: BLE001 - a header Pillow cannot read just leaves the size unknown
        pass
    return out
