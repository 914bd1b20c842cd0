"""Deterministic generator of top-like product photos and labelled near-duplicate queries.

The output mirrors the shared devset (`inventory/<productId>.jpg`, `queries/<name>.jpg`,
`labels.json` in the same schema, so its `score.py` scores it) plus `catalog.csv` in the original
system's CSV format (productId, imageUrlStr, categories). Everything derives from one seed: the same
call on the same Pillow/numpy gives the same bytes.

    python -m tests.support.samplegen samples --products 40 --per-kind 2 --seed 7
"""

from __future__ import annotations

import argparse
import colorsys
import csv
import io
import json
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

WIDTH, HEIGHT = 360, 540
JPEG_QUALITY = 88
LABELS_VERSION = "samplegen-v1"
TOPS = ("Apparel>Women>Tops", "Apparel>Men>Tops", "Apparel>Kids>Tops")
OTHER_CATEGORY = "Apparel>Men>Jeans"

# Query kinds -> devset criterion: 1 exact copy, 2 colour/encoding edit, 4 geometric/noise edit.
EDIT_KINDS: dict[str, str] = {
    "exact": "1",
    "brightness": "2",
    "contrast": "2",
    "saturation": "2",
    "hue": "2",
    "gamma": "2",
    "jpeg": "2",
    "rescale": "4",
    "gaussian": "4",
    "crop": "4",
    "pad": "4",
    "letterbox": "4",
}
KINDS: tuple[str, ...] = (*EDIT_KINDS, "variant", "distractor")

Rng = np.random.Generator

# Garment outlines in unit coordinates: x in [-0.5, 0.5] around the centre, y from 0 (neckline) down.
_SHAPES: dict[str, list[tuple[float, float]]] = {
    "tshirt": [
        (-0.14, 0),
        (-0.33, 0.04),
        (-0.56, 0.30),
        (-0.44, 0.40),
        (-0.33, 0.30),
        (-0.33, 1.0),
        (0.33, 1.0),
        (0.33, 0.30),
        (0.44, 0.40),
        (0.56, 0.30),
        (0.33, 0.04),
        (0.14, 0),
    ],
    "longsleeve": [
        (-0.14, 0),
        (-0.34, 0.04),
        (-0.58, 0.86),
        (-0.47, 0.90),
        (-0.34, 0.36),
        (-0.34, 1.0),
        (0.34, 1.0),
        (0.34, 0.36),
        (0.47, 0.90),
        (0.58, 0.86),
        (0.34, 0.04),
        (0.14, 0),
    ],
    "tank": [
        (-0.16, 0),
        (-0.24, 0),
        (-0.25, 0.22),
        (-0.33, 0.36),
        (-0.33, 1.0),
        (0.33, 1.0),
        (0.33, 0.36),
        (0.25, 0.22),
        (0.24, 0),
        (0.16, 0),
    ],
    "sweater": [
        (-0.15, 0),
        (-0.38, 0.06),
        (-0.60, 0.92),
        (-0.46, 0.95),
        (-0.37, 0.40),
        (-0.37, 0.94),
        (-0.33, 1.02),
        (0.33, 1.02),
        (0.37, 0.94),
        (0.37, 0.40),
        (0.46, 0.95),
        (0.60, 0.92),
        (0.38, 0.06),
        (0.15, 0),
    ],
}
_JEANS = [(-0.30, 0), (0.30, 0), (0.36, 1.0), (0.08, 1.0), (0.0, 0.30), (-0.08, 1.0), (-0.36, 1.0)]


def _colour(rng: Rng, light: bool | None = None) -> tuple[int, int, int]:
    """A garment colour: any hue, with both very dark and very light tones (as in real catalogs)."""
    h = rng.random()
    s = rng.choice([0.0, 0.15, 0.4, 0.7, 0.9])
    if light is None:
        light = rng.random() < 0.3
    v = rng.uniform(0.80, 0.97) if light else rng.uniform(0.12, 0.85)
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return int(r * 255), int(g * 255), int(b * 255)


def _background(rng: Rng) -> Image.Image:
    """White or light-grey studio backdrop with a faint vertical gradient."""
    base = rng.choice([255, 250, 245, 238, 230])
    top, bottom = base, max(200, base - int(rng.integers(0, 18)))
    ramp = np.linspace(top, bottom, HEIGHT, dtype=np.float32)[:, None, None]
    tint = np.array([0, rng.integers(-2, 3), rng.integers(-4, 1)], dtype=np.float32)
    arr = np.clip(np.broadcast_to(ramp, (HEIGHT, WIDTH, 3)) + tint, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def _pattern(rng: Rng, size: tuple[int, int], base: tuple[int, int, int]) -> Image.Image:
    """The garment fabric: solid, stripes, checks, dots or a big print block."""
    layer = Image.new("RGB", size, base)
    draw = ImageDraw.Draw(layer)
    w, h = size
    kind = rng.choice(["solid", "solid", "hstripes", "vstripes", "checks", "dots", "block"])
    other = _colour(rng)
    if kind == "hstripes":
        step = int(rng.integers(10, 40))
        thick = int(rng.integers(3, step // 2 + 4))
        for y in range(int(rng.integers(0, step)), h, step):
            draw.rectangle([0, y, w, y + thick], fill=other)
    elif kind == "vstripes":
        step = int(rng.integers(12, 45))
        for x in range(int(rng.integers(0, step)), w, step):
            draw.rectangle([x, 0, x + step // 3, h], fill=other)
    elif kind == "checks":
        step = int(rng.integers(16, 48))
        for y in range(0, h, step):
            for x in range((y // step % 2) * step, w, 2 * step):
                draw.rectangle([x, y, x + step - 1, y + step - 1], fill=other)
    elif kind == "dots":
        step = int(rng.integers(14, 36))
        r = int(rng.integers(2, step // 3 + 3))
        for y in range(0, h, step):
            for x in range((y // step % 2) * step // 2, w, step):
                draw.ellipse([x - r, y - r, x + r, y + r], fill=other)
    elif kind == "block":
        bx0, by0 = int(w * rng.uniform(0.3, 0.42)), int(h * rng.uniform(0.25, 0.4))
        bx1, by1 = int(w * rng.uniform(0.58, 0.7)), int(h * rng.uniform(0.5, 0.7))
        draw.rectangle([bx0, by0, bx1, by1], fill=other)
        for _ in range(int(rng.integers(2, 6))):  # a few shapes inside the print
            cx, cy = rng.uniform(bx0, bx1), rng.uniform(by0, by1)
            r = rng.uniform(5, 25)
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_colour(rng))
    return layer


def _logo(rng: Rng, layer: Image.Image, box: tuple[float, float, float, float]) -> None:
    """A small chest logo or a word, drawn on the fabric."""
    draw = ImageDraw.Draw(layer)
    x0, y0, x1, y1 = box
    cx, cy = rng.uniform(x0 + 0.3 * (x1 - x0), x1 - 0.3 * (x1 - x0)), y0 + rng.uniform(0.15, 0.3) * (y1 - y0)
    colour = _colour(rng)
    if rng.random() < 0.5:
        r = rng.uniform(6, 16)
        draw.regular_polygon(
            (cx, cy, r), int(rng.integers(3, 7)), rotation=float(rng.uniform(0, 90)), fill=colour
        )
    else:
        word = "".join(chr(int(c)) for c in rng.integers(65, 91, size=int(rng.integers(3, 7))))
        font = ImageFont.load_default(size=int(rng.integers(14, 30)))
        draw.text((cx, cy), word, fill=colour, font=font, anchor="mm")


def _garment(
    rng: Rng,
    canvas: Image.Image,
    shape: list[tuple[float, float]],
    cx: float,
    top: float,
    width: float,
    height: float,
    colour: tuple[int, int, int] | None = None,
    fabric_seed: int | None = None,
) -> None:
    """Draw one garment with its shadow, fabric, shading and folds onto `canvas`."""
    pts = [(cx + x * width, top + y * height) for x, y in shape]
    mask = Image.new("L", canvas.size, 0)
    ImageDraw.Draw(mask).polygon(pts, fill=255)
    # Soft drop shadow: studio photos have one, and it ties the garment to the backdrop.
    shadow = mask.filter(ImageFilter.GaussianBlur(8)).point(lambda v: int(v * 0.35))
    shadow = ImageOps.expand(shadow, (4, 6, 0, 0)).crop((0, 0, *canvas.size))
    canvas.paste(Image.new("RGB", canvas.size, (90, 90, 90)), (0, 0), shadow)

    fab_rng = rng if fabric_seed is None else np.random.default_rng(fabric_seed)
    base = colour if colour is not None else _colour(rng)
    fabric = _pattern(fab_rng, canvas.size, base)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    if fab_rng.random() < 0.5:
        _logo(fab_rng, fabric, (min(xs), min(ys), max(xs), max(ys)))
    # Shading: lit from the front-left, darker towards the edges, plus a few vertical folds.
    xx = np.linspace(-1, 1, canvas.size[0], dtype=np.float32)[None, :]
    yy = np.linspace(-1, 1, canvas.size[1], dtype=np.float32)[:, None]
    light = 1.0 - 0.18 * (xx - rng.uniform(-0.4, 0.1)) ** 2 - 0.06 * yy
    for _ in range(int(rng.integers(1, 4))):
        fx, fw = rng.uniform(min(xs), max(xs)), rng.uniform(3, 10)
        px = np.arange(canvas.size[0], dtype=np.float32)[None, :]
        light = light - 0.10 * np.exp(-(((px - fx) / fw) ** 2))
    shaded = np.asarray(fabric, dtype=np.float32) * np.clip(light, 0.5, 1.1)[..., None]
    fabric = Image.fromarray(np.clip(shaded, 0, 255).astype(np.uint8), "RGB")
    canvas.paste(fabric, (0, 0), mask.filter(ImageFilter.GaussianBlur(0.8)))
    # Neckline: an opening showing the backdrop (or the inside of the garment, darker).
    neck_w = abs(shape[-1][0] - shape[0][0]) * width / 2
    inner = tuple(int(c * 0.7) for c in base)
    ImageDraw.Draw(canvas).chord(
        [cx - neck_w, top - neck_w * 0.6, cx + neck_w, top + neck_w * 0.6], 0, 180, fill=inner
    )


def render_product(
    rng: Rng,
    kind: str | None = None,
    fabric_seed: int | None = None,
    colour: tuple[int, int, int] | None = None,
    layout_seed: int | None = None,
) -> Image.Image:
    """One studio product photo. `layout_seed` + a new colour gives a colour variant of a product."""
    lay = rng if layout_seed is None else np.random.default_rng(layout_seed)
    canvas = _background(lay)
    shape_name = kind or str(lay.choice(list(_SHAPES)))
    shape = _SHAPES[shape_name]
    n_items = 2 if lay.random() < 0.2 else 1  # multipacks, as in real kids' catalogs
    for i in range(n_items):
        width = WIDTH * lay.uniform(0.5, 0.8) / (1.3 if n_items > 1 else 1)
        height = width * lay.uniform(1.05, 1.45)
        cx = WIDTH * (lay.uniform(0.42, 0.58) if n_items == 1 else (0.36 + 0.28 * i))
        top = HEIGHT * lay.uniform(0.08, 0.3) + (i * 40 if n_items > 1 else 0)
        height = min(height, HEIGHT * 0.95 - top)
        _garment(lay, canvas, shape, cx, top, width, height, colour if i == 0 else None, fabric_seed)
    noise = rng.normal(0, 2.0, (HEIGHT, WIDTH, 3))
    arr = np.clip(np.asarray(canvas, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def render_jeans(rng: Rng) -> Image.Image:
    canvas = _background(rng)
    width = WIDTH * rng.uniform(0.45, 0.6)
    colour = (int(rng.integers(30, 90)), int(rng.integers(50, 100)), int(rng.integers(110, 170)))
    _garment(rng, canvas, _JEANS, WIDTH / 2, HEIGHT * 0.08, width, HEIGHT * 0.85, colour)
    return canvas


def jpeg_bytes(image: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality, optimize=False)
    return buf.getvalue()


# ---- edits: each returns (edited image, the devset-style transform text) -------------------------


def _enhance(cls: type, name: str) -> Callable[[Rng, Image.Image], tuple[Image.Image, str]]:
    def edit(rng: Rng, im: Image.Image) -> tuple[Image.Image, str]:
        f = float(rng.choice([rng.uniform(0.6, 0.85), rng.uniform(1.2, 1.5)]))
        return cls(im).enhance(f), f"{name} x{f:.2f}"

    return edit


def _hue(rng: Rng, im: Image.Image) -> tuple[Image.Image, str]:
    shift = int(rng.integers(15, 60)) * int(rng.choice([-1, 1]))
    h, s, v = im.convert("HSV").split()
    h = h.point(lambda p: (p + shift) % 256)
    return Image.merge("HSV", (h, s, v)).convert("RGB"), f"hue {shift:+d}"


def _gamma(rng: Rng, im: Image.Image) -> tuple[Image.Image, str]:
    g = float(rng.choice([rng.uniform(0.6, 0.8), rng.uniform(1.3, 1.7)]))
    lut = [int(255 * (i / 255) ** g + 0.5) for i in range(256)] * 3
    return im.point(lut), f"gamma {g:.2f}"


def _jpeg(rng: Rng, im: Image.Image) -> tuple[Image.Image, str]:
    q = int(rng.integers(8, 30))
    return Image.open(io.BytesIO(jpeg_bytes(im, q))).convert("RGB"), f"jpeg q{q}"


def _rescale(rng: Rng, im: Image.Image) -> tuple[Image.Image, str]:
    f = float(rng.choice([rng.uniform(0.3, 0.8), rng.uniform(1.2, 1.8)]))
    size = (max(8, round(im.width * f)), max(8, round(im.height * f)))
    return im.resize(size, Image.Resampling.BICUBIC), f"rescale x{f:.2f}"


def _gaussian(rng: Rng, im: Image.Image) -> tuple[Image.Image, str]:
    sigma = int(rng.integers(5, 20))
    arr = np.asarray(im, dtype=np.float32) + rng.normal(0, sigma, (im.height, im.width, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB"), f"gaussian noise sigma{sigma}"


def _crop(rng: Rng, im: Image.Image) -> tuple[Image.Image, str]:
    fw, fh = rng.uniform(0.05, 0.25), rng.uniform(0.05, 0.25)
    where = str(rng.choice(["center", "top", "bottom", "one_side"]))
    cw, ch = round(im.width * fw), round(im.height * fh)
    x0 = {"center": cw // 2, "one_side": int(rng.choice([0, cw]))}.get(where, cw // 2)
    y0 = {"center": ch // 2, "top": ch, "bottom": 0}.get(where, ch // 2)
    box = (x0, y0, x0 + im.width - cw, y0 + im.height - ch)
    return im.crop(box), f"crop {where} -{fw:.0%}w -{fh:.0%}h"


def _pad(rng: Rng, im: Image.Image) -> tuple[Image.Image, str]:
    frac = rng.uniform(0.05, 0.2)
    colour = tuple(int(c) for c in [(255, 255, 255), (240, 240, 240), (0, 0, 0)][int(rng.integers(0, 3))])
    side = str(rng.choice(["all", "sides", "topbottom"]))
    px, py = round(im.width * frac), round(im.height * frac)
    border = {"all": (px, py, px, py), "sides": (px, 0, px, 0), "topbottom": (0, py, 0, py)}[side]
    return ImageOps.expand(im, border, fill=colour), f"pad {side} {frac:.0%} {colour}"


def _letterbox(rng: Rng, im: Image.Image) -> tuple[Image.Image, str]:
    colour = tuple(int(c) for c in [(0, 0, 0), (240, 240, 240), (255, 255, 255)][int(rng.integers(0, 3))])
    side = max(im.size)
    out = Image.new("RGB", (side, side), colour)
    out.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
    return out, f"letterbox to square {colour}"


EDITS: dict[str, Callable[[Rng, Image.Image], tuple[Image.Image, str]]] = {
    "brightness": _enhance(ImageEnhance.Brightness, "brightness"),
    "contrast": _enhance(ImageEnhance.Contrast, "contrast"),
    "saturation": _enhance(ImageEnhance.Color, "saturation"),
    "hue": _hue,
    "gamma": _gamma,
    "jpeg": _jpeg,
    "rescale": _rescale,
    "gaussian": _gaussian,
    "crop": _crop,
    "pad": _pad,
    "letterbox": _letterbox,
}


def _product_ids(rng: Rng, n: int) -> list[str]:
    """Unique 10-digit ids shaped like the devset's (article number + 3-digit colour code)."""
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:
        pid = f"0{int(rng.integers(100_000, 1_000_000)):06d}{int(rng.integers(1, 120)):03d}"
        if pid not in seen:
            seen.add(pid)
            ids.append(pid)
    return ids


def generate(
    out_dir: str | Path, n_products: int = 40, n_queries_per_kind: int = 2, seed: int = 0, n_other: int = 3
) -> dict:
    """Write inventory/, queries/, labels.json and catalog.csv under `out_dir`; return the labels.

    Every kind in KINDS gets `n_queries_per_kind` queries; edited queries use distinct products while
    there are enough. `n_other` extra non-top products (jeans) appear only in the CSV and `other/`.
    """
    out = Path(out_dir)
    for sub in ("inventory", "queries", "other"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)  # stale files from a bigger run would pollute the set
        (out / sub).mkdir(parents=True)
    rng = np.random.default_rng(seed)
    ids = _product_ids(rng, n_products + n_other)
    inventory, others = ids[:n_products], ids[n_products:]

    layouts: dict[str, int] = {}
    photos: dict[str, bytes] = {}
    for pid in inventory:
        layouts[pid] = int(rng.integers(0, 2**31))
        photos[pid] = jpeg_bytes(render_product(rng, layout_seed=layouts[pid]))
        (out / "inventory" / f"{pid}.jpg").write_bytes(photos[pid])
    for pid in others:
        (out / "other" / f"{pid}.jpg").write_bytes(jpeg_bytes(render_jeans(rng)))

    plan = [kind for kind in KINDS for _ in range(n_queries_per_kind)]
    order = rng.permutation(len(plan))  # shuffled names, as in the devset
    queries: dict[str, dict] = {}
    source_cycle = list(rng.permutation(inventory)) if inventory else []
    for i, idx in enumerate(order.tolist()):
        kind = plan[idx]
        name = f"q_{i + 1:05d}.jpg"
        pid = str(source_cycle[i % len(source_cycle)]) if source_cycle else ""
        if kind == "distractor" or not pid:
            data = jpeg_bytes(render_product(rng))
            entry = {
                "category": "distractor",
                "ignore": [],
                "matches": [],
                "transform": "generated photo of a product absent from the inventory",
            }
        elif kind == "variant":
            # Same layout and cut, another fabric colour: the generated analogue of a colourway.
            img = render_product(rng, layout_seed=layouts[pid], colour=_colour(rng))
            data = jpeg_bytes(img)
            entry = {
                "category": "variant",
                "ignore": [pid],
                "matches": [],
                "transform": f"another colour of product {pid} (same layout)",
            }
        elif kind == "exact":
            data = photos[pid]
            entry = {"category": "1", "ignore": [], "matches": [pid], "transform": "exact byte copy"}
        else:
            src = Image.open(io.BytesIO(photos[pid])).convert("RGB")
            edited, text = EDITS[kind](rng, src)
            data = jpeg_bytes(edited)
            entry = {"category": EDIT_KINDS[kind], "ignore": [], "matches": [pid], "transform": text}
        (out / "queries" / name).write_bytes(data)
        queries[name] = entry

    counts = Counter(q["category"] for q in queries.values())
    labels = {
        "counts": dict(sorted(counts.items())),
        "inventory": sorted(inventory),
        "queries": queries,
        "version": LABELS_VERSION,
        "seed": seed,
    }
    (out / "labels.json").write_text(json.dumps(labels, indent=1) + "\n")
    _write_catalog(out / "catalog.csv", rng, inventory, others)
    return labels


def _write_catalog(path: Path, rng: Rng, tops: list[str], others: list[str]) -> None:
    """The original system's CSV: image paths relative to the CSV's folder, first URL = product photo."""
    rows = [(pid, f"inventory/{pid}.jpg", str(rng.choice(TOPS))) for pid in tops]
    rows += [(pid, f"other/{pid}.jpg", OTHER_CATEGORY) for pid in others]
    rows.sort()
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["productId", "imageUrlStr", "categories"])
        for pid, first, cat in rows:
            # Secondary photos are never fetched (only the first URL is); .invalid never resolves.
            extra = [f"https://img.example.invalid/{pid}/{k}.jpg" for k in (2, 3)]
            writer.writerow([pid, ";".join([first, *extra]), cat])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Generate a labelled near-duplicate sample set.")
    ap.add_argument("out_dir")
    ap.add_argument("--products", type=int, default=40)
    ap.add_argument("--per-kind", type=int, default=2, help="queries per kind ({})".format(", ".join(KINDS)))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--other", type=int, default=3, help="non-top catalog rows (jeans)")
    args = ap.parse_args(argv)
    labels = generate(args.out_dir, args.products, args.per_kind, args.seed, args.other)
    print(f"{len(labels['inventory'])} products, {len(labels['queries'])} queries -> {args.out_dir}")


if __name__ == "__main__":
    main()
