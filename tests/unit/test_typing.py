"""The type-checking promise: `mypy` with no arguments, from the repository root, passes (the
[tool.mypy] section of pyproject.toml names what it checks and holds common/ to --strict)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_passes_on_the_configured_packages():
    pytest.importorskip("mypy", reason="mypy is in the test extra")
    done = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success: no issues found" in done.stdout
