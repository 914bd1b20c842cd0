"""A learned image embedding (criterion 3: the same garment on another model or in another pose).

An ONNX image encoder, run by ONNX Runtime on the CPU, turns the garment region of a photo (the
content inside the studio background) into an L2-normalised vector, stored as int8 with one scale.
The signal is named after the model file's sha256 (`emb.<sha12>@1`), so an index can never mix the
vectors of two models.

How the model's input is prepared, in order of precedence:
- the model's metadata_props (written by tools/export_encoder.py): `neardup.layout` (NCHW or NHWC),
  `neardup.input_size` ("224" or "224x224", height x width), `neardup.mean` and `neardup.std`
  (three comma-separated numbers, on pixels scaled to [0, 1]);
- the input's static shape (size and layout: the axis of length 3 is the channel axis);
- defaults: 224 x 224, NCHW, ImageNet mean/std.
The first output, flattened, is the embedding (e.g. ResNet50's pooled 2048 features).
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from common.errors import ConfigError, NeardupError
from common.signals.normalise import trim_box

SIGNAL_VERSION = 1  # bump when preprocessing or packing changes: old vectors must not mix with new
SIGNAL_PREFIX = "emb."
INSTALL_HINT = "NEARDUP_EMBEDDING_MODEL needs onnxruntime: pip install 'neardup[embeddings]' (or onnxruntime)"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_SIZE = 224
_HEADER = struct.Struct("<BHf")  # format version, dimension, scale (int8 value * scale = component)
_FORMAT = 1
MAX_DIM = 65_535


class EmbeddingError(NeardupError):
    """The model failed on one image: that product's failure, never the worker's."""

    stage = "embed"


@dataclass(frozen=True)
class InputSpec:
    height: int
    width: int
    layout: str  # "NCHW" or "NHWC"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def signal_name(sha256_hex: str) -> str:
    """The index key of this model's vectors: another file (another model, or other weights) differs."""
    return f"{SIGNAL_PREFIX}{sha256_hex[:12]}@{SIGNAL_VERSION}"


def signal_for(path: str | os.PathLike[str]) -> str:
    try:
        return signal_name(file_sha256(path))
    except OSError as exc:
        raise ConfigError("bad_model", f"cannot read the embedding model {path}: {exc.strerror}") from None


# -- preprocessing ----------------------------------------------------------------------------------


def _triple(text: str, what: str) -> tuple[float, float, float]:
    parts = [float(p) for p in text.replace(" ", "").split(",") if p]
    if len(parts) != 3:
        raise ValueError(f"{what} must be three comma-separated numbers, got {text!r}")
    return (parts[0], parts[1], parts[2])


def _size(text: str) -> tuple[int, int]:
    parts = [int(p) for p in text.lower().replace(" ", "").split("x") if p]
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 8 or max(parts) > 4096:
        raise ValueError(f"input_size must be N or HxW (8..4096), got {text!r}")
    return (parts[0], parts[1])


def input_spec(shape: list[Any], metadata: dict[str, str]) -> InputSpec:
    """How to feed this model: metadata first, then the input's static shape, then the defaults."""
    dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
    if len(dims) != 4:
        raise ValueError(f"the model's input must be 4-D (batch, image), got shape {shape}")
    layout = metadata.get("neardup.layout", "").upper()
    if not layout:
        layout = "NHWC" if dims[3] == 3 and dims[1] != 3 else "NCHW"
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"neardup.layout must be NCHW or NHWC, got {layout!r}")
    hw = (dims[2], dims[3]) if layout == "NCHW" else (dims[1], dims[2])
    if "neardup.input_size" in metadata:
        height, width = _size(metadata["neardup.input_size"])
    elif hw[0] and hw[1]:
        height, width = hw[0], hw[1]
    else:
        height = width = DEFAULT_SIZE
    mean = _triple(metadata["neardup.mean"], "neardup.mean") if "neardup.mean" in metadata else IMAGENET_MEAN
    std = _triple(metadata["neardup.std"], "neardup.std") if "neardup.std" in metadata else IMAGENET_STD
    if min(std) <= 0:
        raise ValueError("neardup.std must be > 0")
    return InputSpec(int(height), int(width), layout, mean, std)


def garment_region(image: Image.Image, aspect: float = 1.0) -> Image.Image:
    """The content inside the studio background, padded with that background to the model's aspect
    (width / height), so the garment is neither cut (as a centre crop would) nor stretched."""
    rgb = image.convert("RGB")
    box = trim_box(rgb)
    content = rgb if box == (0, 0, *rgb.size) else rgb.crop(box)
    w, h = content.size
    # Background = the median colour of the photo's four corners (studio white or grey, usually).
    px = np.asarray(rgb)
    corners = np.stack([px[0, 0], px[0, -1], px[-1, 0], px[-1, -1]])
    fill = tuple(int(c) for c in np.median(corners, axis=0))
    target_w, target_h = (max(w, round(h * aspect)), h) if w / h < aspect else (w, max(h, round(w / aspect)))
    if (target_w, target_h) == (w, h):
        return content
    canvas = Image.new("RGB", (target_w, target_h), fill)
    canvas.paste(content, ((target_w - w) // 2, (target_h - h) // 2))
    return canvas


def to_tensor(image: Image.Image, spec: InputSpec) -> np.ndarray:
    """One image as the model's float32 input batch of 1 (garment region, resized, normalised)."""
    region = garment_region(image, spec.width / spec.height)
    small = region.resize((spec.width, spec.height), Image.Resampling.BILINEAR, reducing_gap=2.0)
    x: np.ndarray = np.asarray(small, dtype=np.float32) * (1.0 / 255.0)
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    if spec.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None], dtype=np.float32)


# -- vectors -------------------------------------------------------------------------------------------


def l2_normalised(vector: np.ndarray) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32).ravel()
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0.0:
        raise EmbeddingError("bad_output", "the model gave a zero or non-finite vector")
    return v / norm


def pack(unit: np.ndarray) -> bytes:
    """int8 per component with one float32 scale (max |component| / 127): 7 + d bytes, cosine error
    ~1e-4 against the float vector (tests/unit/test_embedding.py)."""
    v = np.asarray(unit, dtype=np.float32).ravel()
    if not 0 < len(v) <= MAX_DIM:
        raise EmbeddingError("bad_output", f"embedding of {len(v)} dimensions")
    scale = float(np.abs(v).max()) / 127.0 or 1.0
    q: npt.NDArray[np.int8] = np.clip(np.rint(v / scale), -127, 127).astype(np.int8)
    return _HEADER.pack(_FORMAT, len(v), scale) + q.tobytes()


def unpack(blob: bytes) -> np.ndarray:
    """The stored vector as float32, renormalised to unit length. ValueError when damaged."""
    if len(blob) < _HEADER.size:
        raise ValueError("embedding blob too short")
    fmt, dim, scale = _HEADER.unpack_from(blob)
    if fmt != _FORMAT or len(blob) != _HEADER.size + dim or not np.isfinite(scale) or scale <= 0:
        raise ValueError("damaged or foreign embedding blob")
    v = np.frombuffer(blob, dtype=np.int8, offset=_HEADER.size).astype(np.float32)
    norm = float(np.linalg.norm(v))
    if norm == 0.0:
        raise ValueError("zero embedding blob")
    return v / norm


def packed_size(dim: int) -> int:
    return _HEADER.size + dim


def dimension_of(blob: bytes) -> int:
    return int(_HEADER.unpack_from(blob)[1])


# -- the model -----------------------------------------------------------------------------------------


class Encoder:
    """One ONNX model in one process. ONNX Runtime sessions are thread-safe; each worker process is
    one of several per core, so the session runs on one thread (no oversubscription)."""

    def __init__(self, path: str | os.PathLike[str], threads: int = 1) -> None:
        self.path = Path(path)
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("needs_onnxruntime", INSTALL_HINT) from None
        if not self.path.is_file():
            raise ConfigError("bad_model", f"no embedding model at {self.path}")
        self.signal = signal_for(self.path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings of the optimiser are not the user's problem
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
            )
            first = self.session.get_inputs()[0]
            metadata = dict(self.session.get_modelmeta().custom_metadata_map or {})
            self.spec = input_spec(list(first.shape), metadata)
        except Exception as exc:  # a file that is not a model: protobuf, graph or shape errors
            raise ConfigError(
                "bad_model", f"{self.path} is not a usable ONNX image encoder: {_line(exc)}"
            ) from None
        self.input_name = first.name
        self.output_name = self.session.get_outputs()[0].name

    def vector(self, image: Image.Image) -> np.ndarray:
        """The unit embedding of one image; EmbeddingError when the model fails on it."""
        try:
            x = to_tensor(image, self.spec)
            out = self.session.run([self.output_name], {self.input_name: x})[0]
        except Exception as exc:
            raise EmbeddingError("model_failed", _line(exc)) from None
        return l2_normalised(np.asarray(out)[0] if np.ndim(out) > 1 else out)

    def embed(self, image: Image.Image) -> bytes:
        return pack(self.vector(image))

    def check(self) -> int:
        """Run one blank image through the model (a graph that cannot run fails here, at start, not on
        every product); returns the embedding's dimension."""
        try:
            return len(self.vector(Image.new("RGB", (self.spec.width, self.spec.height), "white")))
        except EmbeddingError as exc:
            raise ConfigError("bad_model", f"{self.path} does not run on an image: {exc.detail}") from None


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


_encoders: dict[tuple[int, str], Encoder] = {}
_encoders_lock = threading.Lock()


def encoder(path: str | os.PathLike[str], signal: str | None = None) -> Encoder:
    """This process's encoder for `path` (created on first use: after a fork, never inherited).

    `signal`: the name this process stores vectors under; a model file replaced on disk since then
    would put another model's vectors under it, so that is refused (restart the worker)."""
    key = (os.getpid(), str(path))
    with _encoders_lock:
        enc = _encoders.get(key)
        if enc is None:
            enc = _encoders[key] = Encoder(path)
    if signal is not None and enc.signal != signal:
        raise ConfigError(
            "signature_mismatch", f"{path} changed since this process started ({signal}): restart it"
        )
    return enc


def check_model(path: str | os.PathLike[str]) -> str:
    """Validate a model at start (CLI): ConfigError with one clear line, else its signal name."""
    enc = Encoder(path)
    enc.check()
    return enc.signal
