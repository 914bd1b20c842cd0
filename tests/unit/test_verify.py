"""ORB + RANSAC verification: crops and rescales of one photo pass, other photos do not."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from common.match import photometric, verify
from tests.support import samplegen


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    rng = np.random.default_rng(21)
    return [samplegen.render_product(rng) for _ in range(3)]


def test_pack_round_trip(photos: list[Image.Image]) -> None:
    feats = verify.extract(photos[0])
    back = verify.unpack(verify.pack(feats))
    assert back.size == feats.size
    assert np.array_equal(back.descriptors, feats.descriptors)
    assert np.allclose(back.points, feats.points, atol=0.5)
    assert len(verify.pack(feats)) == 5 + 36 * len(feats.points)  # header, then x, y and 32 bytes a point


def test_crop_and_rescale_verify(photos: list[Image.Image]) -> None:
    src = photos[0]
    target = verify.extract(src)
    crop = src.crop((30, 40, 330, 480)).resize((200, 293))
    verdict = verify.verify(verify.extract(crop, verify.QUERY_FEATURES), target)
    assert verdict.plausible and verdict.inliers >= 18


def test_padding_verifies(photos: list[Image.Image]) -> None:
    padded = ImageOps.expand(photos[1], (90, 0, 90, 0), fill=(0, 0, 0))
    verdict = verify.verify(verify.extract(padded), verify.extract(photos[1]))
    assert verdict.passes(18)


def test_other_photo_does_not_verify(photos: list[Image.Image]) -> None:
    verdict = verify.verify(verify.extract(photos[0]), verify.extract(photos[2]))
    assert not verdict.passes(18)


def test_featureless_image_is_not_plausible() -> None:
    blank = verify.extract(Image.new("RGB", (60, 90), (255, 255, 255)))
    assert verify.verify(blank, blank) == verify.Verdict(0, 0, False)


def test_photometric_check_follows_the_alignment(photos: list[Image.Image]) -> None:
    from PIL import ImageEnhance

    im = photos[0]
    w, h = im.size
    crop = ImageEnhance.Contrast(im.crop((int(0.15 * w), 0, w, int(0.85 * h)))).enhance(0.8)
    fq, ft = verify.extract(crop, verify.QUERY_FEATURES), verify.extract(im)
    verdict = verify.verify(fq, ft)
    assert verdict.passes(15) and verdict.model is not None
    tq, tt = (
        photometric.unpack_thumb(photometric.thumbnail(crop, lossless=True)),  # the query's own: exact
        photometric.unpack_thumb(photometric.thumbnail(im)),  # as stored
    )
    assert max(tt.luma.shape) == photometric.THUMB_SIDE
    same = photometric.photometric(tq, tt, verdict.model, fq.size, ft.size)
    assert same.passes(0.75), same
    # the same alignment against a grey, flipped copy's pixels does not agree
    other = photometric.unpack_thumb(
        photometric.thumbnail(ImageOps.mirror(ImageOps.grayscale(photos[1]).convert("RGB")))
    )
    assert not photometric.photometric(tq, other, verdict.model, fq.size, ft.size).passes(0.6)


def _flipped(rng: np.random.Generator, desc: np.ndarray, bits: int) -> np.ndarray:
    """`desc` with `bits` random bits flipped."""
    out = np.unpackbits(desc)
    out[rng.choice(out.size, bits, replace=False)] ^= 1
    return np.packbits(out)


def test_a_failed_fit_is_retried_without_hub_keypoints() -> None:
    """22 true matches (one translation) lose to 25 matches of hub keypoints that agree on an
    implausible quarter turn; each hub is the nearest query keypoint of 3 more target keypoints, so
    the retry without them finds the true copy. Without hubs nothing is retried."""
    rng = np.random.default_rng(5)
    true_t = rng.integers(0, 256, (22, 32), dtype=np.uint8)
    hub_q = rng.integers(0, 256, (25, 32), dtype=np.uint8)
    crowd = np.array([_flipped(rng, d, 40) for d in hub_q for _ in range(3)])
    t_pts = rng.uniform(50, 350, (22 + 25 + 75, 2)).astype(np.float32)
    target = verify.Features((400, 400), t_pts, np.concatenate([true_t, hub_q, crowd]))
    q_true = t_pts[:22] - 20.0  # the query is the target shifted by 20 px
    centre = np.array([200.0, 200.0], np.float32)
    rel = t_pts[22:47] - centre
    q_hub = centre + np.stack([rel[:, 1], -rel[:, 0]], axis=1)  # a quarter turn about the centre
    query = verify.Features(
        (400, 400), np.concatenate([q_true, q_hub]).astype(np.float32), np.concatenate([true_t, hub_q])
    )
    assert verify._hubs(query.descriptors, target.descriptors).sum() == 25
    verdict = verify.verify(query, target, min_inliers=20)
    assert verdict.passes(20) and 20 <= verdict.inliers <= 22
    # the same matches with no crowd: no hubs, so the quarter turn's fit stands (and fails)
    plain = verify.Features((400, 400), t_pts[:47], target.descriptors[:47])
    assert not verify._hubs(query.descriptors, plain.descriptors).any()
    assert not verify.verify(query, plain, min_inliers=20).passes(20)


def test_the_inventory_stores_the_query_keypoints_strongest_first(photos: list[Image.Image]) -> None:
    """An indexed photo keeps the STORED_FEATURES strongest of the keypoints a query of it has, and of
    each the STORED_BITS of its descriptor."""
    from common.match import describe
    from common.signals import signal_set as sig

    stored = verify.unpack(describe.describe(photos[1])[sig.ORB])
    query = verify.unpack(describe.describe(photos[1], query=True)[sig.ORB])
    assert len(query.points) > verify.STORED_FEATURES == len(stored.points)
    strongest = query.descriptors[: verify.STORED_FEATURES]
    assert np.array_equal(stored.descriptors, verify.narrow(strongest))
    assert np.array_equal(stored.points, query.points[: verify.STORED_FEATURES])
