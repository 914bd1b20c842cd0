"""LazySignatures: a query's costly, rarely read views are made on first read, and the dict otherwise
behaves as the eager one."""

from __future__ import annotations

import copy
import io
import pickle

import numpy as np
import pytest
from PIL import Image

from common.match import describe, photometric, verify
from common.signals import signal_set
from common.signals.lazy import LazySignatures
from tests.support import samplegen


def _lazy(made: list[str]) -> LazySignatures:
    def maker(key: str, value: bytes):
        def make() -> bytes:
            made.append(key)
            return value

        return make

    return LazySignatures({"a": b"1"}, {"b": maker("b", b"2"), "c": maker("c", b"3")})


def test_values_are_made_on_first_read_only() -> None:
    made: list[str] = []
    sigs = _lazy(made)
    assert "b" in sigs and "zz" not in sigs and len(sigs) == 3 and set(sigs) == {"a", "b", "c"}
    assert made == []
    assert sigs["b"] == b"2" and sigs.get("b") == b"2" and sigs.get("zz", b"-") == b"-"
    assert made == ["b"]
    assert sigs.pending() == ["c"]


def test_whole_dict_reads_make_the_rest() -> None:
    made: list[str] = []
    sigs = _lazy(made)
    assert sigs == {"a": b"1", "b": b"2", "c": b"3"} and sorted(made) == ["b", "c"]
    assert _lazy([]).items() == {"a": b"1", "b": b"2", "c": b"3"}.items()
    plain = {"a": b"1", "b": b"2", "c": b"3"}
    assert plain.__eq__(_lazy([])) is False  # dict's own == sees only what is made...
    assert plain == _lazy([])  # ...but Python asks the subclass first


def test_copies_and_pickles_are_plain_dicts() -> None:
    for twin in (copy.copy(_lazy([])), copy.deepcopy(_lazy([])), pickle.loads(pickle.dumps(_lazy([])))):
        assert type(twin) is dict and twin == {"a": b"1", "b": b"2", "c": b"3"}
    assert dict(_lazy([])) == {"a": b"1", "b": b"2", "c": b"3"}


def test_writes_replace_the_maker() -> None:
    made: list[str] = []
    sigs = _lazy(made)
    sigs["b"] = b"x"
    assert sigs["b"] == b"x" and "b" not in sigs.pending()


def test_a_query_makes_its_thumbnails_and_mirror_keypoints_on_use() -> None:
    im = samplegen.render_product(np.random.default_rng(3))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    query = describe.describe(Image.open(io.BytesIO(data)).convert("RGB"), data, query=True)
    assert isinstance(query, LazySignatures)
    assert sorted(query.pending()) == sorted([signal_set.THUMB, signal_set.ORB_MIRROR, signal_set.THUMB_FINE])
    # The same bytes the eager describe made: the mirror's keypoints from its own RGB copy.
    work = describe.normalise.despeckled(describe.working_copy(Image.open(io.BytesIO(data)).convert("RGB")))
    mirror = work.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    assert query[signal_set.ORB_MIRROR] == verify.pack(verify.extract(mirror))
    fine = photometric.thumbnail(work, photometric.FINE_SIDE, lossless=True)
    assert query[signal_set.THUMB_FINE] == fine  # a query's own: exact (never stored)
    stored = describe.describe(Image.open(io.BytesIO(data)).convert("RGB"), data)
    assert type(stored) is dict  # ingest: nothing deferred
    # the query's thumbnail, made on use, holds the planes the stored one encodes (lossy: within WebP's loss)
    mine, theirs = (
        photometric.unpack_thumb(query[signal_set.THUMB]),
        photometric.unpack_thumb(stored[signal_set.THUMB]),
    )
    assert query[signal_set.THUMB] == photometric.thumbnail(work, lossless=True)
    assert mine.luma.shape == theirs.luma.shape and np.abs(mine.luma - theirs.luma.astype(float)).mean() < 3


def test_a_failing_maker_stays_and_raises_again() -> None:
    calls: list[int] = []

    def broken() -> bytes:
        calls.append(1)
        raise ValueError("cannot make it")

    sigs = LazySignatures({"a": b"1"}, {"b": broken})
    for _ in range(2):
        with pytest.raises(ValueError):
            sigs["b"]
        assert "b" in sigs and sigs.pending() == ["b"]  # not silently gone after the first failure
    assert len(calls) == 2
