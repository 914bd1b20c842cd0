"""ONNX image encoders built in place with the `onnx` package (no weights to download): a tiny one
for the tests (the real ONNX Runtime path, in milliseconds), and a ResNet50-shaped one with random
weights for timing (benchmarks/bench_embedding.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _save(nodes, inits, out_name: str, out_dim: int, path: Path, size: int, meta: dict[str, str]) -> Path:
    graph = helper.make_graph(
        nodes,
        "encoder",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["batch", out_dim])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # readable by every onnxruntime >= 1.17
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def tiny_encoder(
    path: Path,
    seed: int = 0,
    size: int = 32,
    channels: int = 16,
    constant: bool = False,
    dark_fails: bool = True,
) -> Path:
    """1x1 conv + ReLU + global average pool: a colour-statistics embedding of `channels` dimensions,
    the same for a photo turned or mirrored. `constant`: a model that ignores its input (knows nothing).
    `dark_fails`: the output is gated by the image's mean brightness, so an all-black photo gives a zero
    vector, which the loader refuses (a model that fails on one image)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((channels, 3, 1, 1)).astype(np.float32)
    b = rng.standard_normal(channels).astype(np.float32) * 0.1
    if constant:
        w[:] = 0.0
        b = np.abs(b) + 0.5
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(b, "b"),
        numpy_helper.from_array(np.array([1.5], np.float32), "offset"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w", "b"], ["c"]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
    ]
    if dark_fails:
        nodes += [
            helper.make_node("ReduceMean", ["image"], ["m"], keepdims=1),  # over all axes: [N,1,1,1]
            helper.make_node("Add", ["m", "offset"], ["mo"]),
            helper.make_node("Relu", ["mo"], ["gate"]),
            helper.make_node("Mul", ["p", "gate"], ["pg"]),
            helper.make_node("Flatten", ["pg"], ["embedding"]),
        ]
    else:
        nodes.append(helper.make_node("Flatten", ["p"], ["embedding"]))
    meta = {"neardup.layout": "NCHW", "neardup.input_size": str(size)}
    return _save(nodes, inits, "embedding", channels, path, size, meta)


class _Builder:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.n = 0

    def conv(
        self, x: str, cin: int, cout: int, k: int, stride: int = 1, relu: bool = True, gain: float = 1.0
    ):
        self.n += 1
        w = (self.rng.standard_normal((cout, cin, k, k)) * gain * np.sqrt(2.0 / (cin * k * k))).astype(
            np.float32
        )
        name = f"conv{self.n}"
        self.inits += [
            numpy_helper.from_array(w, f"{name}.w"),
            numpy_helper.from_array(np.zeros(cout, np.float32), f"{name}.b"),
        ]
        pad = k // 2
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, f"{name}.w", f"{name}.b"],
                [name],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[pad] * 4,
            )
        )
        if not relu:
            return name
        self.nodes.append(helper.make_node("Relu", [name], [f"{name}.r"]))
        return f"{name}.r"


def resnet50_encoder(path: Path, seed: int = 0) -> Path:
    """ResNet50's topology (bottlenecks 3-4-6-3, batch norm folded into the convolutions) with random
    weights, 224 x 224 NCHW input, the pooled 2048 features as output: ~23.5M parameters, ~4 GFLOPs,
    the cost of the real model (tools/export_encoder.py) without its knowledge."""
    b = _Builder(seed)
    x = b.conv("image", 3, 64, 7, 2)
    b.nodes.append(
        helper.make_node("MaxPool", [x], ["pool0"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4)
    )
    x, cin = "pool0", 64
    for stage, (blocks, width) in enumerate(((3, 64), (4, 128), (6, 256), (3, 512))):
        for i in range(blocks):
            stride = 2 if i == 0 and stage > 0 else 1
            y = b.conv(x, cin, width, 1)
            y = b.conv(y, width, width, 3, stride)
            y = b.conv(y, width, 4 * width, 1, relu=False, gain=0.2)
            short = b.conv(x, cin, 4 * width, 1, stride, relu=False) if i == 0 else x
            b.n += 1
            b.nodes.append(helper.make_node("Add", [y, short], [f"add{b.n}"]))
            b.nodes.append(helper.make_node("Relu", [f"add{b.n}"], [f"add{b.n}.r"]))
            x, cin = f"add{b.n}.r", 4 * width
    b.nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    b.nodes.append(helper.make_node("Flatten", ["gap"], ["embedding"]))
    meta = {
        "neardup.layout": "NCHW",
        "neardup.input_size": "224",
        "neardup.mean": "0.485,0.456,0.406",
        "neardup.std": "0.229,0.224,0.225",
    }
    return _save(b.nodes, b.inits, "embedding", 2048, path, 224, meta)


def parameters(path: Path) -> int:
    model = onnx.load(str(path))
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer)
