"""The matching pipeline on generated photos: exact, edits and crops found; others not; exclude; order."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from common.index import orb_words
from common.index.snapshot import Snapshot
from common.match import confirm, describe, pipeline, presets
from common.match.pairs import verify_pairs
from common.signals import signal_set
from common.signals.lazy import LazySignatures
from tests.support import samplegen


class Index:
    def __init__(self, items: dict[str, dict[str, bytes]]) -> None:
        self.snap = Snapshot(signal_set.DEFAULT.scan)
        ids = sorted(items)
        self.snap.load(ids, {k: [items[i][k] for i in ids] for k in signal_set.DEFAULT.scan}, version=1)
        self.items = items
        self.calls: list[tuple[str, int]] = []

    def blobs(self, key: str, ids: list[str]) -> list[bytes | None]:
        self.calls.append((key, len(ids)))
        return [self.items[i].get(key) for i in ids]


def _jpeg(im: Image.Image) -> bytes:
    return samplegen.jpeg_bytes(im)


def _describe(data: bytes) -> dict[str, bytes]:
    return describe.describe(Image.open(io.BytesIO(data)).convert("RGB"), data)


@pytest.fixture(scope="module")
def catalog() -> tuple[dict[str, bytes], Index]:
    rng = np.random.default_rng(17)
    photos = {f"00000000{i:02d}": _jpeg(samplegen.render_product(rng)) for i in range(12)}
    return photos, Index({pid: _describe(data) for pid, data in photos.items()})


BALANCED = presets.PRESETS["balanced"]


def _ids(found: list[pipeline.Match]) -> list[str]:
    return [m.product_id for m in found]


def test_signals_cover_the_contract(catalog: tuple[dict[str, bytes], Index]) -> None:
    photos, index = catalog
    sigs = index.items["0000000000"]
    assert signal_set.DEFAULT.scan[0] == signal_set.PRIMARY_OF[signal_set.DEFAULT.decode]
    for key in signal_set.DEFAULT.scan:
        assert len(sigs[key]) == 8
    assert set(signal_set.DEFAULT.blobs) <= set(sigs)


def test_exact_copy_is_found_first(catalog: tuple[dict[str, bytes], Index]) -> None:
    photos, index = catalog
    found = pipeline.find_matches(_describe(photos["0000000003"]), index.snap, BALANCED, blobs=index.blobs)
    assert found[0].product_id == "0000000003"
    assert found[0].stage == "exact" and found[0].similarity == 100.0


def test_colour_edit_is_found(catalog: tuple[dict[str, bytes], Index]) -> None:
    photos, index = catalog
    src = Image.open(io.BytesIO(photos["0000000005"])).convert("RGB")
    query = _describe(_jpeg(ImageEnhance.Brightness(src).enhance(1.3)))
    found = pipeline.find_matches(query, index.snap, BALANCED, blobs=index.blobs)
    assert _ids(found) == ["0000000005"]
    assert found[0].stage in ("pdq", "orb")


def test_crop_is_found_by_local_features(catalog: tuple[dict[str, bytes], Index]) -> None:
    photos, index = catalog
    src = Image.open(io.BytesIO(photos["0000000007"])).convert("RGB")
    query = _describe(_jpeg(src.crop((20, 40, 340, 500))))  # near a stored crop window
    found = pipeline.find_matches(query, index.snap, BALANCED, blobs=index.blobs)
    assert "0000000007" in _ids(found)


WORDS_ONLY = replace(BALANCED, name="words-only", max_candidates=0)


def test_side_crop_is_found_by_word_candidates(catalog: tuple[dict[str, bytes], Index]) -> None:
    # Given a query that keeps the right 70 % of a photo (no stored crop window looks like it)
    photos, index = catalog
    src = Image.open(io.BytesIO(photos["0000000009"])).convert("RGB")
    w, h = src.size
    # (rescaled uniformly: a similarity transform, as the verifier models; an anisotropic resize
    # leaves the photometric check misaligned)
    query = _describe(_jpeg(src.crop((int(0.3 * w), 0, w, h)).resize((210, 450))))
    # When only the local-feature word stage may propose candidates
    found = pipeline.find_matches(query, index.snap, WORDS_ONLY, blobs=index.blobs)
    # Then the source is proposed and verified by ORB geometry
    assert _ids(found) == ["0000000009"] and found[0].stage == "orb"


def _unrelated_matches(index: Index, seed: int, rule: presets.Rule) -> list:
    """What a query finds for a generated product that is in no way in the index."""
    other = _describe(_jpeg(samplegen.render_product(np.random.default_rng(seed))))
    return pipeline.find_matches(other, index.snap, rule, blobs=index.blobs)


def test_word_candidates_do_not_confirm_unrelated_photos(catalog: tuple[dict[str, bytes], Index]) -> None:
    assert _unrelated_matches(catalog[1], 998, WORDS_ONLY) == []


def test_word_columns_are_stored_as_scan_signals(catalog: tuple[dict[str, bytes], Index]) -> None:
    _, index = catalog
    assert set(signal_set.ORB_WORDS) <= set(signal_set.DEFAULT.scan)
    assert len(signal_set.ORB_WORDS) * 8 == 2 * orb_words.WORDS  # 16-bit words, 128 bytes per product


def test_letterbox_is_found(catalog: tuple[dict[str, bytes], Index]) -> None:
    photos, index = catalog
    src = Image.open(io.BytesIO(photos["0000000008"])).convert("RGB")
    query = _describe(_jpeg(ImageOps.pad(src, (540, 540), color=(0, 0, 0))))
    found = pipeline.find_matches(query, index.snap, BALANCED, blobs=index.blobs)
    assert _ids(found) == ["0000000008"]


def test_unrelated_photo_is_not_found(catalog: tuple[dict[str, bytes], Index]) -> None:
    assert _unrelated_matches(catalog[1], 999, BALANCED) == []


def test_exclude_and_blob_calls_are_bounded(catalog: tuple[dict[str, bytes], Index]) -> None:
    photos, index = catalog
    index.calls.clear()
    query = index.items["0000000002"]
    found = pipeline.find_matches(query, index.snap, BALANCED, exclude="0000000002", blobs=index.blobs)
    assert "0000000002" not in _ids(found)
    bound = BALANCED.max_candidates + BALANCED.word_candidates
    # PDQ for all candidates, ORB for those PDQ did not confirm, thumbnails for the ORB passes
    assert len(index.calls) <= 3 and all(n <= bound for _, n in index.calls)


def test_original_rule_is_dhash_only_and_ordered(catalog: tuple[dict[str, bytes], Index]) -> None:
    _, index = catalog
    query = index.items["0000000004"]
    wide = presets.resolve("original", max_distance=64)
    found = pipeline.find_matches(query, index.snap, wide)
    assert len(found) == 12 and {m.stage for m in found} == {"dhash"}
    assert [(m.distance, m.product_id) for m in found] == sorted((m.distance, m.product_id) for m in found)
    assert found[0].product_id == "0000000004" and found[0].distance == 0


def test_without_blob_store_only_agreeing_hashes_match(catalog: tuple[dict[str, bytes], Index]) -> None:
    _, index = catalog
    found = pipeline.find_matches(index.items["0000000006"], index.snap, BALANCED)
    assert _ids(found)[0] == "0000000006"


def test_empty_snapshot() -> None:
    snap = Snapshot(signal_set.DEFAULT.scan)
    query = describe.describe(Image.new("RGB", (40, 60), (250, 250, 250)))
    assert pipeline.find_matches(query, snap, BALANCED, blobs=lambda k, ids: []) == []


def test_resolve_override_keeps_the_verification() -> None:
    rule = presets.resolve("balanced", min_similarity=90)
    assert rule.max_distance == 6 and rule.verified and rule.name == "balanced+d6"
    assert not presets.resolve("original", max_distance=8).verified


def test_thumbnail_is_a_small_blob(catalog: tuple[dict[str, bytes], Index]) -> None:
    _, index = catalog
    assert signal_set.THUMB in signal_set.DEFAULT.blobs
    sizes = [len(sigs[signal_set.THUMB]) for sigs in index.items.values()]
    assert max(sizes) <= 4 + 64 * 64 + 2 * 32 * 32  # never more than its pixels
    assert sum(sizes) / len(sizes) <= 1024  # luma as WebP, chroma zlib'd: ~0.8 KB of the 4.1 KB of pixels


def test_verify_pairs_confirms_copies_and_rejects_others(catalog: tuple[dict[str, bytes], Index]) -> None:
    photos, index = catalog
    im = Image.open(io.BytesIO(photos["0000000003"])).convert("RGB")
    w, h = im.size
    crop = _describe(_jpeg(im.crop((int(0.12 * w), int(0.1 * h), w, int(0.9 * h)))))
    edit = _describe(_jpeg(ImageEnhance.Brightness(im).enhance(1.2)))
    items = {**index.items, "crop": crop, "edit": edit}
    calls: list[tuple[str, int]] = []

    def blobs(key: str, ids: list[str]) -> list[bytes | None]:
        calls.append((key, len(ids)))
        return [items[i].get(key) if i in items else None for i in ids]

    pairs = [("crop", "0000000003"), ("edit", "0000000003"), ("0000000003", "0000000004"), ("crop", "nope")]
    out = verify_pairs(pairs, BALANCED, blobs)
    assert len(out) == 4
    assert out[0] is not None and out[0][0] in ("orb", "pdq")
    assert out[1] is not None and out[1][0] == "pdq"
    assert out[2] is None and out[3] is None
    # one bulk fetch per signal over the unique ids
    assert sorted(k for k, _ in calls) == sorted([signal_set.PDQ, signal_set.ORB, signal_set.THUMB])
    assert all(n == 5 for _, n in calls)
    assert verify_pairs([], BALANCED, blobs) == []


def test_same_template_other_colour_is_rejected_after_alignment() -> None:
    # Given one product and another garment on the same layout (silhouette, pose, fabric) in grey
    a = samplegen.render_product(np.random.default_rng(1), fabric_seed=5, colour=(200, 40, 60), layout_seed=3)
    b = samplegen.render_product(np.random.default_rng(2), fabric_seed=5, colour=(90, 90, 90), layout_seed=3)
    w, h = b.size
    crop = (int(0.15 * w), int(0.05 * h), w, h)  # cropped, so PDQ (greyscale, global) does not decide
    items = {
        "a": _describe(_jpeg(a)),
        "b": _describe(_jpeg(b.crop(crop))),
        "a2": _describe(_jpeg(a.crop(crop))),
    }
    fetch = lambda key, ids: [items[i].get(key) for i in ids]  # noqa: E731
    # Then the crop of the product itself is confirmed by ORB, the grey garment is not
    out = verify_pairs([("a2", "a"), ("b", "a")], BALANCED, fetch)
    assert out[0] is not None and out[0][0] == "orb"
    assert out[1] is None


# --------------------------------------------------------------------------- decode modes


def _big_photo(seed: int) -> bytes:
    """A product photo upscaled to 800x1000: big enough for the draft decode to reduce it."""
    rng = np.random.default_rng(seed)
    return _jpeg(samplegen.render_product(rng).resize((800, 1000), Image.Resampling.LANCZOS))


def test_exact_mode_primary_dhash_is_bit_identical_to_imagehash() -> None:
    import imagehash

    data = _big_photo(3)
    sigs = describe.describe_bytes(data, 10**8, signal_set.SignalSet(signal_set.EXACT))
    assert pipeline.primary_key(sigs) == "dhash64@1" and signal_set.DHASH_WORK not in sigs
    exact = int(str(imagehash.dhash(Image.open(io.BytesIO(data)))), 16)
    assert int.from_bytes(sigs["dhash64@1"], "big") == exact


def test_draft_mode_is_its_own_signal_set() -> None:
    # The primary key versions the whole set: the store refuses to mix the two.
    assert signal_set.scan_signals(signal_set.DRAFT)[0] == signal_set.DHASH_WORK != "dhash64@1"
    assert signal_set.scan_signals(signal_set.DRAFT)[1:] == signal_set.scan_signals(signal_set.EXACT)[1:]
    sigs = describe.describe_bytes(_big_photo(3), 10**8, signal_set.SignalSet(signal_set.DRAFT))
    assert pipeline.primary_key(sigs) == signal_set.DHASH_WORK and "dhash64@1" not in sigs
    assert set(signal_set.scan_signals(signal_set.DRAFT)) | set(signal_set.DEFAULT.blobs) <= set(sigs)


def test_draft_dhash_equals_exact_on_photos_the_draft_does_not_reduce() -> None:
    data = _jpeg(samplegen.render_product(np.random.default_rng(4)))  # ~ devset size
    exact = describe.describe_bytes(data, 10**8, signal_set.SignalSet(signal_set.EXACT))
    draft = describe.describe_bytes(data, 10**8, signal_set.SignalSet(signal_set.DRAFT))
    assert draft[signal_set.DHASH_WORK] == exact["dhash64@1"]
    assert draft[signal_set.PDQ] == exact[signal_set.PDQ] and draft[signal_set.ORB] == exact[signal_set.ORB]


def test_draft_signals_stay_close_to_exact_on_big_photos() -> None:
    def bits(a: bytes, b: bytes) -> int:
        return int(np.unpackbits(np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)).sum())

    for seed in range(4):
        data = _big_photo(seed)
        exact = describe.describe_bytes(data, 10**8, signal_set.SignalSet(signal_set.EXACT))
        draft = describe.describe_bytes(data, 10**8, signal_set.SignalSet(signal_set.DRAFT))
        assert bits(draft[signal_set.DHASH_WORK], exact["dhash64@1"]) <= 6
        for key in (signal_set.PHASH, signal_set.DHASH_TRIM, *signal_set.DHASH_CROPS):
            assert bits(draft[key], exact[key]) <= 8, key
        assert bits(draft[signal_set.PDQ][:32], exact[signal_set.PDQ][:32]) <= 24


@pytest.mark.parametrize("mode", [signal_set.EXACT, signal_set.DRAFT])
def test_each_mode_finds_edits_of_big_photos(mode: str) -> None:
    # Given big photos indexed in one mode, queries described in the same mode find their source
    photos = {f"00000001{i:02d}": _big_photo(40 + i) for i in range(6)}
    items = {
        pid: describe.describe_bytes(data, 10**8, signal_set.SignalSet(mode)) for pid, data in photos.items()
    }
    snap = Snapshot(signal_set.scan_signals(mode))
    ids = sorted(items)
    snap.load(ids, {k: [items[i][k] for i in ids] for k in signal_set.scan_signals(mode)}, version=1)

    def blobs(key: str, wanted: list[str]) -> list[bytes | None]:
        return [items[i].get(key) for i in wanted]

    source = Image.open(io.BytesIO(photos["0000000102"]))
    edited = _jpeg(ImageEnhance.Brightness(source).enhance(1.15))
    found = pipeline.find_matches(
        describe.describe_bytes(edited, 10**8, signal_set.SignalSet(mode)), snap, BALANCED, blobs=blobs
    )
    assert _ids(found)[:1] == ["0000000102"]


def _query(data: bytes) -> LazySignatures:
    sigs = describe.describe(Image.open(io.BytesIO(data)).convert("RGB"), data, query=True)
    assert isinstance(sigs, LazySignatures)
    return sigs


def test_a_query_makes_its_thumbnail_only_for_the_photometric_check(
    catalog: tuple[dict[str, bytes], Index],
) -> None:
    photos, index = catalog
    src = Image.open(io.BytesIO(photos["0000000005"])).convert("RGB")
    # Given a whole-photo edit, which PDQ confirms: no candidate reaches the aligned-thumbnail check
    edit = _query(_jpeg(ImageEnhance.Brightness(src).enhance(1.3)))
    found = pipeline.find_matches(edit, index.snap, BALANCED, blobs=index.blobs)
    assert [(m.product_id, m.stage) for m in found] == [("0000000005", "pdq")]
    assert signal_set.THUMB in edit.pending()  # never made
    # Given a crop, which ORB aligns: the photometric check reads the query's thumbnail
    crop = _query(_jpeg(Image.open(io.BytesIO(photos["0000000007"])).convert("RGB").crop((20, 40, 340, 500))))
    found = pipeline.find_matches(crop, index.snap, BALANCED, blobs=index.blobs)
    assert ("0000000007", "orb") in [(m.product_id, m.stage) for m in found]
    assert signal_set.THUMB not in crop.pending()


def test_a_query_view_that_fails_is_the_querys_error_not_a_candidates(
    catalog: tuple[dict[str, bytes], Index],
) -> None:
    photos, index = catalog
    crop = _query(_jpeg(Image.open(io.BytesIO(photos["0000000007"])).convert("RGB").crop((20, 40, 340, 500))))

    def broken() -> bytes:
        raise ValueError("thumbnail failed")

    crop._later[signal_set.THUMB] = broken  # the thumbnail an ORB-aligned candidate asks for
    with pytest.raises(confirm.QueryViewError, match="thumbnail failed"):
        pipeline.find_matches(crop, index.snap, BALANCED, blobs=index.blobs)


def test_pdq_distance_counts_the_differing_bits_of_the_hashes_only() -> None:
    rng = np.random.default_rng(4)
    for _ in range(200):
        a, b = rng.integers(0, 256, 33, dtype=np.uint8), rng.integers(0, 256, 33, dtype=np.uint8)
        want = int(np.unpackbits(a[:32] ^ b[:32]).sum())  # the 33rd byte is PDQ's quality
        assert confirm._pdq_distance(a.tobytes(), b.tobytes()) == want
