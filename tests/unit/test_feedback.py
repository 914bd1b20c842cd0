"""Review feedback and canonical members: pure logic (groups never join a rejected pair)."""

from __future__ import annotations

import json

import pytest

from common.errors import BadRequest
from common.index import canonical, feedback


def fb(**verdicts: str) -> feedback.Feedback:
    return feedback.Feedback({tuple(k.split("_")): v for k, v in verdicts.items()})


def test_pair_of_orders_and_rejects_bad_ids():
    assert feedback.pair_of("b", "a") == ("a", "b")
    for bad in [("a", "a"), ("a", "../x"), ("a", 5)]:
        with pytest.raises(BadRequest):
            feedback.pair_of(*bad)


def test_from_hash_skips_damaged_entries():
    raw = {
        b"a\tb": json.dumps({"verdict": "not_duplicate"}).encode(),
        b"c\td": b"{not json",
        b"e\tf": json.dumps({"verdict": "maybe"}).encode(),
    }
    got = feedback.Feedback.from_hash(raw, version=4)
    assert got.verdicts == {("a", "b"): "not_duplicate"} and got.version == 4
    assert got.exclusions() == {"a": frozenset({"b"}), "b": frozenset({"a"})}


def test_rejected_pair_never_shares_a_group_even_through_a_third():
    # Given A~C and C~B found, and A/B rejected by a reviewer
    found = [("A", "C"), ("B", "C"), ("D", "E")]
    groups = feedback.constrained_groups(found, fb(A_B="not_duplicate"))
    # Then A and B are in different groups (the better pair, listed first, wins C)
    assert sorted(groups) == [["A", "C"], ["D", "E"]]
    assert all(not {"A", "B"} <= set(g) for g in groups)
    # without feedback, the same pairs make one group of three
    assert sorted(feedback.constrained_groups(found, feedback.Feedback())) == [["A", "B", "C"], ["D", "E"]]


def test_confirmed_pairs_are_always_grouped():
    groups = feedback.constrained_groups([("A", "B")], fb(C_D="duplicate", A_C="not_duplicate"))
    assert sorted(groups) == [["A", "B"], ["C", "D"]]
    # a confirmed pair of a product outside the universe (removed) is left out
    assert feedback.constrained_groups([], fb(C_D="duplicate"), universe={"C"}) == []


def test_bans_follow_merged_groups():
    # A-B rejected; A joins X, B joins Y; then X~Y must not merge the two groups
    found = [("A", "X"), ("B", "Y"), ("X", "Y")]
    groups = feedback.constrained_groups(found, fb(A_B="not_duplicate"))
    assert sorted(groups) == [["A", "X"], ["B", "Y"]]


def test_banned_for_anchors():
    ex = fb(A_B="not_duplicate", A_C="duplicate").exclusions()
    assert feedback.banned_for({"A"}, ex) == {"B"} and feedback.banned_for({"C"}, ex) == set()


def test_canonical_rules():
    members = ["b", "a", "c"]
    info = {"a": (30, {"pixels": 100}), "b": (10, {"pixels": 400, "bytes": 5}), "c": (None, {"pixels": 400})}
    assert canonical.canonical(members, info, "earliest") == "c"  # no order recorded: indexed before
    assert canonical.canonical(["a", "b"], info, "earliest") == "b"
    assert canonical.canonical(members, info, "largest") == "b"  # same pixels as c, more bytes
    assert canonical.canonical(members, info, "smallest-id") == "a"


def test_image_info_reads_the_header():
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (30, 20)).save(buf, "PNG")
    assert canonical.image_info(buf.getvalue()) == {"bytes": len(buf.getvalue()), "pixels": 600}
    assert canonical.image_info(b"junk") == {"bytes": 4}
