"""The signal-plugin interface and its built-in garment-colour descriptor."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from common.signals import plugins
from tests.support import samplegen


@pytest.fixture(scope="module")
def plugin() -> plugins.GarmentColour:
    (found,) = plugins.load(["garment_hsv"])
    return found


def test_builtin_implements_the_protocol(plugin: plugins.GarmentColour) -> None:
    assert isinstance(plugin, plugins.SignalPlugin)
    assert plugins.key(plugin) == "garment_hsv@1"


def test_unknown_plugin_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="unknown signal plugin"):
        plugins.load(["no-such-signal"])


def test_same_garment_scores_higher_than_another_colour(plugin: plugins.GarmentColour) -> None:
    # Given a product, a padded crop of it, and the same layout in another colour,
    # Then the crop scores near 1 and above the recoloured variant.
    rng = np.random.default_rng(2)
    photo = samplegen.render_product(rng, layout_seed=99, colour=(200, 30, 30))
    other = samplegen.render_product(rng, layout_seed=99, colour=(30, 60, 200))
    edited = ImageOps.expand(photo.crop((20, 30, 340, 500)), 40, fill=(255, 255, 255))
    a, b, c = plugin.describe(photo), plugin.describe(edited), plugin.describe(other)
    assert len(a) == 128
    assert plugin.compare(a, a) == pytest.approx(1.0)
    assert plugin.compare(a, b) > 0.7
    assert plugin.compare(a, b) > plugin.compare(a, c) + 0.3


def test_blank_image_still_describes(plugin: plugins.GarmentColour) -> None:
    blob = plugin.describe(Image.new("RGB", (50, 50), (255, 255, 255)))
    assert plugin.compare(blob, blob) == pytest.approx(1.0)
