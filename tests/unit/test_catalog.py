from __future__ import annotations

from pathlib import Path

from producer.catalog import read_catalog

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def test_seed_csv_first_url_and_tops_filter(tmp_path):
    csv = tmp_path / "seed.csv"
    csv.write_text(
        "productId,imageUrlStr,categories\n"
        "111,https://a/1.jpg;https://a/1b.jpg,Apparel>Women>Tops\n"
        "222,https://a/2.jpg,Apparel>Men>Jeans\n"
        "333,,Apparel>Women>Tops\n"
        "111,https://a/dup.jpg,Apparel>Women>Tops\n"
        "../x,https://a/evil.jpg,Apparel>Women>Tops\n"
        "444,rel/4.jpg,Apparel>Kids>Tops & T-shirts\n"
    )
    report = read_catalog(csv, tops_only=True)
    assert report.items == [("111", "https://a/1.jpg"), ("444", str((tmp_path / "rel/4.jpg").resolve()))]
    assert report.skipped == {"not_tops": 1, "missing_url": 1, "duplicate_id": 1, "bad_product_id": 1}
    assert report.rows == 6
    assert len(read_catalog(csv).items) == 3  # without the filter the jeans row stays


def test_url_list_counts_malformed_non_utf8_and_huge_ids(tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_bytes(
        b"productId,url\n"
        b"1,https://x/1.jpg\n"
        b"no comma here\n"
        b"2,\n"
        b"3\xff\xfe,https://x/3.jpg\n" + b"A" * 10_000 + b",https://x/big.jpg\n"
        b"bad\x07id,https://x/c.jpg\n"
        b"a/b,https://x/s.jpg\n"
    )
    report = read_catalog(lst)
    assert report.items == [("1", "https://x/1.jpg")]
    assert report.skipped == {"malformed_row": 1, "missing_url": 1, "not_utf8": 1, "bad_product_id": 3}
    assert report.examples["not_utf8"] == ["line 5: 3\\xff\\xfe,https://x/3.jpg"]  # its bytes as \xNN


def test_folder_catalog_uses_file_stems(tmp_path):
    (tmp_path / "123.jpg").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "bad id.jpg").write_bytes(b"x")
    report = read_catalog(tmp_path)
    assert report.items == [("123", str((tmp_path / "123.jpg").resolve()))]
    assert report.skipped == {"bad_product_id": 1}


def test_bundled_sample_catalog_reads_clean():
    report = read_catalog(SAMPLES / "catalog.csv", tops_only=True)
    assert len(report.items) == 40 and all(Path(u).exists() for _, u in report.items)
    assert report.skipped == {"not_tops": 3}


def test_a_stray_quote_spoils_only_its_own_row(tmp_path):
    csv = tmp_path / "seed.csv"
    rows = [f"{1000 + k},https://a/{k}.jpg,Apparel>Women>Tops\n" for k in range(10)]
    rows[4] = '1004,"https://a/4.jpg;x,Apparel>Women>Tops\n'  # an opening quote never closed
    csv.write_text("productId,imageUrlStr,categories\n" + "".join(rows))
    report = read_catalog(csv, tops_only=True)
    assert report.rows == 10
    assert len(report.items) == 9 and "1004" not in dict(report.items)
    assert report.skipped == {"malformed_row": 1}
    assert report.examples["malformed_row"] == ["line 6"]


def test_an_empty_catalog_is_said_to_hold_nothing(tmp_path, capsys):
    from producer.commands.ingest import report_catalog

    for name, content in {"empty.csv": b"", "header.csv": b"productId,url\n"}.items():
        (tmp_path / name).write_bytes(content)
        report_catalog(read_catalog(tmp_path / name))
        assert "the catalog holds no rows: nothing to ingest" in capsys.readouterr().err, name
    (tmp_path / "one.csv").write_bytes(b"productId,url\n1,https://x/1.jpg\n")
    report_catalog(read_catalog(tmp_path / "one.csv"))
    assert "no rows" not in capsys.readouterr().err
