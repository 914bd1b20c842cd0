"""Feedback and removal across restarts of the embedded stack: each `neardup` command below starts its
own private redis-server (and workers when it needs them) on one data dir and stops it afterwards, as
a user runs them with no NEARDUP_REDIS_URL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLES

pytestmark = pytest.mark.system

A, B, C = "0827601110", "q_00003", "0149978036"  # B: A re-encoded at JPEG q15


def test_feedback_survives_restarts_of_the_embedded_stack(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEARDUP_")}
    env |= {"NEARDUP_WORKERS": "1", "NEARDUP_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)}

    def neardup(*args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "producer.cli", *args]
        run_env = env | (extra or {})
        return subprocess.run(argv, cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=240)

    # Given three products ingested by one command (its stack stopped afterwards)
    catalog = tmp_path / "catalog.csv"
    photos = {A: SAMPLES / "inventory" / f"{A}.jpg", B: SAMPLES / "queries" / f"{B}.jpg"}
    photos[C] = SAMPLES / "inventory" / f"{C}.jpg"
    catalog.write_text("".join(f"{pid},{path}\n" for pid, path in photos.items()))
    done = neardup("ingest", str(catalog), "-q")
    assert done.returncode == 0, done.stderr[-2000:]

    # When a reviewer marks A / B as not a duplicate (another command, another stack)
    marked = neardup("feedback", "--not-duplicate", A, B)
    assert marked.returncode == 0 and "not_duplicate" in marked.stderr, marked.stderr[-2000:]

    # Then, after restarts, status shows it, and neither a query by id nor by A's photo lists B
    status = neardup("status")
    assert "feedback: 1 pairs marked not-duplicate" in status.stdout, status.stdout
    q = neardup("query", str(photos[A]), "--product-id", A, "-q", "-o", "out.json")
    assert q.returncode == 0, q.stderr[-2000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert [pid for pid, _ in out[A]] == [] and [pid for pid, _ in out[f"{A}.jpg"]] == []
    # (the photo's own product A is excluded as the query's own; without feedback B would be listed)
    d = neardup("dedup", "-q", "-o", "groups.json")
    assert d.returncode == 0, d.stderr[-2000:]
    groups = json.loads((tmp_path / "groups.json").read_text())
    assert all(not {A, B} <= set(g) for g in groups["groups"])
    assert groups["feedback"]["not_duplicate"] == [sorted([A, B])]
    listed = neardup("feedback")
    assert json.loads(listed.stdout)["not_duplicate"] == [sorted([A, B])]

    # And a removal also persists: the next status counts one product less
    removed = neardup("remove", C, "9999999999")
    assert removed.returncode == 1 and "1 removed, 1 not indexed" in removed.stderr, removed.stderr
    assert "index: 2 products" in neardup("status").stdout

    # Clearing the verdict brings the match back, in a fresh stack again
    assert neardup("feedback", "--clear", A, B).returncode == 0
    q = neardup("query", "--product-id", A, "-q", "-o", "out.json")
    assert [pid for pid, _ in json.loads((tmp_path / "out.json").read_text())[A]] == [B]

    # A cut-off set in the environment is the one applied, and --details reports it as applied
    extra = {"NEARDUP_PRESET": "original", "NEARDUP_MAX_DISTANCE": "2"}
    q = neardup("query", "--product-id", A, "--details", "-q", "-o", "d.json", extra=extra)
    assert q.returncode == 0, q.stderr[-2000:]
    details = json.loads((tmp_path / "d.json").read_text())
    assert details["settings"]["preset"] == "original"
    assert (details["settings"]["max_distance"], details["settings"]["min_similarity"]) == (2, None)
    assert details["queries"][A]["rule"] == "original+d2"
