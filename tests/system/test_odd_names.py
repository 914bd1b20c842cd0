"""Odd names through the real CLI (embedded stack): ':' in the catalog, query and data dir paths, a file
name that is not UTF-8, a URL holding a non-UTF-8 byte, symlinked query files, and copies of an indexed
photo under different names."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLES

pytestmark = pytest.mark.system
CLI = [sys.executable, "-m", "producer.cli"]


def run(data_dir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEARDUP_")}
    env.update(PYTHONPATH=str(ROOT), NEARDUP_DATA_DIR=str(data_dir), NEARDUP_WORKERS="2")
    env["NEARDUP_ALLOW_PRIVATE_URLS"] = "1"
    return subprocess.run([*CLI, *args], env=env, capture_output=True, timeout=timeout)


def matches(result: dict, key: str) -> dict[str, float]:
    return {pid: sim for pid, sim in result[key]}


def test_odd_names_and_paths_are_queried_under_their_own_names(tmp_path: Path):
    # Given a catalog folder, a query folder and a data dir whose paths hold ':'
    inventory = sorted((SAMPLES / "inventory").iterdir())[:4]
    pids = [p.stem for p in inventory]
    catalog = tmp_path / "cat:alog"
    catalog.mkdir()
    for photo in inventory:
        shutil.copy(photo, catalog / photo.name)
    data_dir = tmp_path / "data:dir"
    queries = tmp_path / "que:ries"
    queries.mkdir()
    # a copy under a name that is not UTF-8; two links to one indexed photo; byte-identical copies
    # under the product's own name and under another name
    bad_name = os.fsdecode(b"bad\xff.jpg")
    shutil.copy(catalog / inventory[0].name, queries / bad_name)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(catalog / inventory[1].name, elsewhere / "target.jpg")
    (queries / "link-a.jpg").symlink_to(elsewhere / "target.jpg")
    (queries / "link-b.jpg").symlink_to(elsewhere / "target.jpg")
    shutil.copy(catalog / inventory[2].name, queries / inventory[2].name)
    shutil.copy(catalog / inventory[2].name, queries / "other.jpg")

    # When the catalog is ingested
    ingest = run(data_dir, "ingest", str(catalog), "--quiet")
    # Then every image is indexed (the roots travel as a list, not joined on ':')
    assert ingest.returncode == 0, ingest.stderr.decode()
    assert b"4 indexed, 0 failed" in ingest.stderr

    # When the query folder, the indexed photo itself and a URL holding a non-UTF-8 byte are queried
    out = tmp_path / "out.json"
    own = catalog / inventory[3].name
    url = os.fsdecode(b"http://127.0.0.1:9/x\xfe.jpg")
    query = run(data_dir, "query", str(queries), str(own), url, "-o", str(out), "--quiet", timeout=120)
    result = json.loads(out.read_text())

    # Then it answers every query without hanging; only the unreachable URL is an error (exit 1)
    assert query.returncode == 1, query.stderr.decode()
    assert b"1 errors" in query.stderr
    assert set(result) == {
        "bad\\xff.jpg",
        "link-a.jpg",
        "link-b.jpg",
        inventory[2].name,
        "other.jpg",
        inventory[3].name,
        "http://127.0.0.1:9/x\\xfe.jpg",
    }
    # the file with the undecodable name is matched like any other
    assert matches(result, "bad\\xff.jpg")[pids[0]] == 100.0
    # two links to one photo are two queries, each under its own name
    assert matches(result, "link-a.jpg")[pids[1]] == 100.0 == matches(result, "link-b.jpg")[pids[1]]
    # a byte-identical copy lists its product whatever the copy is called
    assert matches(result, inventory[2].name) == matches(result, "other.jpg")
    assert matches(result, "other.jpg")[pids[2]] == 100.0
    # and only the very file a product was indexed from does not list that product
    assert pids[3] not in matches(result, inventory[3].name)
    # the errored query is [] in the seed shape (like a query without a match); its error is beside it
    assert result["http://127.0.0.1:9/x\\xfe.jpg"] == []
    errors = json.loads((tmp_path / "out.errors.json").read_text())
    assert list(errors) == ["http://127.0.0.1:9/x\\xfe.jpg"] and errors[list(errors)[0]]["reason"]

    # When a later query has no error, Then no stale error list is left beside its output
    again = run(data_dir, "query", str(own), "-o", str(out), "--quiet")
    assert again.returncode == 0, again.stderr.decode()
    assert not (tmp_path / "out.errors.json").exists()
