"""Product ids: validated once, so none can escape a folder, break a key or a newline-joined list."""

from __future__ import annotations

import re

from common.errors import BadRequest

_PRODUCT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_product_id(value: object) -> str:
    """The id itself if it is safe, else BadRequest naming the problem."""
    if not isinstance(value, str):
        raise BadRequest("bad_product_id", f"product id must be a string, got {type(value).__name__}")
    if not _PRODUCT_ID.fullmatch(value) or ".." in value:
        shown = value[:60] + ("..." if len(value) > 60 else "")
        raise BadRequest("bad_product_id", f"{shown!r}: use 1-128 of A-Z a-z 0-9 . _ - (no '..')")
    return value
