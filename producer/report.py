"""The HTML report: one self-contained static page of queries beside their matches, and dedup groups.

Inputs are the files the CLI writes: `near_duplicate_image.json` (the original shape, or the `--details`
shape) and/or `near_duplicate_groups.json` (`neardup dedup`). Images are embedded once each as small
base64 JPEG thumbnails, so the page can be mailed or archived as one file. The page is built by a small
script from an embedded JSON blob, with textContent only (product ids and query keys are never HTML);
a threshold slider, initialised from `#min=NN` in the URL, hides matches and pairs below it.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from producer.catalog import IMAGE_SUFFIXES
from producer.report_page import PAGE

MAX_THUMB_PIXELS = 80_000_000  # a report is made from trusted local files; still refuse bombs


def normalise_results(data: Any) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """({query key: {"ok", "matches": [{product_id, similarity, ...}], "error"?}}, settings) from either
    output shape: original `{key: [[pid, sim], ...]}` or details `{"settings", "queries": {key: result}}`."""
    if not isinstance(data, Mapping):
        raise ValueError("results JSON must be an object")
    if isinstance(data.get("queries"), Mapping) and isinstance(data.get("settings", {}), Mapping):
        out: dict[str, dict[str, Any]] = {}
        for key, res in data["queries"].items():
            if not isinstance(res, Mapping):
                raise ValueError(f"query {key!r}: result must be an object")
            raw = res.get("matches", []) if res.get("ok") else []
            if not isinstance(raw, list) or not all(
                isinstance(m, Mapping) and "product_id" in m for m in raw
            ):
                raise ValueError(
                    f"query {key!r}: matches must be a list of {{product_id, similarity}} objects"
                )
            matches = [
                {**m, "product_id": str(m["product_id"]), "similarity": _sim(m.get("similarity"))}
                for m in raw
            ]
            out[str(key)] = {"ok": bool(res.get("ok")), "matches": matches, "error": res.get("error")}
        return out, dict(data.get("settings") or {})
    out = {}
    for key, pairs in data.items():
        if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) >= 2 for p in pairs):
            raise ValueError(f"query {key!r}: expected a list of [productId, similarity] pairs")
        out[str(key)] = {
            "ok": True,
            "matches": [{"product_id": str(p[0]), "similarity": _sim(p[1])} for p in pairs],
        }
    return out, {}


def _sim(value: Any) -> float | None:
    """A similarity as a finite number, else None (shown as n/a): NaN or Infinity in the embedded JSON
    made JSON.parse fail and the page blank."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def normalise_groups(data: Any) -> dict[str, Any]:
    if not isinstance(data, Mapping) or not isinstance(data.get("groups"), list):
        raise ValueError("groups JSON must be an object with a 'groups' list (from `neardup dedup`)")
    return {
        "radius": data.get("radius"),
        "min_similarity": data.get("min_similarity"),
        "index_version": data.get("index_version"),
        "products": data.get("products"),
        "groups": [[str(p) for p in g] for g in data["groups"]],
        # Pairs let the page regroup at any threshold; without them (--no-pairs) groups are shown as is.
        "pairs": [[str(a), str(b), _sim(s)] for a, b, s, *_ in data["pairs"]] if "pairs" in data else None,
        # The member to keep per group (by the rule named), and the review feedback dedup applied.
        "canonical": [str(p) for p in data.get("canonical") or []],
        "canonical_rule": data.get("canonical_rule"),
        "feedback": _feedback_of(data.get("feedback")),
    }


def _feedback_of(data: Any) -> dict[str, list[list[str]]]:
    if not isinstance(data, Mapping):
        return {"not_duplicate": [], "duplicate": []}
    verdicts = ("not_duplicate", "duplicate")
    return {v: [[str(a), str(b)] for a, b in data.get(v) or []] for v in verdicts}


def thumbnail(path: Path, size: int = 128, quality: int = 75) -> str | None:
    """A data: URI of a small JPEG, or None when the file cannot be read as an image."""
    try:
        with Image.open(path) as opened:
            if opened.width * opened.height > MAX_THUMB_PIXELS:
                return None
            opened.draft("RGB", (size, size))  # JPEG: decode at reduced size, much faster on large photos
            im = ImageOps.exif_transpose(opened)
            if im.mode in ("RGBA", "LA", "P"):
                rgba = im.convert("RGBA")
                im = Image.new("RGB", rgba.size, "white")
                im.paste(rgba, mask=rgba.getchannel("A"))
            im = im.convert("RGB")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=quality, optimize=True)
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _find_image(folder: Path | None, stem: str) -> Path | None:
    if folder is None:
        return None
    for suffix in IMAGE_SUFFIXES:
        p = folder / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


def _query_image(key: str, queries_dir: Path | None, images_dir: Path | None) -> Path | None:
    """A query key is a file name (under --queries), a path, or an indexed product id (under --images)."""
    if "://" in key:
        return None  # URLs are not fetched: the report is built offline
    if queries_dir is not None and (queries_dir / key).is_file():
        return queries_dir / key
    if Path(key).is_file():
        return Path(key)
    return _find_image(images_dir, key)


def collect_images(
    query_keys: Iterable[str],
    product_ids: Iterable[str],
    images_dir: Path | None,
    queries_dir: Path | None,
    size: int,
) -> dict[str, dict[str, str]]:
    """{"q": {key: uri}, "p": {pid: uri}}: each image embedded once however often it appears."""
    out: dict[str, dict[str, str]] = {"q": {}, "p": {}}
    for key in query_keys:
        path = _query_image(key, queries_dir, images_dir)
        uri = thumbnail(path, size) if path else None
        if uri:
            out["q"][key] = uri
    for pid in product_ids:
        path = _find_image(images_dir, pid)
        uri = thumbnail(path, size) if path else None
        if uri:
            out["p"][pid] = uri
    return out


def build_report(
    results: Mapping[str, Any] | None = None,
    groups: Mapping[str, Any] | None = None,
    images_dir: Path | None = None,
    queries_dir: Path | None = None,
    title: str = "neardup report",
    thumb_size: int = 128,
) -> str:
    """The HTML page as a string, from the parsed JSON of the results and/or the groups file."""
    queries, settings = normalise_results(results) if results is not None else ({}, {})
    grouped = normalise_groups(groups) if groups is not None else None
    pids: set[str] = {m["product_id"] for r in queries.values() for m in r["matches"]}
    if grouped is not None:
        pids.update(p for g in grouped["groups"] for p in g)
    images = collect_images(queries, sorted(pids), images_dir, queries_dir, thumb_size)
    data = {"title": title, "settings": settings, "queries": queries, "groups": grouped, "images": images}
    # Inside <script>, "</script" ends the element early and "<!--" followed by "<script" makes the
    # parser skip past the real "</script>" (a query named "<!--<script>.jpg" left a blank page): no
    # "<" at all then, escaped as JSON allows. allow_nan=False: NaN is not JSON (_sim removed it).
    blob = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    blob = blob.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return PAGE.replace("__TITLE__", html.escape(title)).replace("__DATA__", blob)


def write_report(
    output: Path,
    results_path: Path | None = None,
    groups_path: Path | None = None,
    images_dir: Path | None = None,
    queries_dir: Path | None = None,
    title: str = "neardup report",
    thumb_size: int = 128,
) -> dict[str, int]:
    """Read the JSON files, write the page (temp file + rename), return what it holds."""
    results = json.loads(results_path.read_text(encoding="utf-8")) if results_path else None
    groups = json.loads(groups_path.read_text(encoding="utf-8")) if groups_path else None
    page = build_report(results, groups, images_dir, queries_dir, title, thumb_size)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(output)
    queries, _ = normalise_results(results) if results is not None else ({}, {})
    return {
        "queries": len(queries),
        "matches": sum(len(r["matches"]) for r in queries.values()),
        "groups": len(groups["groups"]) if groups else 0,
        "bytes": len(page.encode()),
    }
