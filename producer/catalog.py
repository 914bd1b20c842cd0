"""Catalog readers: the original system's CSV, a folder of <productId>.jpg, or a `productId,url` list.

Nothing in a catalog is fatal: malformed rows, missing URLs, unsafe or duplicate ids are counted
(with a few examples) in the report and skipped.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import BadRequest
from common.ids import check_product_id

# Ordered: where only a stem is known (the report looking up a product's image), the first file wins.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
MAX_EXAMPLES = 5


@dataclass
class CatalogReport:
    source: str
    kind: str = ""  # what the reader decided: "seed CSV, 3 columns, delimiter ';'"
    items: list[tuple[str, str]] = field(default_factory=list)  # (productId, url or absolute path)
    rows: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    examples: dict[str, list[str]] = field(default_factory=dict)
    listed: set[str] = field(default_factory=set)  # every valid id on a kept row, even one skipped (no URL)
    notes: list[str] = field(default_factory=list)  # e.g. an option that does not apply to this kind

    def skip(self, reason: str, example: str) -> None:
        self.skipped[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < MAX_EXAMPLES:
            shown.append(example[:120])

    def summary(self) -> str:
        kind = f" ({self.kind})" if self.kind else ""
        parts = [f"{len(self.items)} products from {self.rows} rows of {self.source}{kind}"]
        parts += [f"{n} skipped: {reason}" for reason, n in sorted(self.skipped.items())]
        return "; ".join(parts)


class CatalogError(ValueError):
    """The catalog as a whole cannot be read (not a file, binary, too big): one clear line, exit 2."""


MAX_CATALOG_BYTES = 2 * 1024**3  # 2 GiB: tens of millions of rows; /dev/zero or a disk image is not one
MAX_RECORD_LINES = 8  # a quoted field may span lines; a stray quote must not swallow the rest
DELIMITERS = (",", ";", "\t")
SEED_COLUMNS = ("productid", "imageurlstr")
ID_NAMES = ("productid", "product_id", "id")
URL_NAMES = ("url", "imageurl", "imageurlstr", "path", "image")


def read_catalog(path: Path, tops_only: bool = False) -> CatalogReport:
    path = Path(path)
    if path.is_dir():
        report = _read_folder(path)
        report.kind = "folder of images"
    else:
        report = _read_table(path, _decode(path), tops_only)
    if tops_only and "categories" not in report.kind:
        report.notes.append(f"--tops-only ignored: this {report.kind.split(',')[0]} has no categories")
    return report


def _decode(path: Path) -> str:
    """The catalog's text: UTF-8 (BOM or not) with undecodable bytes kept as surrogates (their rows are
    counted not_utf8), or UTF-16/32 when a BOM says so."""
    if not path.exists():
        raise FileNotFoundError(f"catalog not found: {path}")
    if not path.is_file():
        raise CatalogError(f"catalog {path} is not a regular file")
    size = path.stat().st_size
    if size > MAX_CATALOG_BYTES:
        raise CatalogError(f"catalog {path} is {size / 1024**3:.1f} GiB: more than a catalog (2 GiB)")
    raw = path.read_bytes()
    for bom, codec in ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
                       (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):  # fmt: skip
        if raw.startswith(bom):
            try:
                return raw.decode(codec)
            except UnicodeDecodeError as exc:
                raise CatalogError(f"catalog {path}: broken {codec.upper()} ({exc.reason})") from None
    if raw[:4096].count(b"\x00") > len(raw[:4096]) // 4:
        raise CatalogError(f"catalog {path} looks binary (or UTF-16 without a BOM): save it as UTF-8 CSV")
    return raw.decode("utf-8-sig", errors="surrogateescape")


def _sniff(header: str) -> str:
    """The delimiter of the header line: the one that splits off the known column names, else the
    most frequent of comma, semicolon and tab (a one-column line: comma)."""
    for d in DELIMITERS:
        names = {n.strip().lower() for n in header.split(d)}
        if set(SEED_COLUMNS) <= names or (names & set(ID_NAMES) and names & set(URL_NAMES)):
            return d
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _records(lines: list[str], start: int, delimiter: str) -> Iterator[tuple[int, list[str] | None]]:
    """(line number, fields) per CSV record from `lines[start:]`, blank lines skipped; fields None for
    a record that does not parse (a quote never closed within MAX_RECORD_LINES lines): that record
    alone is lost, parsing goes on at the next line."""
    i = start
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        reader = csv.reader(iter(lines[i : i + MAX_RECORD_LINES]), delimiter=delimiter, strict=True)
        try:
            fields = next(reader)
            used = reader.line_num
        except (csv.Error, StopIteration):
            fields, used = None, 1
        yield i + 1, fields
        i += max(1, used)


def _read_table(path: Path, text: str, tops_only: bool) -> CatalogReport:
    lines = text.splitlines(keepends=True)
    first = next((n for n, line in enumerate(lines) if line.strip() and not line.startswith("#")), len(lines))
    header_line = lines[first] if first < len(lines) else ""
    delimiter = _sniff(header_line)
    header = [h.strip().lower() for h in next(csv.reader([header_line], delimiter=delimiter), [])]
    shown = {",": "','", ";": "';'", "\t": "tab"}[delimiter]
    if set(SEED_COLUMNS) <= set(header):
        report = CatalogReport(str(path), kind=f"seed CSV, {len(header)} columns, delimiter {shown}")
        if "categories" in header:
            report.kind += ", with categories"
        _read_seed_rows(report, path, lines, first + 1, delimiter, header, tops_only)
        return report
    id_col = next((header.index(n) for n in ID_NAMES if n in header), None)
    url_col = next((header.index(n) for n in URL_NAMES if n in header), None)
    has_header = id_col is not None and url_col is not None
    report = CatalogReport(
        str(path),
        kind=f"URL list, delimiter {shown}" + (", with a header" if has_header else ", no header"),
    )
    if id_col is None or url_col is None:
        id_col, url_col = 0, 1
    _read_list_rows(report, path, lines, first + (1 if has_header else 0), delimiter, id_col, url_col)
    return report


def _read_seed_rows(
    report: CatalogReport,
    path: Path,
    lines: list[str],
    start: int,
    delimiter: str,
    header: list[str],
    tops_only: bool,
) -> None:
    seen: set[str] = set()
    for n, fields in _records(lines, start, delimiter):
        report.rows += 1
        if fields is None or len(fields) != len(header):
            report.skip("malformed_row", f"line {n}")
            continue
        row = dict(zip(header, fields, strict=True))
        pid = (row.get("productid") or "").strip()
        urls = [u.strip() for u in (row.get("imageurlstr") or "").split(";") if u.strip()]
        if tops_only and "categories" in row:
            leaf = (row.get("categories") or "").split(">")[-1]
            if "Tops" not in leaf:
                report.skipped["not_tops"] += 1
                continue
        url = _resolve(report, urls[0], path.parent, pid) if urls else ""
        if url is not None:
            _add(report, seen, pid, url, f"line {n}: {pid}")


def _read_list_rows(
    report: CatalogReport, path: Path, lines: list[str], start: int, delimiter: str, id_col: int, url_col: int
) -> None:
    seen: set[str] = set()
    for n, fields in _records(lines, start, delimiter):
        if lines[n - 1].lstrip().startswith("#"):
            continue
        report.rows += 1
        if fields is None or len(fields) <= max(id_col, url_col):
            report.skip("malformed_row", f"line {n}")
            continue
        pid, url = fields[id_col].strip(), fields[url_col].strip()
        resolved = _resolve(report, url, path.parent, pid) if url else ""
        if resolved is not None:
            line = delimiter.join(fields)
            _add(report, seen, pid, resolved, f"line {n}: {line}")


def _resolve(report: CatalogReport, url: str, base: Path, pid: str) -> str | None:
    """URLs stay as they are; a bare relative path is taken relative to the catalog file. A path that
    cannot be resolved (a symlink loop) fails its own row only (None)."""
    if "://" in url:
        return url
    p = Path(url)
    try:
        return str(p if p.is_absolute() else (base / p).resolve())
    except (OSError, RuntimeError, ValueError) as exc:  # RuntimeError: "Symlink loop" (Python 3.11)
        report.skip("bad_path", f"{pid}: {type(exc).__name__}")
        return None


def _add(report: CatalogReport, seen: set[str], pid: str, url: str, line: str) -> None:
    if any("\udc80" <= ch <= "\udcff" for ch in pid + url):
        # the row's own bytes back, the undecodable ones as \xNN (as elsewhere)
        report.skip("not_utf8", line.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))
        return
    if "\x00" in pid + url:
        report.skip("malformed_row", line.replace("\x00", "\\0"))
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


def _read_folder(folder: Path) -> CatalogReport:
    report = CatalogReport(str(folder))
    seen: set[str] = set()
    for file in sorted(folder.iterdir()):
        if not file.is_file() or file.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        report.rows += 1
        _add(report, seen, file.stem, str(file.resolve()), file.name)
    return report
