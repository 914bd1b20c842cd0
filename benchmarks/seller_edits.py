"""Labelled query sets of the edits sellers make, in the devset's labels.json shape.

    python benchmarks/seller_edits.py OUT_DIR --seed 1 --per-family 40 --generated 100

Inventory: the devset's inventory photos (read from ../shared/devset, written only under OUT_DIR,
which should be a temp dir: devset images never go into the repository) plus `--generated` tops
from common/samplegen. A share of those products (`--held-out`) is NOT indexed: their edited copies
are distractors (no true match, but the same kind of photo and edit). Queries per family, each with
its parameters drawn from a wide range:

    mirror, rotate, perspective, bgswap, blur, screenshot, saltpepper, crop, pad, badge, rescale,
    gaussian, photometric (brightness/contrast/hue/gamma), reencode (JPEG/PNG/WebP)

plus the devset's colour variants (category `variant`) and its distractor photos.

labels.json: `inventory`, `queries{name: {category, matches, ignore, transform, family, split}}`,
`counts`. `split` is `tune` or `held` by a hash of the PRODUCT (the variant's sibling), the same for
every seed: thresholds are chosen on `tune` and reported on `held`, which shares no product with it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import samplegen  # noqa: E402

DEVSET = ROOT.parent / "shared" / "devset"
Rng = np.random.Generator
Edit = Callable[[Rng, Image.Image], tuple[Image.Image, str]]

# family -> category in the devset's sense: "2" colour/encoding edits, "4" crop/scale/noise/pad,
# "s" the seller edits the devset does not have.
CATEGORY = {
    "mirror": "s",
    "rotate": "s",
    "perspective": "s",
    "bgswap": "s",
    "blur": "s",
    "screenshot": "s",
    "saltpepper": "4",
    "crop": "4",
    "pad": "4",
    "badge": "2",
    "rescale": "4",
    "gaussian": "4",
    "photometric": "2",
    "reencode": "2",
}


# bgswap draws only photos whose backdrop mask leaves at least this much garment (see build).
BGSWAP_MAX_SHARE = 0.8


def split_of(product_id: str) -> str:
    """`tune` or `held`, fixed per product (not per seed), so the two parts never share a product."""
    return "tune" if hashlib.sha1(f"split:{product_id}".encode()).digest()[0] % 2 == 0 else "held"


def _held_out(product_id: str, share: float) -> bool:
    """Products left out of the index (their edited copies are distractors)."""
    return hashlib.sha1(f"out:{product_id}".encode()).digest()[1] < 256 * share


def _u(rng: Rng, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _sign(rng: Rng) -> int:
    return int(rng.choice([-1, 1]))


def _border_colour(arr: np.ndarray) -> np.ndarray:
    edge = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    return np.median(edge, axis=0)


def background_mask(im: Image.Image, tol: float = 22.0) -> np.ndarray:
    """Studio background: pixels near the backdrop colour connected to the border (float 0..1, feathered).

    The backdrop colour is read on a ring 1 % of the side inside the border: many catalogue photos
    carry a 1-px edge line ~20 grey levels darker than their backdrop (a resize artefact), and a
    colour read on that line left most of the backdrop in place, in blotches of JPEG blocks."""
    arr = np.asarray(im.convert("RGB")).astype(np.int16)
    k = max(2, round(0.01 * max(arr.shape[:2])))
    diff = np.abs(arr - _border_colour(arr[k:-k, k:-k])).max(axis=2)
    near = diff <= tol
    ring = np.zeros_like(near)
    ring[:k], ring[-k:], ring[:, :k], ring[:, -k:] = True, True, True, True
    near = (near | (ring & (diff <= 2 * tol))).astype(np.uint8)  # the edge line goes with the backdrop
    n, lab = cv2.connectedComponents(near, connectivity=4)
    edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    mask = np.isin(lab, edge[edge > 0]).astype(np.float32)
    return cv2.GaussianBlur(mask, (0, 0), 1.0)


# ---- the families -----------------------------------------------------------------------------------


def _light_edit(rng: Rng, im: Image.Image) -> tuple[Image.Image, str]:
    kind = str(rng.choice(["none", "none", "brightness", "contrast", "saturation", "jpeg"]))
    if kind == "none":
        return im, ""
    if kind == "jpeg":
        q = int(rng.integers(40, 80))
        return Image.open(io.BytesIO(_jpeg(im, q))).convert("RGB"), f" + jpeg q{q}"
    f = _u(rng, 0.85, 1.15)
    cls = {"brightness": ImageEnhance.Brightness, "contrast": ImageEnhance.Contrast}.get(
        kind, ImageEnhance.Color
    )
    return cls(im).enhance(f), f" + {kind} x{f:.2f}"


def mirror(rng: Rng, im: Image.Image) -> tuple[Image.Image, str]:
    out, extra = _light_edit(rng, ImageOps.mirror(im))
    return out, "mirror" + extra


def _fill(im: Image.Image) -> tuple[int, int, int]:
    return tuple(int(v) for v in _border_colour(np.asarray(im.convert("RGB"))))


def rotate(rng: Rng, im: Image.Image) -> tuple[Image.Image, str]:
    angle = _u(rng, 2, 10) * _sign(rng)
    if rng.random() < 0.5:
        out = im.rotate(angle, Image.Resampling.BICUBIC, expand=False, fillcolor=_fill(im))
        return out, f"rotate {angle:+.1f} fill"
    # Re-crop to the largest centred box free of the rotated corners, then back to the original size.
    a = np.radians(abs(angle))
    w, h = im.size
    cw = (w * np.cos(a) - h * np.sin(a)) / np.cos(2 * a) if np.cos(2 * a) > 0 else w * 0.7
    ch = (h * np.cos(a) - w * np.sin(a)) / np.cos(2 * a) if np.cos(2 * a) > 0 else h * 0.7
    cw, ch = max(0.5 * w, min(cw, w)), max(0.5 * h, min(ch, h))
    big = im.rotate(angle, Image.Resampling.BICUBIC, expand=False, fillcolor=_fill(im))
    box = (round((w - cw) / 2), round((h - ch) / 2), round((w + cw) / 2), round((h + ch) / 2))
    return big.crop(box).resize(im.size, Image.Resampling.BICUBIC), f"rotate {angle:+.1f} recrop"


def perspective(rng: Rng, im: Image.Image) -> tuple[Image.Image, str]:
    w, h = im.size
    amt = _u(rng, 0.02, 0.08)
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    if rng.random() < 0.5:  # keystone: one edge narrower
        d = amt * w
        dst = (
            np.float32([[d, 0], [w - d, 0], [w, h], [0, h]])
            if rng.random() < 0.5
            else np.float32([[0, 0], [w, 0], [w - d, h], [d, h]])
        )
        kind = "keystone"
    else:  # each corner moved at random
        dst = src + rng.uniform(-amt, amt, (4, 2)).astype(np.float32) * np.float32([w, h])
        kind = "corners"
    m = cv2.getPerspectiveTransform(src, dst)
    arr = cv2.warpPerspective(np.asarray(im), m, (w, h), flags=cv2.INTER_CUBIC, borderValue=_fill(im))
    return Image.fromarray(arr), f"perspective {kind} {amt:.0%}"


def bgswap(rng: Rng, im: Image.Image) -> tuple[Image.Image, str]:
    mask = background_mask(im)[..., None]
    w, h = im.size
    c1 = rng.integers(0, 256, 3).astype(np.float32)
    if rng.random() < 0.5:
        bg = np.broadcast_to(c1, (h, w, 3))
        kind = f"flat {tuple(int(v) for v in c1)}"
    else:
        c2 = rng.integers(0, 256, 3).astype(np.float32)
        t = np.linspace(0, 1, h if rng.random() < 0.6 else w, dtype=np.float32)
        t = t[:, None, None] if len(t) == h else t[None, :, None]
        bg = c1 * (1 - t) + c2 * t
        kind = "gradient"
    out = np.asarray(im, dtype=np.float32) * (1 - mask) + bg * mask
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)), f"bgswap {kind}"


def blur(rng: Rng, im: Image.Image) -> tuple[Image.Image, str]:
    r = _u(rng, 1.5, 3.5)
    return im.filter(ImageFilter.GaussianBlur(r)), f"blur {r:.1f}px"


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def screenshot(rng: Rng, im: Image.Image) -> tuple[Image.Image, str]:
    """The photo inside a phone screenshot: status bar, title band, price text, a button."""
    w = int(rng.integers(360, 720))
    scale = w / im.width * _u(rng, 0.8, 1.0)
    photo = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BICUBIC)
    status, title = int(w * _u(rng, 0.05, 0.08)), int(w * _u(rng, 0.08, 0.16))
    below = int(w * _u(rng, 0.15, 0.4))
    h = status + title + photo.height + below
    dark = rng.random() < 0.3
    page = (18, 18, 18) if dark else (255, 255, 255)
    ink = (235, 235, 235) if dark else (20, 20, 20)
    canvas = Image.new("RGB", (w, h), page)
    d = ImageDraw.Draw(canvas)
    bar = tuple(int(v) for v in rng.integers(0, 256, 3)) if rng.random() < 0.5 else page
    d.rectangle([0, 0, w, status], fill=bar)
    d.text((int(w * 0.05), status // 2), f"{int(rng.integers(0, 24))}:{int(rng.integers(0, 60)):02d}",
           fill=ink, font=_font(max(8, status // 2)), anchor="lm")  # fmt: skip
    d.rectangle([w - int(w * 0.12), status // 3, w - int(w * 0.05), 2 * status // 3], outline=ink)
    d.text((int(w * 0.05), status + title // 2), "".join(chr(int(c)) for c in rng.integers(65, 91, 8)),
           fill=ink, font=_font(max(8, title // 3)), anchor="lm")  # fmt: skip
    canvas.paste(photo, ((w - photo.width) // 2, status + title))
    y = status + title + photo.height
    d.text((int(w * 0.05), y + below // 4), f"EUR {rng.uniform(5, 90):.2f}", fill=ink,
           font=_font(max(8, below // 5)), anchor="lm")  # fmt: skip
    d.rounded_rectangle([int(w * 0.05), y + below // 2, int(w * 0.95), y + int(below * 0.85)],
                        radius=8, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))  # fmt: skip
    return canvas, f"screenshot w{w} photo x{scale:.2f}"


def saltpepper(rng: Rng, im: Image.Image) -> tuple[Image.Image, str]:
    p = _u(rng, 0.01, 0.08)
    arr = np.asarray(im).copy()
    hit = rng.random(arr.shape[:2]) < p
    arr[hit] = np.where(rng.random((int(hit.sum()), 1)) < 0.5, 0, 255)
    return Image.fromarray(arr), f"salt&pepper {p:.1%}"


def crop(rng: Rng, im: Image.Image) -> tuple[Image.Image, str]:
    w, h = im.size
    where = str(rng.choice(["center", "side", "top", "bottom"]))
    f = _u(rng, 0.05, 0.30)
    g = _u(rng, 0.0, f)
    if where == "center":
        box = (w * f / 2, h * g / 2, w * (1 - f / 2), h * (1 - g / 2))
    elif where == "side":
        box = (w * f, 0, w, h) if rng.random() < 0.5 else (0, 0, w * (1 - f), h)
    elif where == "top":
        box = (0, h * f, w, h)
    else:
        box = (0, 0, w, h * (1 - f))
    return im.crop(tuple(round(v) for v in box)), f"crop {where} {f:.0%}"


def pad(rng: Rng, im: Image.Image) -> tuple[Image.Image, str]:
    f = _u(rng, 0.05, 0.3)
    colour = tuple(int(v) for v in (rng.integers(0, 256, 3) if rng.random() < 0.4 else [255, 255, 255]))
    px, py = round(im.width * f), round(im.height * f)
    side = str(rng.choice(["all", "sides", "topbottom", "one"]))
    border = {"all": (px, py, px, py), "sides": (px, 0, px, 0), "topbottom": (0, py, 0, py),
              "one": (0, 0, px, 0)}[side]  # fmt: skip
    return ImageOps.expand(im, border, fill=colour), f"pad {side} {f:.0%} {colour}"


def badge(rng: Rng, im: Image.Image) -> tuple[Image.Image, str]:
    out = im.copy()
    d = ImageDraw.Draw(out)
    s = int(im.width * _u(rng, 0.12, 0.3))
    corner = int(rng.integers(0, 4))
    x = 6 if corner in (0, 3) else im.width - s - 6
    y = 6 if corner in (0, 1) else im.height - s - 6
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    (d.ellipse if rng.random() < 0.5 else d.rectangle)([x, y, x + s, y + s], fill=colour)
    word = str(rng.choice(["SALE", "NEW", "-30%", "HOT", "LOGO"]))
    d.text((x + s // 2, y + s // 2), word, fill=(255, 255, 255), font=_font(max(8, s // 4)), anchor="mm")
    return out, f"badge {s}px corner{corner}"


def rescale(rng: Rng, im: Image.Image) -> tuple[Image.Image, str]:
    f = float(np.exp(rng.uniform(np.log(0.25), np.log(2.0))))
    size = (max(8, round(im.width * f)), max(8, round(im.height * f)))
    method = rng.choice([Image.Resampling.BICUBIC, Image.Resampling.BILINEAR, Image.Resampling.NEAREST])
    return im.resize(size, method), f"rescale x{f:.2f}"


def gaussian(rng: Rng, im: Image.Image) -> tuple[Image.Image, str]:
    sigma = _u(rng, 4, 25)
    arr = np.asarray(im, dtype=np.float32) + rng.normal(0, sigma, (im.height, im.width, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), f"gaussian sigma{sigma:.0f}"


def photometric(rng: Rng, im: Image.Image) -> tuple[Image.Image, str]:
    kind = str(rng.choice(["brightness", "contrast", "hue", "gamma"]))
    if kind == "hue":
        shift = int(rng.integers(10, 80)) * _sign(rng)
        h, s, v = im.convert("HSV").split()
        out = Image.merge("HSV", (h.point(lambda p: (p + shift) % 256), s, v)).convert("RGB")
        return out, f"hue {shift:+d}"
    if kind == "gamma":
        g = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        return im.point([int(255 * (i / 255) ** g + 0.5) for i in range(256)] * 3), f"gamma {g:.2f}"
    f = float(np.exp(rng.uniform(np.log(0.55), np.log(1.6))))
    cls = ImageEnhance.Brightness if kind == "brightness" else ImageEnhance.Contrast
    return cls(im).enhance(f), f"{kind} x{f:.2f}"


def _jpeg(im: Image.Image, q: int, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=q, **kw)
    return buf.getvalue()


def reencode(rng: Rng, im: Image.Image) -> tuple[Image.Image, str]:
    # The bytes are what changes; the image returned is the decoded re-encode (saved again losslessly
    # by `build` as PNG, so the loss is exactly this one's).
    kind = str(rng.choice(["jpeg", "progressive", "webp", "png"]))
    if kind == "png":
        return im, "reencode png"
    q = int(rng.integers(10, 95))
    if kind == "webp":
        buf = io.BytesIO()
        im.save(buf, "WEBP", quality=q)
        data = buf.getvalue()
    else:
        data = _jpeg(im, q, progressive=kind == "progressive")
    return Image.open(io.BytesIO(data)).convert("RGB"), f"reencode {kind} q{q}"


FAMILIES: dict[str, Edit] = {
    "mirror": mirror,
    "rotate": rotate,
    "perspective": perspective,
    "bgswap": bgswap,
    "blur": blur,
    "screenshot": screenshot,
    "saltpepper": saltpepper,
    "crop": crop,
    "pad": pad,
    "badge": badge,
    "rescale": rescale,
    "gaussian": gaussian,
    "photometric": photometric,
    "reencode": reencode,
}


def _save(im: Image.Image, family: str, rng: Rng) -> tuple[bytes, str]:
    """How a seller's copy is stored: JPEG q80-95, or PNG for a re-encode that is already lossy."""
    if family == "reencode":
        buf = io.BytesIO()
        im.save(buf, "PNG")
        return buf.getvalue(), ".png"
    return _jpeg(im, int(rng.integers(80, 96))), ".jpg"


def _draw(rng: Rng, pids: list[str], photos: dict[str, bytes], family: str) -> tuple[str, Image.Image]:
    """A product to edit. bgswap skips white garments on a white backdrop: a colour cut erases the
    garment itself, which no seller's background tool does (another product, about 1 draw in 10)."""
    for _ in range(20 if family == "bgswap" else 1):
        pid = str(rng.choice(pids))
        src = Image.open(io.BytesIO(photos[pid])).convert("RGB")
        if family != "bgswap" or background_mask(src).mean() <= BGSWAP_MAX_SHARE:
            break
    return pid, src


def build(
    out_dir: str | Path,
    seed: int = 1,
    per_family: int = 40,
    n_generated: int = 100,
    held_out: float = 0.12,
    devset: Path = DEVSET,
    families: tuple[str, ...] = tuple(FAMILIES),
) -> dict:
    """Write inventory/, queries/ and labels.json under `out_dir`; return the labels."""
    out = Path(out_dir)
    for sub in ("inventory", "queries"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
        (out / sub).mkdir(parents=True)
    rng = np.random.default_rng(seed)
    photos: dict[str, bytes] = {}
    dev_labels: dict | None = None
    if (devset / "labels.json").is_file():
        dev_labels = json.loads((devset / "labels.json").read_text())
        for pid in dev_labels["inventory"]:
            photos[pid] = (devset / "inventory" / f"{pid}.jpg").read_bytes()
    # Generated tops: the same products for every seed (their own fixed seed), edits vary with `seed`.
    gen_rng = np.random.default_rng(12345)
    for i in range(n_generated):
        photos[f"g{i:05d}"] = samplegen.jpeg_bytes(samplegen.render_product(gen_rng))
    indexed = [p for p in photos if not _held_out(p, held_out)]
    outside = [p for p in photos if _held_out(p, held_out)]
    for pid in indexed:
        (out / "inventory" / f"{pid}.jpg").write_bytes(photos[pid])

    queries: dict[str, dict] = {}

    def add(data: bytes, ext: str, entry: dict) -> None:
        name = f"q_{len(queries) + 1:05d}{ext}"
        (out / "queries" / name).write_bytes(data)
        queries[name] = entry

    n_out = max(1, round(per_family * held_out))  # distractors per family, of the same kind of edit
    for family in families:
        edit = FAMILIES[family]
        for k in range(per_family + n_out):
            truth = k < per_family
            pid, src = _draw(rng, indexed if truth else outside, photos, family)
            im, text = edit(rng, src)
            data, ext = _save(im, family, rng)
            add(data, ext, {
                "category": CATEGORY[family] if truth else "distractor",
                "matches": [pid] if truth else [],
                "ignore": [],
                "transform": text if truth else f"{text} of a product not in the index",
                "family": family if truth else "distractor",
                "split": split_of(pid),
            })  # fmt: skip
    if dev_labels is not None:  # the devset's real variants and distractor photos, as they are
        for qname, q in dev_labels["queries"].items():
            if q["category"] not in ("variant", "distractor"):
                continue
            sibling = q["ignore"][0] if q["ignore"] else qname
            if q["ignore"] and q["ignore"][0] not in indexed:
                continue  # the variant's sibling is not indexed: nothing to flag
            data = (devset / "queries" / qname).read_bytes()
            add(data, ".jpg", {**q, "family": q["category"], "split": split_of(sibling)})

    labels = {
        "counts": dict(sorted(Counter(q["family"] for q in queries.values()).items())),
        "inventory": sorted(indexed),
        "queries": queries,
        "version": "seller-edits-v1",
        "seed": seed,
    }
    (out / "labels.json").write_text(json.dumps(labels, indent=1) + "\n")
    return labels


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--per-family", type=int, default=40)
    ap.add_argument("--generated", type=int, default=100, help="generated tops added to the inventory")
    ap.add_argument("--held-out", type=float, default=0.12, help="share of products left out of the index")
    ap.add_argument("--devset", type=Path, default=DEVSET)
    ap.add_argument("--families", default=",".join(FAMILIES))
    args = ap.parse_args(argv)
    fams = tuple(f for f in args.families.split(",") if f)
    labels = build(args.out_dir, args.seed, args.per_family, args.generated, args.held_out, args.devset, fams)
    print(f"{len(labels['inventory'])} products, {len(labels['queries'])} queries -> {args.out_dir}")
    print(labels["counts"])


if __name__ == "__main__":
    main()
