"""The HTML report renders, in headless Chromium, for a query named like markup and for a NaN
similarity (both once left a blank page with exit 0)."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.system.test_report_browser import browse

pytestmark = pytest.mark.system
HOSTILE = ["<!--<script>.jpg", "</script><b>x</b>.jpg", "a&amp;<!--b.jpg"]


def test_the_report_renders_for_markup_in_names_and_a_nan_similarity(tmp_path: Path):
    # Given results whose query keys are markup, one of them with a NaN similarity
    results = {name: [["1001", 97.5]] for name in HOSTILE}
    results["nan.jpg"] = [["1002", float("nan")], ["1003", 90.0]]
    source = tmp_path / "results.json"
    source.write_text(json.dumps(results))  # Python writes NaN, as a careless producer would
    page = tmp_path / "report.html"
    # When the report is made
    made = subprocess.run(
        [sys.executable, "-m", "producer.cli", "report", str(source), "-o", str(page)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert made.returncode == 0, made.stderr
    # Then the browser runs its script: every query's rows are there, names shown as text
    dom = browse(page, tmp_path / "profile", "--dump-dom")
    rows = [
        dict(re.findall(r'data-([a-z]+)="([^"]*)"', attrs))
        for attrs in re.findall(r'<tr class="match"([^>]*)>', dom)
    ]
    shown = {(html.unescape(r["query"]), r["product"]) for r in rows}
    assert shown == {(name, "1001") for name in HOSTILE} | {("nan.jpg", "1002"), ("nan.jpg", "1003")}, rows
    assert "n/a" in dom  # the NaN similarity, shown as unknown
    assert "<b>x</b>" not in dom  # a name is text, never markup
