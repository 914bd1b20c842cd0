"""The accuracy benchmark in small, through the real system: what CI can afford of issue #4's table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.system


def test_verified_presets_beat_the_original_rule_end_to_end(tmp_path: Path) -> None:
    # Given a generated labelled set of 20 products (every kind of near duplicate, and distractors)
    out = tmp_path / "scores.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEARDUP_")}
    env.update(PYTHONPATH=str(ROOT), NEARDUP_WORKERS="2")

    # When the benchmark runs `neardup run` for every preset (embedded Redis and real workers)
    cmd = [sys.executable, "benchmarks/bench_accuracy.py", "--system", "--no-devset", "--generated", "20",
           "--json", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = json.loads(out.read_text())["generated"]

    # Then the scores come from the real system and the verified presets beat the original rule
    assert "mode: system" in proc.stdout
    original, balanced = scores["original"], scores["balanced"]
    assert balanced["recall_by_criterion"]["1"] == 1.0  # every exact copy
    assert balanced["f1"] > original["f1"]
    assert balanced["recall_by_criterion"]["4"] > original["recall_by_criterion"]["4"]
    assert balanced["distractor_false_match_rate"] <= original["distractor_false_match_rate"]
    assert balanced["precision"] >= 0.85
