"""The HTML report carries each group's canonical member and the review feedback dedup applied."""

from __future__ import annotations

import json

from producer.report import build_report

TAG = '<script type="application/json" id="data">'


def embedded(page: str) -> dict:
    start = page.index(TAG) + len(TAG)
    return json.loads(page[start : page.index("</script>", start)].replace("<\\/", "</"))


def test_groups_name_the_member_to_keep_and_list_the_feedback():
    groups = {
        "radius": 8,
        "groups": [["a", "b"]],
        "pairs": [["a", "b", 98.4, "pdq"]],  # dedup writes the stage as a fourth field
        "canonical": ["b"],
        "canonical_rule": "earliest",
        "feedback": {"not_duplicate": [["a", "c"]], "duplicate": [["a", "b"]]},
    }
    data = embedded(build_report(groups=groups))["groups"]
    assert data["canonical"] == ["b"] and data["canonical_rule"] == "earliest"
    assert data["feedback"] == {"not_duplicate": [["a", "c"]], "duplicate": [["a", "b"]]}
    assert data["pairs"] == [["a", "b", 98.4]]
    page = build_report(groups=groups)
    assert 'id="feedback-section"' in page and "renderFeedback" in page


def test_groups_file_without_the_new_fields_still_reads():
    data = embedded(build_report(groups={"groups": [["a", "b"]]}))["groups"]
    assert data["canonical"] == [] and data["feedback"] == {"not_duplicate": [], "duplicate": []}
