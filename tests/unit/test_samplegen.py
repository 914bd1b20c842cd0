"""The sample generator: deterministic, devset-shaped labels, every query kind present."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from tests.support import samplegen


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("gen")
    return out, samplegen.generate(out, n_products=8, n_queries_per_kind=1, seed=3, n_other=2)


def test_same_seed_gives_identical_bytes(generated: tuple[Path, dict], tmp_path: Path) -> None:
    # Given the same seed and sizes, When generated again elsewhere, Then every file is byte-identical.
    out, _ = generated
    samplegen.generate(tmp_path, n_products=8, n_queries_per_kind=1, seed=3, n_other=2)
    assert _digest(tmp_path) == _digest(out)


def test_other_seed_differs(generated: tuple[Path, dict], tmp_path: Path) -> None:
    labels = samplegen.generate(tmp_path, n_products=8, n_queries_per_kind=1, seed=4, n_other=2)
    assert labels["inventory"] != generated[1]["inventory"]


def test_labels_have_the_devset_schema(generated: tuple[Path, dict]) -> None:
    out, labels = generated
    assert json.loads((out / "labels.json").read_text()) == labels
    assert {"counts", "inventory", "queries", "version"} <= set(labels)
    assert len(labels["inventory"]) == 8
    assert all(len(pid) == 10 and pid.isdigit() for pid in labels["inventory"])
    for name, q in labels["queries"].items():
        assert set(q) == {"category", "ignore", "matches", "transform"}
        assert (out / "queries" / name).is_file()
        assert set(q["matches"]) | set(q["ignore"]) <= set(labels["inventory"])
    for pid in labels["inventory"]:
        assert Image.open(out / "inventory" / f"{pid}.jpg").size == (samplegen.WIDTH, samplegen.HEIGHT)


def test_every_kind_is_present_once_per_kind(generated: tuple[Path, dict]) -> None:
    _, labels = generated
    queries = labels["queries"]
    assert len(queries) == len(samplegen.KINDS)
    ops = {q["transform"].split()[0] for q in queries.values() if q["category"] in ("2", "4")}
    assert ops == set(samplegen.EDITS)
    assert labels["counts"] == {"1": 1, "2": 6, "4": 5, "distractor": 1, "variant": 1}


def test_exact_query_is_a_byte_copy(generated: tuple[Path, dict]) -> None:
    out, labels = generated
    ((name, q),) = [(n, q) for n, q in labels["queries"].items() if q["category"] == "1"]
    assert (out / "queries" / name).read_bytes() == (
        out / "inventory" / f"{q['matches'][0]}.jpg"
    ).read_bytes()


def test_catalog_csv_has_relative_paths_and_non_tops(generated: tuple[Path, dict]) -> None:
    out, labels = generated
    with (out / "catalog.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["productId", "imageUrlStr", "categories"]
    assert len(rows) == 10
    tops = [r for r in rows if "Tops" in r["categories"]]
    assert sorted(r["productId"] for r in tops) == labels["inventory"]
    assert sum(r["categories"] == samplegen.OTHER_CATEGORY for r in rows) == 2
    for r in rows:
        first = r["imageUrlStr"].split(";")[0]
        assert not Path(first).is_absolute()
        assert (out / first).is_file()
