"""Extra per-product signals behind a small interface (criterion 3: same garment, other photo).

A plugin turns an image into bytes once at ingest and scores two such blobs at query time. Plugins
are found by name in the built-in registry or in the `neardup.signals` entry-point group, so a
package can add one (e.g. an embedding model) without touching this project.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Protocol, runtime_checkable

import cv2
import numpy as np
from PIL import Image

from common.signals.normalise import trim_box

ENTRY_POINT_GROUP = "neardup.signals"


@runtime_checkable
class SignalPlugin(Protocol):
    name: str  # stored under f"{name}@{version}", so a changed algorithm never mixes with old data
    version: int

    def describe(self, image: Image.Image) -> bytes: ...

    def compare(self, a: bytes, b: bytes) -> float:
        """Similarity in [0, 1]; 1 = same."""
        ...


class GarmentColour:
    """HSV histogram of the garment pixels (those unlike the backdrop), 8x4x4 bins, 128 bytes.

    Needs no weights. It ignores layout, so it survives crops, pads, rescales, another pose or model,
    but not recolouring: colour variants score low on purpose, same-colour other photos score high.
    """

    name = "garment_hsv"
    version = 1
    BINS = (8, 4, 4)

    def describe(self, image: Image.Image) -> bytes:
        rgb = image.convert("RGB")
        left, top, right, bottom = trim_box(rgb)
        small = np.asarray(rgb.crop((left, top, right, bottom)).resize((96, 128)), dtype=np.uint8)
        # Backdrop = the corner colour of the content box; the garment is what differs from it.
        corners = np.concatenate([small[:4, :4].reshape(-1, 3), small[:4, -4:].reshape(-1, 3)])
        backdrop = np.median(corners, axis=0)
        mask = (np.abs(small.astype(np.int16) - backdrop).max(axis=2) > 24).astype(np.uint8)
        if mask.mean() < 0.02:
            mask[:] = 1  # nearly blank: describe everything rather than nothing
        hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
        hist = cv2.calcHist([hsv], [0, 1, 2], mask, list(self.BINS), [0, 180, 0, 256, 0, 256]).ravel()
        hist = hist / max(hist.sum(), 1.0)
        packed: bytes = np.minimum(np.rint(hist * 255), 255).astype(np.uint8).tobytes()
        return packed

    def compare(self, a: bytes, b: bytes) -> float:
        ha = np.frombuffer(a, np.uint8).astype(np.float32)
        hb = np.frombuffer(b, np.uint8).astype(np.float32)
        total = max(ha.sum(), hb.sum(), 1.0)
        return float(np.minimum(ha, hb).sum() / total)  # histogram intersection


BUILTIN: dict[str, type] = {GarmentColour.name: GarmentColour}


def key(plugin: SignalPlugin) -> str:
    return f"{plugin.name}@{plugin.version}"


def load(names: list[str] | tuple[str, ...]) -> list[SignalPlugin]:
    """Instantiate plugins by name: built-ins first, then installed `neardup.signals` entry points."""
    found: list[SignalPlugin] = []
    eps = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    for name in names:
        if name in BUILTIN:
            plugin = BUILTIN[name]()
        elif name in eps:
            plugin = eps[name].load()()
        else:
            raise KeyError(f"unknown signal plugin {name!r}; known: {sorted(BUILTIN) + sorted(eps)}")
        if not isinstance(plugin, SignalPlugin):
            raise TypeError(f"plugin {name!r} does not implement SignalPlugin")
        found.append(plugin)
    return found
