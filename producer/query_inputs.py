"""What the user asks to query (files, folders, URLs, product ids) as query messages, each with a unique
`key` naming it in the output.

- A file keeps its own name as its key, also when it is a symlink (two links to one photo are two
  queries named after the links, not one named after the target).
- File names and URLs of any bytes work: keys are shown with undecodable bytes escaped (`bad\\xff.jpg`),
  a path Redis and JSON cannot carry as text travels as the image's bytes instead, a URL's raw bytes are
  percent-encoded (what a browser sends).
- Whether a query lists a product never depends on the query's file name: only the very file a
  product was indexed from is excluded from its own matches (`exclude_own_photos`).
"""

from __future__ import annotations

import base64
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from common.errors import BadRequest
from common.ids import check_product_id
from common.index.store import IndexStore
from producer.catalog import IMAGE_SUFFIXES

URL_SAFE = "/:?#[]@!$&'()*+,;=%~-._"


def display_name(text: str) -> str:
    """Text as it can be printed and stored: bytes that were not UTF-8 (surrogate escapes from the
    file system or argv) shown as \\xNN."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")


def _url(item: str) -> str:
    try:
        item.encode("utf-8")
        return item
    except UnicodeEncodeError:
        return quote(os.fsencode(item), safe=URL_SAFE)


def _files_of(item: str) -> list[Path]:
    p = Path(item.removeprefix("file://"))
    if p.is_dir():
        return sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if p.is_file():
        return [p]
    bare = "/" not in item and not p.suffix  # a bare word: perhaps a product id given as a file
    hint = f" (an indexed product? --product-id {display_name(item)})" if bare else ""
    raise FileNotFoundError(f"query input not found: {display_name(item)}{hint}")


def query_specs(
    inputs: Sequence[str], product_ids: Sequence[str], embedded: bool
) -> tuple[list[dict], list[Path], dict[str, Path]]:
    """(query messages, folders the embedded workers may read, key -> the file each file query reads).
    Local files travel as paths in embedded mode (its workers may read them) and as bytes otherwise."""
    files: list[Path] = []
    specs: list[dict[str, Any]] = []
    for item in inputs:
        if "://" in item and not item.startswith("file://"):
            specs.append({"key": display_name(item), "url": _url(item)})
        else:
            files += _files_of(item)
    # The same path given twice is one query; two links to one file are two (absolute, not resolved).
    files = list(dict.fromkeys(f.absolute() for f in files))
    names = Counter(f.name for f in files)
    origins: dict[str, Path] = {}
    for f in files:
        key = display_name(f.name if names[f.name] == 1 else str(f))
        target = f.resolve()
        spec: dict[str, Any] = {"key": key}
        if embedded and display_name(str(target)) == str(target):
            spec["path"] = str(target)
        else:  # not embedded, or a path that is not valid Unicode: send the bytes
            spec["image_b64"] = base64.b64encode(target.read_bytes()).decode()
        specs.append(spec)
        origins[key] = target
    for pid in dict.fromkeys(product_ids):
        specs.append({"key": check_product_id(pid), "product_id": pid})
    # One result per key: a key given twice would leave the job waiting for an answer never stored.
    specs = list({spec["key"]: spec for spec in reversed(specs)}.values())[::-1]
    return specs, sorted({target.parent for target in origins.values()}), origins


def exclude_own_photos(store: IndexStore, specs: list[dict], origins: dict[str, Path]) -> None:
    """A query that is the very file a product was indexed from (its stored URL is this path) does not
    list that product: the original's "never the query itself". By identity, not by name: a renamed
    copy or a link under another name behaves the same."""
    import json

    from common.index import keys

    candidates: list[tuple[dict, str, Path]] = []
    for spec in specs:
        target = origins.get(spec["key"])
        if target is None:
            continue
        try:
            candidates.append((spec, check_product_id(target.stem), target))
        except BadRequest:
            continue  # not a product id: no product can have been indexed from it under that id
    if not candidates:
        return
    metas = store.r.hmget(keys.PRODUCTS, [pid for _, pid, _ in candidates])
    for (spec, pid, target), meta in zip(candidates, metas, strict=True):
        if meta is not None and json.loads(meta).get("url") == str(target):
            spec["exclude"] = pid
