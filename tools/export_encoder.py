#!/usr/bin/env python3
"""Export an image encoder to ONNX for NEARDUP_EMBEDDING_MODEL (needs torch; neardup itself does not).

    # torchvision ResNet50, penultimate layer (2048-d), ImageNet weights (downloaded by torchvision)
    python tools/export_encoder.py resnet50 -o resnet50.onnx
    # ... or your own fine-tuned ResNet50 state_dict (a fashion model, say)
    python tools/export_encoder.py resnet50 --weights my_fashion_resnet50.pth -o fashion.onnx
    # an open_clip image tower (512-d for ViT-B-32)
    python tools/export_encoder.py open_clip --model ViT-B-32 --pretrained laion2b_s34b_b79k -o clip.onnx

    NEARDUP_EMBEDDING_MODEL=$PWD/resnet50.onnx neardup ingest catalog.csv

The ONNX file gets the metadata neardup's loader reads (common/signals/embedding.py): `neardup.layout`,
`neardup.input_size`, `neardup.mean`, `neardup.std`; the output is the embedding (batch, d). The
export is checked at the end by loading it exactly as the workers will.
Requirements: pip install torch torchvision onnx (and open_clip_torch for open_clip), onnxruntime.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's OPENAI_DATASET_MEAN
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
OPSET = 17


def write_metadata(
    path: Path,
    size: int | tuple[int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    layout: str = "NCHW",
    source: str = "",
) -> None:
    """Add (or replace) the metadata neardup reads, in place. Needs only the `onnx` package."""
    import onnx

    model = onnx.load(str(path))
    h, w = (size, size) if isinstance(size, int) else size
    values = {
        "neardup.layout": layout,
        "neardup.input_size": f"{h}x{w}",
        "neardup.mean": ",".join(f"{m:.8g}" for m in mean),
        "neardup.std": ",".join(f"{s:.8g}" for s in std),
        **({"neardup.source": source} if source else {}),
    }
    kept = [p for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def _export(module, size: int, out: Path) -> None:
    import torch

    module.eval()
    dummy = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        torch.onnx.export(
            module,
            dummy,
            str(out),
            input_names=["image"],
            output_names=["embedding"],
            dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=OPSET,
        )


def export_resnet50(out: Path, weights: str | None) -> None:
    import torch
    import torchvision

    if weights:
        model = torchvision.models.resnet50()
        state = torch.load(weights, map_location="cpu")
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        missing, unexpected = model.load_state_dict(state, strict=False)
        if [k for k in missing if not k.startswith("fc.")]:
            raise SystemExit(f"{weights}: not a ResNet50 state_dict (missing {missing[:5]} ...)")
    else:
        model = torchvision.models.resnet50(weights=torchvision.models.ResNet50_Weights.DEFAULT)
    model.fc = torch.nn.Identity()  # the penultimate layer: the pooled 2048 features
    _export(model, 224, out)
    write_metadata(
        out, 224, IMAGENET_MEAN, IMAGENET_STD, source=f"torchvision resnet50 {weights or 'DEFAULT'}"
    )


def export_open_clip(out: Path, name: str, pretrained: str | None) -> None:
    import open_clip
    import torch

    model, _, _ = open_clip.create_model_and_transforms(name, pretrained=pretrained)
    visual = model.visual
    size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
    mean = tuple(getattr(visual, "image_mean", None) or CLIP_MEAN)
    std = tuple(getattr(visual, "image_std", None) or CLIP_STD)

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model.encode_image(x)

    _export(Tower(), size, out)
    write_metadata(out, size, mean, std, source=f"open_clip {name} {pretrained or ''}".strip())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["resnet50", "open_clip"])
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--weights", help="resnet50: a local state_dict (.pth) instead of torchvision's weights")
    ap.add_argument("--model", default="ViT-B-32", help="open_clip: architecture name")
    ap.add_argument("--pretrained", default="laion2b_s34b_b79k", help="open_clip: weights tag or file")
    args = ap.parse_args(argv)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("export_encoder: needs torch (pip install torch torchvision onnx)", file=sys.stderr)
        return 2
    if args.kind == "resnet50":
        export_resnet50(args.output, args.weights)
    else:
        export_open_clip(args.output, args.model, args.pretrained)
    from common.signals.embedding import Encoder

    enc = Encoder(args.output)  # exactly as the workers load it
    dim = enc.check()
    print(f"{args.output}: {dim}-d embedding, input {enc.spec.height}x{enc.spec.width} {enc.spec.layout}, "
          f"signal {enc.signal}")  # fmt: skip
    print(f"use it with: NEARDUP_EMBEDDING_MODEL={args.output.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
