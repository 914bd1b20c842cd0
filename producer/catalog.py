"""Catalog readers: the original system's CSV, a folder of <productId>.jpg, or a `productId,url` list.

Nothing in a catalog is fatal: malformed rows, missing URLs, unsafe or duplicate ids are counted
(with a few examples) in the report and skipped.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import BadRequest
from common.ids import check_product_id

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
MAX_EXAMPLES = 5


@dataclass
class CatalogReport:
    source: str
    items: list[tuple[str, str]] = field(default_factory=list)  # (productId, url or absolute path)
    rows: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    examples: dict[str, list[str]] = field(default_factory=dict)
    listed: set[str] = field(default_factory=set)  # every valid id on a kept row, even one skipped (no URL)

    def skip(self, reason: str, example: str) -> None:
        self.skipped[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < MAX_EXAMPLES:
            shown.append(example[:120])

    def summary(self) -> str:
        parts = [f"{len(self.items)} products from {self.rows} rows of {self.source}"]
        parts += [f"{n} skipped: {reason}" for reason, n in sorted(self.skipped.items())]
        return "; ".join(parts)


def read_catalog(path: Path, tops_only: bool = False) -> CatalogReport:
    path = Path(path)
    if path.is_dir():
        return _read_folder(path)
    raw = path.read_bytes()
    text = raw.decode("utf-8-sig", errors="surrogateescape")
    first = text.split("\n", 1)[0]
    if "productId" in first and "imageUrlStr" in first:
        return _read_seed_csv(path, text, tops_only)
    return _read_url_list(path, text)


def _resolve(url: str, base: Path) -> str:
    """URLs stay as they are; a bare relative path is taken relative to the catalog file."""
    if "://" in url:
        return url
    p = Path(url)
    return str(p if p.is_absolute() else (base / p).resolve())


def _add(report: CatalogReport, seen: set[str], pid: str, url: str, line: str) -> None:
    if any("\udc80" <= ch <= "\udcff" for ch in pid + url):
        report.skip("not_utf8", line.encode("utf-8", "backslashreplace").decode())
        return
    try:
        check_product_id(pid)
    except BadRequest:
        report.skip("bad_product_id", repr(pid))
        return
    report.listed.add(pid)  # `ingest --sync` keeps what the catalog lists, even on a row it cannot use
    if not url:
        report.skip("missing_url", pid)
        return
    if pid in seen:
        report.skip("duplicate_id", pid)
        return
    seen.add(pid)
    report.items.append((pid, url))


def _read_seed_csv(path: Path, text: str, tops_only: bool) -> CatalogReport:
    """One physical line, one row: a stray quote spoils its own row (counted as malformed) instead of
    swallowing every line after it, as a multi-line CSV field would."""
    report = CatalogReport(str(path))
    seen: set[str] = set()
    lines = text.splitlines()
    header = next(csv.reader(lines[:1]))
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        report.rows += 1
        try:
            fields = next(csv.reader([line], strict=True))
        except csv.Error:
            report.skip("malformed_row", f"line {n}")
            continue
        if len(fields) != len(header):
            report.skip("malformed_row", f"line {n}")
            continue
        row = dict(zip(header, fields, strict=True))
        pid = (row.get("productId") or "").strip()
        urls = [u.strip() for u in (row.get("imageUrlStr") or "").split(";") if u.strip()]
        if tops_only:
            leaf = (row.get("categories") or "").split(">")[-1]
            if "Tops" not in leaf:
                report.skipped["not_tops"] += 1
                continue
        url = _resolve(urls[0], path.parent) if urls else ""
        _add(report, seen, pid, url, f"line {n}: {pid}")
    return report


def _read_url_list(path: Path, text: str) -> CatalogReport:
    report = CatalogReport(str(path))
    seen: set[str] = set()
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        report.rows += 1
        if n == 1 and line.lower().replace(" ", "") in ("productid,url", "product_id,url"):
            report.rows -= 1
            continue
        if "," not in line:
            report.skip("malformed_row", f"line {n}")
            continue
        pid, url = (part.strip() for part in line.split(",", 1))
        _add(report, seen, pid, _resolve(url, path.parent) if url else "", f"line {n}: {line}")
    return report


def _read_folder(folder: Path) -> CatalogReport:
    report = CatalogReport(str(folder))
    seen: set[str] = set()
    for file in sorted(folder.iterdir()):
        if not file.is_file() or file.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        report.rows += 1
        _add(report, seen, file.stem, str(file.resolve()), file.name)
    return report
