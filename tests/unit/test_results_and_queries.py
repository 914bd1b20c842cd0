from __future__ import annotations

import json

import pytest

from common.config.settings import Settings
from common.errors import BadRequest
from common.ids import check_product_id
from common.match.querying import parse_request
from producer.results import original_shape, write_json_atomic

S = Settings.from_env({})


def test_original_shape_and_atomic_write(tmp_path):
    results = {
        "q1": {
            "ok": True,
            "matches": [{"product_id": "b", "similarity": 100.0}, {"product_id": "a", "similarity": 90.62}],
        },
        "q2": {"ok": False, "error": {"reason": "not_image"}},
    }
    out = tmp_path / "near_duplicate_image.json"
    write_json_atomic(out, original_shape(results))
    assert json.loads(out.read_text()) == {"q1": [["b", 100.0], ["a", 90.62]], "q2": []}
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temp file left behind


@pytest.mark.parametrize("bad", ["../etc", "a/b", "x" * 200, "bad\nid", "", "é", "a..b"])
def test_unsafe_product_ids_are_refused(bad):
    with pytest.raises(BadRequest):
        check_product_id(bad)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({}, "need_one_source"),
        ({"url": "http://x/a.jpg", "product_id": "1"}, "need_one_source"),
        ({"product_id": 5}, "bad_type"),
        ({"product_id": "1", "colour": "red"}, "unknown_field"),
        ({"product_id": "1", "limit": "ten"}, "bad_type"),
        ({"product_id": "1", "limit": True}, "bad_type"),
        ({"product_id": "1", "preset": "zzz"}, "bad_preset"),
        ({"product_id": "1", "max_distance": 65}, "bad_value"),
        ({"image_b64": "A" * (S.max_query_bytes * 2)}, "too_large"),
        ({"product_id": "../../etc/passwd"}, "bad_product_id"),
    ],
)
def test_bad_query_messages_get_a_reason(kwargs, reason):
    with pytest.raises(BadRequest) as err:
        parse_request(kwargs, S)
    assert err.value.reason == reason


def test_similarity_override_maps_to_distance():
    req = parse_request({"product_id": "1", "min_similarity": 90}, S)
    assert req.rule.max_distance == 6 and req.exclude == "1"


def test_output_file_mode_follows_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "out.json", {"q": []})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.json").stat().st_mode) == 0o644
