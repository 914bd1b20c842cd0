"""Catalogs as careless users write them: header case and spacing, blank lines, semicolons and tabs,
quoted fields with newlines, extra columns, UTF-16, NUL bytes, devices, symlink loops."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from producer.catalog import CatalogError, read_catalog

ROWS = [("111", "https://a/1.jpg", "Apparel>Women>Tops"), ("222", "https://a/2.jpg", "Apparel>Men>Jeans")]


def write(tmp_path: Path, text: str, name: str = "cat.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "header",
    [
        "productId,imageUrlStr,categories",
        "ProductID,ImageUrlStr,Categories",
        " productId , imageUrlStr , categories",
    ],
)
def test_seed_header_is_matched_case_insensitively_and_trimmed(tmp_path, header):
    text = header + "\n" + "".join(f"{p}, {u} ,{c}\n" for p, u, c in ROWS)
    report = read_catalog(write(tmp_path, text), tops_only=True)
    assert report.items == [("111", "https://a/1.jpg")]
    assert report.skipped == {"not_tops": 1}
    assert report.kind == "seed CSV, 3 columns, delimiter ',', with categories"


def test_blank_lines_before_and_between_rows_are_skipped(tmp_path):
    text = "\n\n  \nproductId,imageUrlStr,categories\n\n" + "".join(f"{p},{u},{c}\n\n" for p, u, c in ROWS)
    report = read_catalog(write(tmp_path, text))
    assert [pid for pid, _ in report.items] == ["111", "222"] and report.rows == 2
    assert "seed CSV" in report.kind


@pytest.mark.parametrize(("delimiter", "shown"), [(";", "';'"), ("\t", "tab")])
def test_the_delimiter_is_sniffed_and_reported(tmp_path, delimiter, shown):
    # imageUrlStr joins URLs with ';' too: in a ';'-separated file they are quoted
    rows = [f'{p}{delimiter}"{u};https://a/more.jpg"{delimiter}{c}\n' for p, u, c in ROWS]
    text = delimiter.join(["productId", "imageUrlStr", "categories"]) + "\n" + "".join(rows)
    report = read_catalog(write(tmp_path, text), tops_only=True)
    assert report.items == [("111", "https://a/1.jpg")]
    assert report.kind == f"seed CSV, 3 columns, delimiter {shown}, with categories"
    assert f"(seed CSV, 3 columns, delimiter {shown}" in report.summary()


def test_a_quoted_field_with_a_newline_is_one_row(tmp_path):
    text = 'productId,imageUrlStr,categories\n111,https://a/1.jpg,"Apparel>\nWomen>Tops"\n222,https://a/2.jpg,x\n'
    report = read_catalog(write(tmp_path, text), tops_only=True)
    assert report.rows == 2 and report.items == [("111", "https://a/1.jpg")]
    assert report.skipped == {"not_tops": 1}


def test_a_url_list_third_column_is_not_glued_onto_the_path(tmp_path):
    report = read_catalog(write(tmp_path, "1,img/1.jpg,Apparel>Tops\n2,https://a/2.jpg,x\n"))
    assert report.items == [("1", str((tmp_path / "img/1.jpg").resolve())), ("2", "https://a/2.jpg")]
    assert report.kind == "URL list, delimiter ',', no header"


def test_a_url_list_with_a_header_in_any_order(tmp_path):
    report = read_catalog(write(tmp_path, "URL;Product_ID\nhttps://a/1.jpg;1\n"))
    assert report.items == [("1", "https://a/1.jpg")]
    assert report.kind == "URL list, delimiter ';', with a header"


def test_tops_only_on_a_catalog_without_categories_says_it_is_ignored(tmp_path):
    report = read_catalog(write(tmp_path, "productId,url\n1,https://a/1.jpg\n"), tops_only=True)
    assert report.items == [("1", "https://a/1.jpg")]
    assert report.notes == ["--tops-only ignored: this URL list has no categories"]


def test_a_utf16_catalog_is_read(tmp_path):
    path = tmp_path / "u16.csv"
    path.write_bytes("productId,imageUrlStr,categories\n111,https://a/1.jpg,Tops\n".encode("utf-16"))
    assert read_catalog(path).items == [("111", "https://a/1.jpg")]


def test_a_row_holding_a_nul_byte_fails_that_row_only(tmp_path):
    path = tmp_path / "nul.csv"
    path.write_bytes(b"productId,imageUrlStr,categories\n1\x002,https://a/x.jpg,T\n111,https://a/1.jpg,T\n")
    report = read_catalog(path)
    assert report.items == [("111", "https://a/1.jpg")] and report.skipped == {"malformed_row": 1}


def test_a_symlink_loop_fails_its_own_row_only(tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    report = read_catalog(write(tmp_path, "1,loop/x.jpg\n2,https://a/2.jpg\n"))
    assert report.items == [("2", "https://a/2.jpg")] and report.skipped == {"bad_path": 1}


@pytest.mark.parametrize("target", ["/dev/zero", "binary"])
def test_a_device_or_a_binary_file_is_refused_clearly(tmp_path, target):
    if target == "binary":
        target = str(tmp_path / "blob.bin")
        Path(target).write_bytes(os.urandom(64) + b"\x00" * 4000)
    with pytest.raises(CatalogError, match="not a regular file|looks binary"):
        read_catalog(Path(target))
