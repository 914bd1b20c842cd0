"""The report's page: one HTML file with its CSS and script, into which producer.report puts the title
(`__TITLE__`, HTML-escaped) and the data (`__DATA__`, a JSON blob with no "<", read by the script with
textContent only). The script renders the queries and groups and the threshold slider (`#min=NN`)."""

PAGE = r"""<!doctype html>
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
