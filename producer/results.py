"""Output shapes and the atomic JSON writer.

`near_duplicate_image.json` keeps the original system's shape so its consumers keep working:
{"<query>": [["<productId>", <similarity %>], ...]}, best first, ties by productId.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def original_shape(results: dict[str, dict[str, Any]]) -> dict[str, list[list[Any]]]:
    out: dict[str, list[list[Any]]] = {}
    for key, result in results.items():
        matches = result.get("matches", []) if result.get("ok") else []
        out[key] = [[m["product_id"], m["similarity"]] for m in matches]
    return out


def detailed_shape(
    results: dict[str, dict[str, Any]], settings_fingerprint: dict[str, Any]
) -> dict[str, Any]:
    return {"settings": settings_fingerprint, "queries": results}


def dumps_by_key(data: dict[str, Any]) -> str:
    """One line per top-level key: readable, diffable, and still plain JSON."""
    if not data:
        return "{}"
    lines = [
        f" {json.dumps(k, ensure_ascii=False)}: {json.dumps(v, ensure_ascii=False)}" for k, v in data.items()
    ]
    return "{\n" + ",\n".join(lines) + "\n}"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temp file in the same folder, fsync, then os.replace: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; consumers expect what open() would give
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(dumps_by_key(data) if isinstance(data, dict) else json.dumps(data, ensure_ascii=False))
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
