"""`neardup report` rendered by headless Chromium: the rows its script builds, the threshold filter, the
dedup groups, and a screenshot kept under test-artifacts/ for a human to look at."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLES

pytestmark = [pytest.mark.system, pytest.mark.browser]

ARTIFACTS = ROOT / "test-artifacts"
INVENTORY = SAMPLES / "inventory"
QUERIES = SAMPLES / "queries"


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if path is None:
        if os.environ.get("NEARDUP_REQUIRE_BROWSER") == "1":
            pytest.fail("NEARDUP_REQUIRE_BROWSER=1 but no chromium on PATH")
        pytest.skip("headless Chromium not installed (apt-get install chromium)")
    return path


def browse(page: Path, profile: Path, *extra: str, fragment: str = "") -> str:
    """Chromium's DOM after the page's script ran (--dump-dom), or its stdout for other modes."""
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *extra,
        page.resolve().as_uri() + fragment,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def match_rows(dom: str) -> list[tuple[str, str, float]]:
    """(query, product, similarity) of every match row the script rendered."""
    rows = re.findall(r'<tr class="match"([^>]*)>', dom)
    out = []
    for attrs in rows:
        a = dict(re.findall(r'data-([a-z]+)="([^"]*)"', attrs))
        out.append((a["query"], a["product"], float(a["similarity"])))
    return out


def _match(product_id: str, similarity: float, distance: int, stage: str, **signals: int) -> dict:
    return {
        "product_id": product_id,
        "similarity": similarity,
        "distance": distance,
        "stage": stage,
        "signals": signals,
    }


def _answer(name: str, elapsed_ms: float, *matches: dict) -> dict:
    """One query's answer as a --details results file holds it."""
    return {
        "ok": True,
        "query": {"path": name},
        "index_version": 40,
        "index_size": 40,
        "rule": "balanced",
        "matches": list(matches),
        "elapsed_ms": elapsed_ms,
    }


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """A --details results file and a dedup groups file over the bundled sample images."""
    labels = json.loads((SAMPLES / "labels.json").read_text())["queries"]
    exact = [n for n, q in labels.items() if q["category"] == "1"]
    edited = [n for n, q in labels.items() if q["category"] == "2"][:2]
    assert exact and len(edited) == 2
    queries: dict[str, dict] = {}
    for name in exact:
        pid = labels[name]["matches"][0]
        queries[name] = _answer(name, 1.0, _match(pid, 100.0, 0, "exact", dhash=0))
    # One strong and one weak match each: the threshold filter must drop the weak ones only.
    others = sorted(p.stem for p in INVENTORY.glob("*.jpg"))
    for name in edited:
        pid = labels[name]["matches"][0]
        weak = next(o for o in others if o != pid)
        queries[name] = _answer(
            name, 2.0, _match(pid, 95.31, 3, "dhash", dhash=3), _match(weak, 87.5, 8, "pdq", pdq=40)
        )
    queries["broken.jpg"] = {
        "ok": False,
        "error": {"stage": "decode", "reason": "not_an_image", "detail": "<script>alert(1)</script>"},
    }
    results = {"settings": {"preset": "balanced", "index_version": 40}, "queries": queries}
    a, b, c = others[:3]
    groups = {
        "radius": 10,
        "min_similarity": 84.38,
        "index_version": 40,
        "products": 40,
        "pairs_found": 2,
        "groups_found": 1,
        "products_in_groups": 3,
        "seconds": 0.1,
        "groups": [[a, b, c]],
        "pairs": [[a, b, 98.44], [b, c, 89.06]],
    }
    folder = tmp_path_factory.mktemp("report-in")
    (folder / "near_duplicate_image.json").write_text(json.dumps(results))
    (folder / "near_duplicate_groups.json").write_text(json.dumps(groups))
    return folder / "near_duplicate_image.json", folder / "near_duplicate_groups.json", queries


@pytest.fixture(scope="module")
def page(inputs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    results, groups, _ = inputs
    out = tmp_path_factory.mktemp("report-out") / "report.html"
    # When the user runs the command as documented
    done = subprocess.run(
        [sys.executable, "-m", "producer.cli", "report", str(results), "--groups", str(groups)]
        + ["--images", str(INVENTORY), "--queries", str(QUERIES), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return out


def test_page_is_self_contained(page: Path) -> None:
    text = page.read_text()
    # Every image is inline: nothing points at the file system or the network.
    assert "data:image/jpeg;base64," in text
    assert not re.search(r'src="(?!data:)', text)
    assert "file://" not in text and str(INVENTORY) not in text


def test_rendered_dom_has_every_pair_and_group(page: Path, inputs, tmp_path: Path) -> None:
    _, _, queries = inputs
    dom = browse(page, tmp_path / "profile", "--dump-dom")
    expected = {
        (q, m["product_id"], m["similarity"]) for q, r in queries.items() if r["ok"] for m in r["matches"]
    }
    # Then the script built one row per (query, match) pair, with its similarity
    assert set(match_rows(dom)) == expected
    assert len(match_rows(dom)) == len(expected)
    # and names the stage that matched; query and match thumbnails are rendered as images
    assert '<td class="stage">pdq</td>' in dom and '<td class="stage">exact</td>' in dom
    assert dom.count('class="thumb"') >= 2 * len(expected)
    # and the error is shown as text, never as markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom and "<script>alert(1)</script>" not in dom
    # and the dedup group holds its three products
    groups = re.findall(r'<div class="group" data-group="\d+">(.*?)</div></div></div>', dom)
    assert len(groups) == 1 and groups[0].count('class="member"') == 3


def test_threshold_in_the_url_hides_weaker_matches_and_splits_groups(
    page: Path, inputs, tmp_path: Path
) -> None:
    _, _, queries = inputs
    everything = match_rows(browse(page, tmp_path / "p1", "--dump-dom"))
    # When the page is opened with a 90 % threshold in its address
    dom = browse(page, tmp_path / "p2", "--dump-dom", fragment="#min=90")
    kept = match_rows(dom)
    # Then only matches at or above 90 % remain, and fewer than without the threshold
    assert kept and len(kept) < len(everything)
    assert all(sim >= 90 for _, _, sim in kept)
    assert {r for r in everything if r[2] >= 90} == set(kept)
    assert 'data-min="90"' in dom
    # and the 89.06 % pair no longer links the third product: the group shrinks to two
    groups = re.findall(r'<div class="group" data-group="\d+">(.*?)</div></div></div>', dom)
    assert len(groups) == 1 and groups[0].count('class="member"') == 2


def test_screenshot(page: Path, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    browse(page, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2000")
    # A PNG of the requested size, kept for a human to look at
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 2000)
    assert len(data) > 50_000  # thumbnails drawn, not a blank page


def test_original_shape_and_no_input(tmp_path: Path) -> None:
    # The original {query: [[pid, sim], ...]} shape renders too (no stage column without details)
    from producer.report import build_report, normalise_results

    original = {"q_00002.jpg": [["0624288066", 100.0]], "q_x.jpg": []}
    queries, settings = normalise_results(original)
    assert settings == {} and queries["q_00002.jpg"]["matches"] == [
        {"product_id": "0624288066", "similarity": 100.0}
    ]
    html = build_report(original, images_dir=INVENTORY, queries_dir=QUERIES)
    assert html.count("data:image/jpeg;base64,") == 2  # the query and its match, each once
    # and with nothing to report, the command says so and exits 2
    done = subprocess.run(
        [sys.executable, "-m", "producer.cli", "report"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 2 and "report:" in done.stderr
