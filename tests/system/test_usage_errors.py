"""Bad usage, input or configuration ends as one clear line and exit 2 — never a traceback, and never
after the work was done. Each case runs the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLES

pytestmark = pytest.mark.system
CLI = [sys.executable, "-m", "producer.cli"]


def run(tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("NEARDUP_")}
    base.update(PYTHONPATH=str(ROOT), NEARDUP_DATA_DIR=str(tmp / "data"), NEARDUP_WORKERS="1")
    return subprocess.run(
        [*CLI, *args], env={**base, **env}, capture_output=True, text=True, timeout=120, cwd=tmp
    )


def assert_usage_error(proc: subprocess.CompletedProcess, words: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    # one message (argparse prints its usage lines before it; a bad configuration lists every bad
    # variable, one indented line each, under one heading)
    lines = [
        line for line in proc.stderr.splitlines() if line.strip() and not line.startswith((" ", "usage:"))
    ]
    assert len(lines) == 1 and words in proc.stderr, proc.stderr


def inputs(tmp: Path) -> dict[str, str]:
    (tmp / "a-file").write_text("x")
    (tmp / "outdir").mkdir()
    for name, content in {"list": [["a"]], "list5": [5], "matches5": {"q": {"matches": 5}}}.items():
        (tmp / f"{name}.json").write_text(json.dumps(content))
    (tmp / "ok.json").write_text(json.dumps({"q.jpg": [["1", 99.0]]}))
    return {"tmp": str(tmp)}


CASES = [
    # (id, argv, env, words in the message)
    ("traversal id", ["query", "--product-id", "../etc"], {}, "bad_product_id"),
    ("empty id", ["query", "--product-id", ""], {}, "bad_product_id"),
    ("id given as a file", ["query", "0149978036"], {}, "0149978036 (an indexed product? --product-id"),
    ("a missing photo", ["query", "{tmp}/gone.jpg"], {}, "query input not found"),
    ("unknown plugin", ["status"], {"NEARDUP_PLUGINS": "nosuch"}, "unknown plugin nosuch"),
    (
        "data dir under a file",
        ["status"],
        {"NEARDUP_DATA_DIR": "{tmp}/a-file/sub"},
        "cannot use NEARDUP_DATA_DIR",
    ),
    ("empty data dir", ["status"], {"NEARDUP_DATA_DIR": ""}, "must not be empty"),
    ("output is a dir", ["query", "--product-id", "1", "-o", "{tmp}/outdir"], {}, "is a directory"),
    ("output folder missing", ["query", "--product-id", "1", "-o", "{tmp}/no/x.json"], {}, "does not exist"),
    ("report [['a']]", ["report", "{tmp}/list.json", "-o", "{tmp}/r.html"], {}, "report:"),
    ("report [5]", ["report", "{tmp}/list5.json", "-o", "{tmp}/r.html"], {}, "report:"),
    ("report matches 5", ["report", "{tmp}/matches5.json", "-o", "{tmp}/r.html"], {}, "report:"),
    ("report of a dir", ["report", "{tmp}/outdir", "-o", "{tmp}/r.html"], {}, "is not a file"),
    ("thumb size 0", ["report", "{tmp}/ok.json", "--thumb-size", "0"], {}, "16 to 1024"),
    ("/dev/zero catalog", ["ingest", "/dev/zero"], {}, "not a regular file"),
    ("negative timeout", ["query", "--product-id", "1", "--timeout", "-5"], {}, "finite number > 0"),
    ("retries -1", ["status"], {"NEARDUP_FETCH_RETRIES": "-1"}, "must be >= 0"),
    ("redirects -5", ["status"], {"NEARDUP_MAX_REDIRECTS": "-5"}, "must be >= 0"),
    ("connect timeout inf", ["status"], {"NEARDUP_CONNECT_TIMEOUT": "inf"}, "finite number > 0"),
]


@pytest.mark.parametrize(("argv", "env", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_usage_is_one_clear_line_and_exit_2(tmp_path: Path, argv: list[str], env: dict, words: str):
    fill = inputs(tmp_path)
    proc = run(tmp_path, *(a.format(**fill) for a in argv), **{k: v.format(**fill) for k, v in env.items()})
    assert_usage_error(proc, words)
    assert not (tmp_path / "data" / "redis.sock").exists()  # refused before any stack started


def test_a_symlink_loop_in_one_row_fails_that_row_only(tmp_path: Path):
    # Given a catalog whose first row's path is a symlink loop and whose second row is a good photo
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    photo = sorted((SAMPLES / "inventory").iterdir())[0]
    catalog = tmp_path / "cat.csv"
    catalog.write_text(f"productId,url\n1,loop/x.jpg\n2,{photo}\n")
    # When it is ingested
    proc = run(tmp_path, "ingest", str(catalog), "--quiet")
    # Then the good row is indexed, the loop is counted, and the exit code is 0 (no product failed)
    assert proc.returncode == 0, proc.stderr
    assert "1 skipped: bad_path" in proc.stderr and "1 indexed, 0 failed" in proc.stderr
