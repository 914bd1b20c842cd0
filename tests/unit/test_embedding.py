"""The learned-embedding stage: preprocessing, vectors and their packing, the model loader, the
query-side matrix, and its place in find_matches (off by default)."""

from __future__ import annotations

import io
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.config.settings import Settings
from common.errors import ConfigError
from common.index.embeddings import EmbeddingMatrix
from common.index.snapshot import Snapshot
from common.match import describe, pipeline, presets
from common.signals import embedding, signal_set
from tests.conftest import SAMPLES

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from tests.support.onnx_encoders import tiny_encoder  # noqa: E402

INVENTORY = sorted((SAMPLES / "inventory").glob("*.jpg"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_encoder(tmp_path_factory.mktemp("models") / "tiny.onnx")


# -- preprocessing ------------------------------------------------------------------------------------


def test_input_spec_reads_metadata_then_shape_then_defaults():
    meta = {
        "neardup.layout": "nhwc",
        "neardup.input_size": "96x64",
        "neardup.mean": "0,0,0",
        "neardup.std": "1,1,1",
    }
    assert embedding.input_spec(["N", 3, 224, 224], meta) == embedding.InputSpec(
        96, 64, "NHWC", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    )
    # no metadata: the static shape decides size and layout (channels are the axis of length 3)
    spec = embedding.input_spec([1, 160, 128, 3], {})
    assert (spec.height, spec.width, spec.layout, spec.mean) == (160, 128, "NHWC", embedding.IMAGENET_MEAN)
    # dynamic size, no metadata: the documented default
    assert embedding.input_spec(["batch", 3, "h", "w"], {}).height == embedding.DEFAULT_SIZE
    with pytest.raises(ValueError, match="4-D"):
        embedding.input_spec([1, 3, 224], {})
    with pytest.raises(ValueError, match="layout"):
        embedding.input_spec([1, 3, 8, 8], {"neardup.layout": "CHW"})


def test_tensor_is_normalised_in_the_models_layout():
    spec = embedding.InputSpec(20, 10, "NCHW", (0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    x = embedding.to_tensor(Image.new("RGB", (300, 200), "white"), spec)
    assert x.shape == (1, 3, 20, 10) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], [2.0, 1.0, 0.5], atol=1e-6)  # (1 - mean) / std
    nhwc = embedding.to_tensor(Image.new("RGB", (300, 200), "white"), replace(spec, layout="NHWC"))
    assert nhwc.shape == (1, 20, 10, 3)


def test_garment_region_is_the_content_padded_to_the_models_aspect():
    # Given a red garment (40 x 100) on a white studio background
    photo = Image.new("RGB", (300, 400), "white")
    photo.paste(Image.new("RGB", (40, 100), (200, 0, 0)), (130, 150))
    # When its region is taken for a square input
    region = embedding.garment_region(photo, aspect=1.0)
    # Then it is the garment, centred on the background colour, square, not stretched or cut
    assert region.size[0] == region.size[1]
    assert abs(region.size[1] - 100) <= 3
    px = np.asarray(region)
    assert tuple(px[region.size[1] // 2, region.size[0] // 2]) == (200, 0, 0)
    assert tuple(px[0, 0]) == (255, 255, 255)
    red_share = (px[..., 0] > 150) & (px[..., 1] < 50)
    assert abs(red_share.mean() - 0.4) < 0.05  # 40 of 100 columns, all of the rows


# -- vectors ------------------------------------------------------------------------------------------


def test_int8_packing_keeps_the_cosine_and_refuses_damage():
    rng = np.random.default_rng(3)
    for dim in (16, 512, 2048):
        v = embedding.l2_normalised(rng.standard_normal(dim))
        blob = embedding.pack(v)
        assert len(blob) == 7 + dim  # one byte per component + header
        back = embedding.unpack(blob)
        assert abs(float(np.linalg.norm(back)) - 1.0) < 1e-5
        assert float(back @ v) > 0.9998
        assert embedding.dimension_of(blob) == dim
    with pytest.raises(ValueError):
        embedding.unpack(blob[:-1])
    with pytest.raises(ValueError):
        embedding.unpack(b"\x02" + blob[1:])
    with pytest.raises(embedding.EmbeddingError):
        embedding.l2_normalised(np.zeros(8))


def test_signal_is_named_after_the_model_file(tmp_path, tiny):
    other = tiny_encoder(tmp_path / "other.onnx", seed=1)
    assert embedding.signal_for(tiny) == f"emb.{embedding.file_sha256(tiny)[:12]}@1"
    assert embedding.signal_for(tiny) != embedding.signal_for(other)


# -- the model ----------------------------------------------------------------------------------------


def test_encoder_embeds_a_photo_and_its_turned_copy_alike(tiny):
    enc = embedding.Encoder(tiny)
    assert enc.check() == 16
    photo = Image.open(INVENTORY[0])
    a = enc.vector(photo)
    b = enc.vector(photo.transpose(Image.Transpose.ROTATE_90))
    c = enc.vector(Image.open(INVENTORY[5]))
    assert float(a @ b) > 0.9999 > float(a @ c)
    assert embedding.unpack(enc.embed(photo)) @ a > 0.999


def test_a_model_file_replaced_under_a_running_process_is_refused(tmp_path):
    path = tiny_encoder(tmp_path / "m.onnx", seed=0)
    started_with = embedding.signal_for(path)
    assert embedding.encoder(path, started_with).signal == started_with
    tiny_encoder(tmp_path / "new.onnx", seed=4).replace(path)  # another model under the same name
    embedding._encoders.clear()  # as a freshly forked child would load it
    with pytest.raises(ConfigError, match="changed since this process started"):
        embedding.encoder(path, started_with)


def test_a_model_failing_on_one_image_raises_a_product_error(tiny):
    enc = embedding.Encoder(tiny)
    with pytest.raises(embedding.EmbeddingError) as err:
        enc.vector(Image.new("RGB", (90, 120), "black"))  # this model's output is zero on black
    assert err.value.stage == "embed" and err.value.reason == "bad_output"


def test_bad_model_files_are_config_errors(tmp_path, monkeypatch):
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ConfigError, match="no embedding model"):
        embedding.check_model(missing)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a model")
    with pytest.raises(ConfigError) as err:
        embedding.check_model(junk)
    assert err.value.reason == "bad_model" and "\n" not in str(err.value)
    # Without onnxruntime installed: how to install it
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ConfigError, match=r"pip install 'neardup\[embeddings\]'"):
        embedding.check_model(junk)


def test_settings_validate_the_model_path(tmp_path, tiny):
    with pytest.raises(ConfigError, match="NEARDUP_EMBEDDING_MODEL"):
        Settings.from_env({"NEARDUP_EMBEDDING_MODEL": str(tmp_path / "missing.onnx")})
    s = Settings.from_env({"NEARDUP_EMBEDDING_MODEL": str(tiny)})
    assert s.embedding_model == tiny.resolve()
    assert Settings.from_env(s.to_env()) == s


# -- off by default ---------------------------------------------------------------------------------


def test_off_by_default_nothing_changes():
    # Given no NEARDUP_EMBEDDING_MODEL (this test process)
    assert Settings.from_env({}).embedding_model is None
    assert signal_set.DEFAULT.embedding is None and signal_set.DEFAULT.identity == ()
    # Then no signal is added, stored or recorded in the index's signal set
    sigs = describe.describe_bytes(INVENTORY[0].read_bytes(), 10**9)
    assert not any(k.startswith("emb.") for k in sigs)
    assert not any(k.startswith("emb.") for k in signal_set.DEFAULT.blobs)
    assert presets.PRESETS["balanced"].embedding_min is None
    assert Snapshot(signal_set.DEFAULT.scan).embeddings is None


# -- the matrix and the query ---------------------------------------------------------------------------


def test_matrix_top_k_is_exact_and_skips_what_it_must():
    rng = np.random.default_rng(5)
    vectors = [embedding.l2_normalised(rng.standard_normal(32)) for _ in range(300)]
    blobs: list[bytes | None] = [embedding.pack(v) for v in vectors]
    blobs[7] = None  # a row without a vector
    m = EmbeddingMatrix.from_blobs(blobs)
    q = vectors[7] + 0.01 * vectors[8]
    q = q / np.linalg.norm(q)
    top = m.top(q, 5, skip=[8])
    expected = sorted(
        (r for r in range(300) if r not in (7, 8)), key=lambda r: -float(embedding.unpack(blobs[r]) @ q)
    )[:5]
    assert [r for r, _ in top] == expected
    assert all(a[1] >= b[1] for a, b in zip(top, top[1:], strict=False))
    # rows written later grow the matrix; a damaged blob leaves its row empty
    m.set(305, embedding.pack(q))
    m.set(306, b"garbage")
    assert m.top(q, 1)[0][0] == 305 and len(m) == 307
    assert np.isneginf(m.cosines(q, [306, 7])).all()
    # a row the snapshot has but the matrix does not yet: no vector, and the answer stays aligned
    scores = m.cosines(q, [305, 999, 0])
    assert len(scores) == 3 and scores[0] > 0.99 and np.isneginf(scores[1]) and np.isfinite(scores[2])
    assert np.isneginf(EmbeddingMatrix(32).cosines(q, [0, 1])).all() and EmbeddingMatrix(32).top(q, 3) == []


class _Index:
    """A Snapshot with an embedding matrix, and its blobs, as a query worker holds them."""

    def __init__(self, encoder: embedding.Encoder, paths: list[Path], signal: str) -> None:
        self.ids = [p.stem for p in paths]
        self.sigs = []
        for p in paths:
            s = describe.describe_bytes(p.read_bytes(), 10**9)
            s[signal] = encoder.embed(Image.open(p))
            self.sigs.append(s)
        self.snap = Snapshot(signal_set.DEFAULT.scan)
        self.snap.load(self.ids, {k: [s[k] for s in self.sigs] for k in signal_set.DEFAULT.scan}, version=1)
        self.snap.embeddings = EmbeddingMatrix.from_blobs([s[signal] for s in self.sigs])

    def blobs(self, key: str, ids: list[str]) -> list[bytes | None]:
        by_id = dict(zip(self.ids, self.sigs, strict=True))
        return [by_id[i].get(key) for i in ids]


def test_embedding_is_a_candidate_source_and_a_tier_above_its_threshold(tiny, monkeypatch):
    # Given an index whose products carry the tiny model's vectors (as a worker with the model holds it)
    enc = embedding.Encoder(tiny)
    index = _Index(enc, INVENTORY[:12], enc.signal)
    # and a query the hashes and ORB cannot find: a product photographed turned by 90 degrees
    turned = Image.open(INVENTORY[3]).transpose(Image.Transpose.ROTATE_90)
    buf = io.BytesIO()
    turned.save(buf, "JPEG", quality=90)
    query = describe.describe_bytes(buf.getvalue(), 10**9)
    query[enc.signal] = enc.embed(turned)
    exact = describe.describe_bytes(INVENTORY[3].read_bytes(), 10**9)
    exact[enc.signal] = enc.embed(Image.open(INVENTORY[3]))
    balanced = presets.PRESETS["balanced"]

    # When the tier is off (no calibrated threshold)
    scored: dict[str, float] = {}
    off = pipeline.find_matches(query, index.snap, balanced, blobs=index.blobs, scored=scored)
    # Then nothing matches, but every candidate was scored, the true product best
    assert off == []
    assert max(scored, key=scored.get) == INVENTORY[3].stem
    assert len(scored) >= balanced.embedding_candidates

    # When a threshold between the true product and the others is calibrated
    best, second = sorted(scored.values(), reverse=True)[:2]
    on = pipeline.find_matches(query, index.snap, replace(balanced, embedding_min=best), blobs=index.blobs)
    # Then the product is a match of stage "embedding", with its cosine, and nothing else is
    assert [(m.product_id, m.stage) for m in on] == [(INVENTORY[3].stem, "embedding")]
    assert on[0].extra["cosine"] == best > second

    # And an exact copy keeps its own stage, with the cosine in its details
    found = pipeline.find_matches(exact, index.snap, replace(balanced, embedding_min=best), blobs=index.blobs)
    assert found[0].stage == "exact" and found[0].extra["cosine"] > 0.999


def test_export_tool_writes_the_metadata_the_loader_reads(tmp_path):
    # Given an exported encoder without our metadata (tools/export_encoder.py adds it after torch's export)
    from tools.export_encoder import write_metadata

    path = tiny_encoder(tmp_path / "m.onnx", size=32)
    # When the tool writes it
    write_metadata(path, (48, 40), (0.1, 0.2, 0.3), (0.5, 0.5, 0.5))
    # Then the loader feeds the model by it
    spec = embedding.Encoder(path).spec
    assert (spec.height, spec.width, spec.layout) == (48, 40, "NCHW")
    assert spec.mean == (0.1, 0.2, 0.3) and spec.std == (0.5, 0.5, 0.5)
