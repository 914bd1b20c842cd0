"""The README's first command, run as a user runs it: a subprocess in an empty folder, embedded mode."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLES

pytestmark = pytest.mark.system


def readme_run_command() -> str:
    """The `neardup run ...` line of the README's quick start, so the test follows the docs."""
    text = (ROOT / "README.md").read_text()
    found = re.search(r"^(neardup run [^\n`]+)$", text, flags=re.M)
    assert found, "README lost its `neardup run` quick-start line"
    return found.group(1)


def test_readme_first_command_writes_the_json(tmp_path: Path) -> None:
    # Given a clean folder and no NEARDUP_* settings (embedded mode), the sample data copied in
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEARDUP_")}
    env["NEARDUP_WORKERS"] = "2"
    cmd = readme_run_command().replace("samples/", f"{SAMPLES}/")

    def run_readme_command() -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "producer.cli", *cmd.split()[1:]]
        env_run = {**env, "PYTHONPATH": str(ROOT)}
        return subprocess.run(argv, cwd=tmp_path, env=env_run, capture_output=True, text=True, timeout=240)

    # When the README's command runs
    proc = run_readme_command()

    # Then it succeeds and writes near_duplicate_image.json in the original shape
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / "near_duplicate_image.json").read_text())
    labels = json.loads((SAMPLES / "labels.json").read_text())
    assert set(out) == set(labels["queries"])
    for matches in out.values():
        for pid, similarity in matches:
            assert isinstance(pid, str) and 0 < similarity <= 100
        sims = [m[1] for m in matches]
        assert sims == sorted(sims, reverse=True)
    # every exact copy finds its product at 100 %, and no distractor matches anything
    for name, q in labels["queries"].items():
        if q["category"] == "1":
            assert [q["matches"][0], 100.0] in out[name]
        if q["category"] == "distractor":
            assert out[name] == [], name
    assert "ingest:" in proc.stderr and "query:" in proc.stderr

    # And a second run reuses the index kept on disk: nothing is downloaded again
    again = run_readme_command()
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already indexed" in again.stderr
    assert json.loads((tmp_path / "near_duplicate_image.json").read_text()) == out
