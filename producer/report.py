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

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
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
        with Image.open(path) as im:
            if im.width * im.height > MAX_THUMB_PIXELS:
                return None
            im.draft("RGB", (size, size))  # JPEG: decode at reduced size, much faster on large photos
            im = ImageOps.exif_transpose(im)
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
    return _PAGE.replace("__TITLE__", html.escape(title)).replace("__DATA__", blob)


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


_PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #222; background: #fafafa; }
  header { position: sticky; top: 0; background: #fff; border-bottom: 1px solid #ddd; padding: 10px 20px;
           z-index: 1; display: flex; gap: 24px; align-items: center; flex-wrap: wrap; }
  h1 { font-size: 18px; margin: 0; }
  h2 { font-size: 16px; margin: 24px 20px 8px; }
  main { padding: 0 20px 40px; }
  label { display: flex; gap: 8px; align-items: center; }
  input[type=range] { width: 240px; }
  input[type=number] { width: 70px; }
  #summary { color: #555; }
  .query { background: #fff; border: 1px solid #e2e2e2; border-radius: 6px; margin: 10px 0; padding: 10px;
           display: flex; gap: 16px; align-items: flex-start; }
  .query-side { width: 150px; flex: none; word-break: break-all; }
  .thumb { width: 128px; height: 128px; object-fit: contain; background: #f0f0f0; border: 1px solid #ddd;
           display: block; }
  .noimg { width: 128px; height: 128px; background: #eee; color: #999; display: flex; align-items: center;
           justify-content: center; font-size: 12px; border: 1px dashed #ccc; }
  table { border-collapse: collapse; }
  td, th { padding: 4px 10px; text-align: left; vertical-align: middle; border-bottom: 1px solid #f0f0f0; }
  th { font-weight: 600; color: #555; }
  .sim { font-variant-numeric: tabular-nums; font-weight: 600; }
  .stage { font-family: ui-monospace, monospace; font-size: 12px; }
  .error { color: #b00020; }
  .none { color: #888; font-style: italic; }
  .group { background: #fff; border: 1px solid #e2e2e2; border-radius: 6px; margin: 10px 0; padding: 10px;
           display: flex; gap: 10px; flex-wrap: wrap; }
  .member { width: 132px; font-size: 12px; word-break: break-all; }
  .member.canonical { outline: 2px solid #2e7d32; }
  .keep { color: #2e7d32; font-weight: 600; }
</style>
</head>
<body>
<header>
  <h1>__TITLE__</h1>
  <label>minimum similarity
    <input id="min-range" type="range" min="0" max="100" step="0.5" value="0">
    <input id="min-number" type="number" min="0" max="100" step="0.5" value="0">%
  </label>
  <label><input id="hide-empty" type="checkbox"> hide queries without matches</label>
  <span id="summary"></span>
</header>
<main>
  <section id="queries-section"><h2>Queries and their matches</h2><div id="queries"></div></section>
  <section id="groups-section"><h2>Near-duplicate groups in the index</h2><div id="groups-info"></div>
    <div id="groups"></div></section>
  <section id="feedback-section" hidden><h2>Review feedback applied</h2><div id="feedback"></div></section>
</main>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const IMAGES = DATA.images || {q: {}, p: {}};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const c of children) if (c) node.appendChild(c);
  return node;
}
function image(uri, alt) {
  if (uri) return el("img", {class: "thumb", src: uri, alt: alt, title: alt});
  return el("div", {class: "noimg", text: "no image"});
}
function fmt(x) { return x == null ? "n/a" : Number(x).toFixed(2) + " %"; }

function renderQueries(min, hideEmpty) {
  const root = document.getElementById("queries");
  root.replaceChildren();
  const keys = Object.keys(DATA.queries);
  document.getElementById("queries-section").hidden = keys.length === 0;
  const hasStage = keys.some(k => DATA.queries[k].matches.some(m => m.stage !== undefined));
  let shown = 0, total = 0;
  for (const key of keys) {
    const res = DATA.queries[key];
    const kept = res.matches.filter(m => m.similarity == null || m.similarity >= min);
    total += res.matches.length; shown += kept.length;
    if (hideEmpty && kept.length === 0) continue;
    const side = el("div", {class: "query-side"},
      image(IMAGES.q[key], key), el("div", {class: "qkey", text: key}));
    const body = el("div", {class: "query-body"});
    if (!res.ok) {
      const e = res.error || {};
      const text = `error: ${e.stage || ""}/${e.reason || ""} ${e.detail || ""}`;
      body.appendChild(el("div", {class: "error", text: text}));
    } else if (kept.length === 0) {
      const text = res.matches.length ? `no match at or above ${min} %` : "no match";
      body.appendChild(el("div", {class: "none", text: text}));
    } else {
      const columns = ["match", "product", "similarity"];
      if (hasStage) columns.push("distance", "matched by", "signals");
      const head = el("tr", {}, ...columns.map(c => el("th", {text: c})));
      const table = el("table", {}, el("thead", {}, head));
      const tbody = el("tbody");
      for (const m of kept) {
        const attrs = {class: "match", "data-query": key, "data-product": m.product_id,
                       "data-similarity": m.similarity};
        const row = el("tr", attrs,
          el("td", {}, image(IMAGES.p[m.product_id], m.product_id)),
          el("td", {class: "pid", text: m.product_id}),
          el("td", {class: "sim", text: fmt(m.similarity)}));
        if (hasStage) {
          row.append(el("td", {text: m.distance === undefined ? "" : String(m.distance)}),
                     el("td", {class: "stage", text: m.stage || ""}),
                     el("td", {class: "stage", text: m.signals ? JSON.stringify(m.signals) : ""}));
        }
        tbody.appendChild(row);
      }
      table.appendChild(tbody);
      body.appendChild(table);
    }
    root.appendChild(el("div", {class: "query", "data-query": key}, side, body));
  }
  return [shown, total];
}

// Groups: connected components of the pairs at or above the threshold (union-find), so moving the
// slider regroups; without pairs (dedup --no-pairs) the groups are shown as dedup made them.
function groupsAt(min) {
  const g = DATA.groups;
  if (!g.pairs) return g.groups;
  const parent = new Map();
  const find = x => {
    while (parent.get(x) !== x) { parent.set(x, parent.get(parent.get(x))); x = parent.get(x); }
    return x;
  };
  const fb = g.feedback || {not_duplicate: [], duplicate: []};
  const confirmed = new Set(fb.duplicate.map(([a, b]) => a + "\t" + b));
  const apart = (ra, rb) => fb.not_duplicate.some(([x, y]) => parent.has(x) && parent.has(y) &&
    ((find(x) === ra && find(y) === rb) || (find(x) === rb && find(y) === ra)));
  // Confirmed pairs first and always; then the others, unless they would join a rejected pair.
  const rank = p => (confirmed.has(p[0] + "\t" + p[1]) ? 0 : 1);
  const ordered = [...g.pairs].sort((p, q) => rank(p) - rank(q));
  for (const [a, b, s] of ordered) {
    const isConfirmed = confirmed.has(a + "\t" + b);
    if (s < min && !isConfirmed) continue;
    for (const x of [a, b]) if (!parent.has(x)) parent.set(x, x);
    const ra = find(a), rb = find(b);
    if (ra === rb || (!isConfirmed && apart(ra, rb))) continue;
    parent.set(ra < rb ? rb : ra, ra < rb ? ra : rb);
  }
  const comps = new Map();
  for (const x of parent.keys()) {
    const r = find(x);
    if (!comps.has(r)) comps.set(r, []);
    comps.get(r).push(x);
  }
  return [...comps.values()].map(c => c.sort()).sort((a, b) => b.length - a.length || (a[0] < b[0] ? -1 : 1));
}

function renderGroups(min) {
  const root = document.getElementById("groups");
  root.replaceChildren();
  const g = DATA.groups;
  document.getElementById("groups-section").hidden = !g;
  if (!g) return 0;
  const groups = groupsAt(min);
  const best = new Map();  // best similarity of each product to another in its group, for the label
  for (const [a, b, s] of g.pairs || []) {
    if (s >= min) for (const x of [a, b]) best.set(x, Math.max(best.get(x) || 0, s));
  }
  let info = `${groups.length} group${groups.length === 1 ? "" : "s"}`;
  if (g.pairs) info += ` at similarity >= ${Math.max(min, g.min_similarity || 0)} %`;
  if (g.radius !== null && g.radius !== undefined) {
    info += ` (dedup radius ${g.radius}, index version ${g.index_version})`;
  }
  const keep = new Set(g.canonical || []);
  if (g.canonical_rule) info += `; canonical member (keep): ${g.canonical_rule}`;
  document.getElementById("groups-info").textContent = info;
  groups.forEach((members, i) => {
    const box = el("div", {class: "group", "data-group": String(i)});
    for (const pid of members) {
      const label = best.has(pid) ? `${pid} (${fmt(best.get(pid))})` : pid;
      const isKeep = keep.has(pid);
      const badge = isKeep ? el("div", {class: "keep", text: "keep"}) : null;
      box.appendChild(el("div", {class: isKeep ? "member canonical" : "member", "data-product": pid},
        image(IMAGES.p[pid], pid), el("div", {text: label}), badge));
    }
    root.appendChild(box);
  });
  return groups.length;
}

function renderFeedback() {
  const g = DATA.groups;
  const fb = g && g.feedback;
  const rows = fb ? [...fb.not_duplicate.map(p => [...p, "not a duplicate"]),
                     ...fb.duplicate.map(p => [...p, "duplicate (confirmed)"])] : [];
  document.getElementById("feedback-section").hidden = rows.length === 0;
  const head = el("tr", {}, ...["product", "product", "verdict"].map(c => el("th", {text: c})));
  const tbody = el("tbody");
  for (const [a, b, v] of rows) {
    tbody.appendChild(el("tr", {class: "feedback", "data-pair": a + " " + b},
      el("td", {text: a}), el("td", {text: b}), el("td", {text: v})));
  }
  document.getElementById("feedback").replaceChildren(el("table", {}, el("thead", {}, head), tbody));
}

function render() {
  const min = Number(document.getElementById("min-number").value) || 0;
  const hideEmpty = document.getElementById("hide-empty").checked;
  const [shown, total] = renderQueries(min, hideEmpty);
  const groups = renderGroups(min);
  renderFeedback();
  document.body.dataset.min = String(min);
  document.body.dataset.shownMatches = String(shown);
  document.getElementById("summary").textContent =
    `${Object.keys(DATA.queries).length} queries, ${shown} of ${total} matches shown` +
    (DATA.groups ? `, ${groups} group${groups === 1 ? "" : "s"}` : "");
}

function setMin(value, fromUser) {
  const v = Math.min(100, Math.max(0, Number(value) || 0));
  document.getElementById("min-range").value = v;
  document.getElementById("min-number").value = v;
  if (fromUser) history.replaceState(null, "", "#min=" + v);  // a shareable link to this view
  render();
}

// The threshold starts from the URL (#min=95 or ?min=95) so a link can open a filtered view.
const fromUrl = (location.hash.match(/min=([0-9.]+)/) || location.search.match(/min=([0-9.]+)/) || [])[1];
document.getElementById("min-range").addEventListener("input", e => setMin(e.target.value, true));
document.getElementById("min-number").addEventListener("change", e => setMin(e.target.value, true));
document.getElementById("hide-empty").addEventListener("change", render);
setMin(fromUrl || 0, false);
</script>
</body>
</html>
"""
