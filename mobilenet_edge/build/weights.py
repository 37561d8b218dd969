"""Load and save MobileNet V1 weights: Google's TF-slim ``.tflite`` files, own ``.safetensors``
checkpoints, and PyTorch ``.pt``/``.pth`` state dicts (``torch.load(weights_only=True)`` only).

Nothing here unpickles untrusted code: ``.safetensors`` is a plain tensor container, ``.tflite`` is
read through the LiteRT interpreter, and a ``.pt`` whose unpickling would need anything beyond
tensors and plain containers is refused.

TF-slim ``.tflite`` import (Google's ``mobilenet_v1_{alpha}_{res}[_quant].tflite``):

- Tensors are read with the LiteRT interpreter (``ai_edge_litert``; ``tflite_runtime`` as a
  fallback), ``get_tensor_details()`` / ``get_tensor()``; no op is run.
- Converter-mangled names such as
  ``MobilenetV1/MobilenetV1/Conv2d_0/Conv2D_Fold;MobilenetV1/MobilenetV1/Conv2d_0/weights_quant/FakeQuantWithMinMaxVars``
  are split at ``;`` and matched on the layer name that precedes ``/weights_quant``, ``/weights``,
  ``/depthwise_weights`` (4-D weight tensors) or ``/BatchNorm_Fold/bias``, ``/biases``,
  ``/Conv2D_bias``, ``/depthwise_bias`` (1-D bias tensors). Activation tensors carry the same layer
  names but are never 1-D, and their weight-like segments are not of those forms.
- Layouts: conv weights OHWI -> OIHW, depthwise 1HWC -> (C, 1, H, W), logits (K, 1, 1, C) -> Linear
  (K, C).
- Quantized tensors are dequantized as ``scale * (q - zero_point)`` (uint8/int8 weights, int32
  biases whose scale is input scale x weight scale; per-channel scales along
  ``quantized_dimension`` too). Float tensors (float32/float16, no quantization) are used as they
  are, so float ``.tflite`` files of the family load through the same path.
- Batch norm is folded into these files (conv weights and a per-channel bias). The folded bias is
  carried by the model's ``BatchNorm2d`` set to an affine pass-through: ``running_mean = 0``,
  ``running_var = 1``, ``weight = sqrt(1 + eps)``, ``bias = folded bias``, so in eval mode
  ``BN(x) = (x - 0) / sqrt(1 + eps) * sqrt(1 + eps) + b = x + b`` within float32 rounding (one ulp).
  The model keeps its plain conv -> BN -> ReLU6 structure and exports like any other.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.bundle import atomic_path, sha256_file
from ..core.errors import MobilenetEdgeError, UsageError, WeightsError
from ..core.images import Preprocessing
from ..core.labels import background_offset, imagenet_labels
from ..core.variants import BLOCKS, STEM_CHANNELS, make_channels

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .model import MobileNetV1

SUFFIXES = (".tflite", ".safetensors", ".pt", ".pth")
CHECKPOINT_FORMAT = "mobilenet-edge-weights"
CHECKPOINT_FORMAT_VERSION = 1

#: TF-slim layer names in network order (stem, 13 x depthwise/pointwise, logits).
TFLITE_LAYERS: tuple[str, ...] = (
    ("Conv2d_0",)
    + tuple(f"Conv2d_{i}_{kind}" for i in range(1, len(BLOCKS) + 1) for kind in ("depthwise", "pointwise"))
    + ("Conv2d_1c_1x1",)
)

_LAYER = r"(Conv2d_\d+(?:_depthwise|_pointwise)?|Conv2d_1c_1x1)"
_WEIGHT_RE = re.compile(_LAYER + r"/(?:weights_quant/FakeQuant\w*|weights|depthwise_weights)$")
_BIAS_RE = re.compile(
    _LAYER + r"/(?:BatchNorm_Fold/bias|biases|bias|Conv2D_bias|depthwise_bias|Conv2D_Fold_bias|depthwise_Fold_bias)$"
)


def tflite_preprocessing() -> dict:
    """TF-slim evaluation preprocessing without ``res``: x/127.5 - 1 (mean = std = 127.5), central crop
    0.875, bilinear resize, RGB (tensorflow/models research/slim ``inception_preprocessing``)."""
    d = Preprocessing(mean=(127.5,) * 3, std=(127.5,) * 3, crop=0.875, resize="tf_bilinear").to_dict()
    d.pop("res")
    return d


@dataclass
class LoadedWeights:
    """A model with weights loaded plus what its weights need.

    Attributes:
        model: ``MobileNetV1`` in eval mode.
        config: ``model.config()`` (alpha, num_classes, activation, padding, dropout, bn_eps).
        source: ``"tflite"``, ``"safetensors"`` or ``"torch"`` (the file actually read).
        file: basename of that file.
        sha256: hex sha256 of that file.
        preprocessing: :class:`~mobilenet_edge.core.images.Preprocessing` fields without ``res``, or None.
        labels: one name per output index (1001 with ``"background"`` first for TF-slim) or None.
        origin: for checkpoints, the source recorded when they were saved (e.g. the ``.tflite`` they
            were imported from: ``{"source", "file", "sha256"}``), else None.
    """

    model: MobileNetV1
    config: dict
    source: str
    file: str
    sha256: str
    preprocessing: dict | None = None
    labels: list[str] | None = None
    origin: dict | None = field(default=None)

    def source_info(self) -> dict:
        """``{"source", "file", "sha256"}`` of the file read, plus ``"origin"`` when known."""
        d = {"source": self.source, "file": self.file, "sha256": self.sha256}
        if self.origin:
            d["origin"] = self.origin
        return d


# --------------------------------------------------------------------------------------------------
# dispatch


def check_weights_path(path: str | Path) -> Path:
    """Check that ``path`` names an existing weights file with a known suffix.

    Raises:
        UsageError: missing file, a folder, or an unknown suffix.
    """
    p = Path(path)
    if not p.exists():
        raise UsageError(f"weights file not found: {p}")
    if not p.is_file():
        raise UsageError(f"weights path is not a file: {p}")
    if p.suffix.lower() not in SUFFIXES:
        raise UsageError(f"unsupported weights file {p.name}: expected one of {', '.join(SUFFIXES)}")
    return p


def load_weights(path: str | Path, *, alpha: float | None = None) -> LoadedWeights:
    """Load any supported weights file, dispatching on its suffix.

    Args:
        path: ``.tflite`` (TF-slim MobileNet V1), ``.safetensors`` (own checkpoint) or ``.pt``/``.pth``.
        alpha: expected width multiplier; a file of another alpha raises UsageError.
    Raises:
        UsageError: missing file, unknown suffix, alpha mismatch.
        WeightsError: truncated/corrupt file, not a MobileNet V1, bad tensors.
    """
    p = check_weights_path(path)
    if p.suffix.lower() == ".tflite":
        return import_tflite(p, alpha=alpha)
    return load_checkpoint(p, alpha=alpha)


# --------------------------------------------------------------------------------------------------
# .tflite import


@dataclass
class RawTensor:
    """One tensor as stored in a ``.tflite`` file (before dequantization)."""

    name: str
    data: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray
    quantized_dimension: int = 0

    def dequantize(self) -> np.ndarray:
        """float32 values: the data itself for float tensors, ``scale * (q - zero_point)`` otherwise
        (per-tensor, or per-channel along ``quantized_dimension``).

        Raises:
            WeightsError: an integer tensor without quantization parameters.
        """
        a = self.data
        if a.dtype.kind == "f":
            return a.astype(np.float32)
        scales = np.asarray(self.scales, np.float64).reshape(-1)
        zps = np.asarray(self.zero_points, np.float64).reshape(-1)
        if scales.size == 0:
            raise WeightsError(f"tensor {self.name!r} is {a.dtype} without quantization parameters")
        if zps.size == 0:
            zps = np.zeros_like(scales)
        q = a.astype(np.float64)
        if scales.size == 1:
            return ((q - zps[0]) * scales[0]).astype(np.float32)
        shape = [1] * a.ndim
        shape[self.quantized_dimension] = -1
        return ((q - zps.reshape(shape)) * scales.reshape(shape)).astype(np.float32)


def _interpreter_class():
    from ..runtime.runner import tflite_module

    try:
        return tflite_module()[2].Interpreter
    except MobilenetEdgeError:
        raise WeightsError(
            "reading .tflite files needs a TFLite runtime: pip install ai-edge-litert (or tflite-runtime)"
        ) from None


def open_tflite(path: str | Path, **kwargs):
    """LiteRT ``Interpreter`` for a ``.tflite`` file, with one-line errors for bad files.

    Raises:
        WeightsError: not a TFLite flatbuffer (wrong identifier), truncated or corrupt file.
    """
    p = Path(path)
    with open(p, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[4:8] != b"TFL3":
        found = head[4:8] if len(head) >= 8 else head
        raise WeightsError(
            f"{p.name} is not a TFLite flatbuffer: expected file identifier b'TFL3' at byte 4, found {found!r}"
        )
    _check_appended_zip(p)
    Interpreter = _interpreter_class()
    try:
        return Interpreter(model_path=str(p), **kwargs)
    except (ValueError, RuntimeError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{p.name} is truncated or corrupt ({p.stat().st_size} bytes): {msg}") from None


def _check_appended_zip(p: Path) -> None:
    """TFLite files with metadata carry their associated files (e.g. the labels) as a zip appended
    after the flatbuffer. A file cut inside that zip still holds a valid flatbuffer, so check that a
    zip which starts in the file also ends in it (its end-of-central-directory record is present).

    Raises:
        WeightsError: a zip local-file header is present but the zip's end record is missing.
    """
    import struct
    import zipfile

    data = p.read_bytes()
    start = data.find(b"PK\x03\x04")
    while start != -1:
        head = data[start : start + 30]
        if len(head) == 30:
            _, _, _, method, _, _, _, _, _, name_len, _ = struct.unpack("<4sHHHHHIIIHH", head)
            name = data[start + 30 : start + 30 + name_len]
            plausible = method in (0, 8) and 0 < name_len < 256 and len(name) == name_len
            if plausible and all(32 <= c < 127 for c in name):
                if not zipfile.is_zipfile(p):
                    raise WeightsError(
                        f"{p.name} is truncated or corrupt ({len(data)} bytes): its appended metadata zip "
                        f"(from byte {start}, first file {name.decode()!r}) has no end record"
                    )
                return
        start = data.find(b"PK\x03\x04", start + 1)


def read_tflite_tensors(path: str | Path) -> dict[tuple[str, str], RawTensor]:
    """Weight and bias tensors of a TF-slim MobileNet V1 ``.tflite``, keyed ``(layer, "weights"|"bias")``.

    ``layer`` is a TF-slim name from :data:`TFLITE_LAYERS`. Weights are 4-D, biases 1-D; see the
    module docstring for the name rules.

    Raises:
        WeightsError: bad file, or two different tensors claiming the same layer and role.
    """
    interp = open_tflite(path)
    found: dict[tuple[str, str], RawTensor] = {}
    for d in interp.get_tensor_details():
        name, shape = d["name"], tuple(int(s) for s in d["shape"])
        role = layer = None
        for seg in name.split(";"):
            if len(shape) == 4 and (m := _WEIGHT_RE.search(seg)):
                role, layer = "weights", m.group(1)
                break
            if len(shape) == 1 and (m := _BIAS_RE.search(seg)):
                role, layer = "bias", m.group(1)
                break
        if role is None:
            continue
        try:
            data = np.array(interp.get_tensor(d["index"]))
        except ValueError:  # a tensor without data (not a constant): not a weight
            continue
        qp = d.get("quantization_parameters") or {}
        scales = np.asarray(qp.get("scales", []), np.float64)
        zps = np.asarray(qp.get("zero_points", []), np.int64)
        if scales.size == 0 and d.get("quantization", (0.0, 0))[0]:
            scales = np.asarray([d["quantization"][0]], np.float64)
            zps = np.asarray([d["quantization"][1]], np.int64)
        raw = RawTensor(name, data, scales, zps, int(qp.get("quantized_dimension", 0)))
        key = (layer, role)
        if key in found:
            other = found[key]
            if other.data.shape != data.shape or not np.array_equal(other.data, data):
                raise WeightsError(
                    f"{Path(path).name}: two different {role} tensors for layer {layer}: "
                    f"{other.name!r} {other.data.shape} and {name!r} {data.shape}"
                )
            continue
        found[key] = raw
    return found


def _not_mobilenet(path: Path, what: str) -> WeightsError:
    return WeightsError(f"{path.name} is not a TF-slim MobileNet V1 .tflite: {what}")


def _infer_alpha(channels: list[int]) -> float | None:
    """alpha from the stem's output channels (TF-slim ``max(int(32 * alpha), 8)``), checked against
    every layer; the last pointwise layer (1024 * alpha) settles the ambiguous low-alpha stems."""
    stem, last = channels[0], channels[-1]
    cands = [round(stem / STEM_CHANNELS, 2), round(last / BLOCKS[-1][0], 2), last / BLOCKS[-1][0]]
    for a in cands:
        if a > 0 and _expected_channels(a) == channels:
            return float(a)
    return None


def _expected_channels(alpha: float) -> list[int]:
    return [make_channels(STEM_CHANNELS, alpha)] + [make_channels(c, alpha) for c, _ in BLOCKS]


def tflite_state_dict(
    tensors: dict[tuple[str, str], RawTensor], *, path: str | Path = "model.tflite", alpha: float | None = None,
    bn_eps: float = 1e-3,
) -> tuple[dict[str, np.ndarray], dict]:
    """Map TF-slim tensors onto ``MobileNetV1`` state-dict names (numpy float32 arrays) and a config.

    Args:
        tensors: as :func:`read_tflite_tensors` returns.
        path: file name used in error messages.
        alpha: expected width multiplier (None: inferred).
        bn_eps: the model's batch-norm epsilon (TF-slim: 1e-3), used for the pass-through BN.
    Returns:
        (state dict of float32 arrays, config dict for :func:`mobilenet_edge.build.model.build`).
    Raises:
        WeightsError: a missing layer (named), a bad shape, channels that follow no alpha.
        UsageError: ``alpha`` given and the file is of another alpha.
    """
    path = Path(path)
    for layer in TFLITE_LAYERS:
        for role in ("weights", "bias"):
            if (layer, role) not in tensors:
                raise _not_mobilenet(path, f"no {role} tensor for layer {layer}")
    w = {layer: tensors[(layer, "weights")].dequantize() for layer in TFLITE_LAYERS}
    b = {layer: tensors[(layer, "bias")].dequantize() for layer in TFLITE_LAYERS}

    # shapes: stem OHWI (C, 3, 3, 3); depthwise 1HWC (1, 3, 3, C); pointwise OHWI (C', 1, 1, C);
    # logits (K, 1, 1, C)
    def bad_shape(layer: str, want: str) -> WeightsError:
        return _not_mobilenet(path, f"layer {layer} has weights of shape {w[layer].shape}, expected {want}")

    stem = w["Conv2d_0"]
    if stem.ndim != 4 or stem.shape[1:] != (3, 3, 3):
        raise bad_shape("Conv2d_0", "(C, 3, 3, 3) OHWI")
    channels = [stem.shape[0]]
    c_in = stem.shape[0]
    for i in range(1, len(BLOCKS) + 1):
        dw, pw = w[f"Conv2d_{i}_depthwise"], w[f"Conv2d_{i}_pointwise"]
        if dw.shape != (1, 3, 3, c_in):
            raise bad_shape(f"Conv2d_{i}_depthwise", f"(1, 3, 3, {c_in}) 1HWC")
        if pw.ndim != 4 or pw.shape[1:] != (1, 1, c_in):
            raise bad_shape(f"Conv2d_{i}_pointwise", f"(C, 1, 1, {c_in}) OHWI")
        c_in = pw.shape[0]
        channels.append(c_in)
    logits = w["Conv2d_1c_1x1"]
    if logits.ndim != 4 or logits.shape[1:] != (1, 1, c_in):
        raise bad_shape("Conv2d_1c_1x1", f"(num_classes, 1, 1, {c_in})")
    num_classes = int(logits.shape[0])
    outs = [channels[0]] + [c for i in range(len(BLOCKS)) for c in (channels[i], channels[i + 1])] + [num_classes]
    for layer, c in zip(TFLITE_LAYERS, outs):
        if b[layer].shape != (c,):
            raise _not_mobilenet(path, f"layer {layer} has a bias of shape {b[layer].shape}, expected ({c},)")

    inferred = _infer_alpha(channels)
    if alpha is not None:
        exp = _expected_channels(alpha)
        want_shapes = [(exp[0], 3, 3, 3)]  # the file's layouts: OHWI, 1HWC, OHWI, ...
        for i in range(len(BLOCKS)):
            want_shapes += [(1, 3, 3, exp[i]), (exp[i + 1], 1, 1, exp[i])]
        for layer, want in zip(TFLITE_LAYERS, want_shapes):
            got = tuple(w[layer].shape)
            if got != want:
                found = f"alpha {inferred:g}" if inferred is not None else "no standard alpha"
                raise UsageError(
                    f"--alpha {alpha:g} does not match {path.name} ({found}): first mismatching layer "
                    f"{layer} has weights of shape {got}, alpha {alpha:g} needs {want}"
                )
        alpha_used = float(alpha)
    elif inferred is None:
        raise _not_mobilenet(path, f"output channels {channels} follow no width multiplier alpha")
    else:
        alpha_used = inferred

    sd: dict[str, np.ndarray] = {}
    prefixes = ["stem"] + [f"blocks.{i}.{kind}" for i in range(len(BLOCKS)) for kind in ("depthwise", "pointwise")]
    for layer, prefix in zip(TFLITE_LAYERS[:-1], prefixes):
        wt = w[layer]
        if layer.endswith("_depthwise"):
            conv = wt.transpose(3, 0, 1, 2)  # 1HWC -> (C, 1, H, W)
        else:
            conv = wt.transpose(0, 3, 1, 2)  # OHWI -> OIHW
        c = conv.shape[0]
        sd[f"{prefix}.0.weight"] = np.ascontiguousarray(conv, np.float32)
        # pass-through BN that adds the folded bias (module docstring)
        sd[f"{prefix}.1.weight"] = np.full(c, math.sqrt(1.0 + bn_eps), np.float32)
        sd[f"{prefix}.1.bias"] = b[layer].astype(np.float32)
        sd[f"{prefix}.1.running_mean"] = np.zeros(c, np.float32)
        sd[f"{prefix}.1.running_var"] = np.ones(c, np.float32)
        sd[f"{prefix}.1.num_batches_tracked"] = np.zeros((), np.int64)
    sd["classifier.weight"] = np.ascontiguousarray(logits.reshape(num_classes, c_in), np.float32)
    sd["classifier.bias"] = b["Conv2d_1c_1x1"].astype(np.float32)
    config = {
        "alpha": alpha_used,
        "num_classes": num_classes,
        "activation": "relu6",
        "padding": "tf_same",
        "dropout": 0.001,  # TF-slim keep_prob 0.999 (no effect in eval)
        "bn_eps": bn_eps,
    }
    return sd, config


def _default_labels(num_classes: int) -> list[str] | None:
    return imagenet_labels(num_classes) if num_classes in (1000, 1001) else None


def import_tflite(path: str | Path, *, alpha: float | None = None) -> LoadedWeights:
    """Import a TF-slim MobileNet V1 ``.tflite`` (quantized uint8 or float) into ``MobileNetV1``.

    Sets ``activation="relu6"``, ``padding="tf_same"``, preprocessing ``x/127.5 - 1`` with crop
    0.875 and bilinear resize, and the package's ImageNet labels (1001 with background first).
    The resolution is free: the weights work at any res.

    Args:
        path: the ``.tflite`` file.
        alpha: expected width multiplier; None infers it from the channel counts.
    Raises:
        UsageError: missing file, alpha mismatch (names the layer, expected and found channels).
        WeightsError: not a flatbuffer, truncated, not a MobileNet V1 (names the missing layer).
    """
    import torch

    from .model import build

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"weights file not found: {p}")
    sd, config = tflite_state_dict(read_tflite_tensors(p), path=p, alpha=alpha)
    model = build(config)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    model.eval()
    return LoadedWeights(
        model=model,
        config=model.config(),
        source="tflite",
        file=p.name,
        sha256=sha256_file(p),
        preprocessing=tflite_preprocessing(),
        labels=_default_labels(config["num_classes"]),
    )


# --------------------------------------------------------------------------------------------------
# checkpoints (.safetensors, .pt/.pth)


def save_checkpoint(
    loaded_or_model: LoadedWeights | MobileNetV1,
    dst: str | Path,
    *,
    preprocessing: dict | None = None,
    labels: list[str] | None = None,
    source_info: dict | None = None,
) -> None:
    """Write a ``.safetensors`` checkpoint atomically (temp file + rename; nothing half-written).

    The model's state dict is stored as tensors; its config, the preprocessing (without ``res``),
    the labels and the source (``{"source", "file", "sha256"}`` of what it came from) are stored as
    JSON strings in the safetensors metadata, so the file alone is enough for export.

    Args:
        loaded_or_model: a :class:`LoadedWeights` (its fields are the defaults) or a ``MobileNetV1``.
        dst: destination path ending in ``.safetensors``.
        preprocessing, labels, source_info: override/supply the metadata.
    Raises:
        UsageError: ``dst`` does not end in ``.safetensors``.
    """
    from safetensors.torch import save_file

    dst = Path(dst)
    if dst.suffix.lower() != ".safetensors":
        raise UsageError(f"checkpoint must be a .safetensors file, got {dst.name}")
    if isinstance(loaded_or_model, LoadedWeights):
        lw = loaded_or_model
        model = lw.model
        preprocessing = preprocessing if preprocessing is not None else lw.preprocessing
        labels = labels if labels is not None else lw.labels
        if source_info is None:
            source_info = lw.origin or {"source": lw.source, "file": lw.file, "sha256": lw.sha256}
    else:
        model = loaded_or_model
    if preprocessing is not None:
        preprocessing = {k: v for k, v in preprocessing.items() if k != "res"}
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {
        "format": CHECKPOINT_FORMAT,
        "format_version": str(CHECKPOINT_FORMAT_VERSION),
        "config": json.dumps(model.config()),
    }
    if preprocessing is not None:
        meta["preprocessing"] = json.dumps(preprocessing)
    if labels is not None:
        meta["labels"] = json.dumps(list(labels))
    if source_info is not None:
        meta["source"] = json.dumps(source_info)
    with atomic_path(dst) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _read_safetensors(p: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as e:
        raise WeightsError(
            f"{p.name} is not a readable .safetensors file (truncated or corrupt, {p.stat().st_size} bytes): {e}"
        ) from None
    parsed: dict[str, Any] = {}
    for key in ("config", "preprocessing", "labels", "source"):
        if key in meta:
            try:
                parsed[key] = json.loads(meta[key])
            except ValueError:
                raise WeightsError(f"{p.name}: metadata {key!r} is not valid JSON") from None
    return tensors, parsed


def _read_torch(p: Path) -> tuple[dict[str, torch.Tensor], dict]:
    import pickle

    import torch

    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        import zipfile

        with open(p, "rb") as f:
            proto = f.read(1) == b"\x80"  # a pickle starts with the PROTO opcode (torch.save's zip holds one)
        if re.search(r"Unsupported operand|String is too long", str(e)) and not proto and not zipfile.is_zipfile(p):
            # text, JSON or noise: the unpickler trips on its first byte; not a refused checkpoint
            raise WeightsError(f"{p.name} is not a readable PyTorch checkpoint (truncated or corrupt)") from None
        m = re.search(r"(?:unsupported|Unsupported global:) GLOBAL ([\w.]+)", str(e))
        what = f"it would call {m.group(1)}" if m else "it needs more than tensors and plain containers"
        raise WeightsError(
            f"refusing to load {p.name}: unpickling it needs code execution ({what}), which "
            f"torch.load(weights_only=True) forbids; save a plain state dict or a .safetensors file"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{p.name} is not a readable PyTorch checkpoint (truncated or corrupt): {first}") from None
    except Exception:  # noqa: BLE001 - bytes that are neither a zip nor a pickle (e.g. text) make torch's
        # weights-only unpickler fail with KeyError, IndexError, struct.error, ... (torch 2.13)
        raise WeightsError(f"{p.name} is not a readable PyTorch checkpoint (truncated or corrupt)") from None
    meta: dict[str, Any] = {}
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("config", "preprocessing", "labels", "source"):
            if key in obj:
                meta[key] = obj[key]
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{p.name} holds no state dict (a dict of tensors), got {type(obj).__name__}")
    return dict(obj), meta


def _config_from_state_dict(sd: dict, p: Path) -> dict:
    """alpha and num_classes from tensor shapes, for checkpoints saved without a config."""
    try:
        stem_c = int(sd["stem.0.weight"].shape[0])
        last_c = int(sd[f"blocks.{len(BLOCKS) - 1}.pointwise.0.weight"].shape[0])
        num_classes = int(sd["classifier.weight"].shape[0])
    except KeyError as e:
        raise WeightsError(f"{p.name} is not a MobileNetV1 state dict: no tensor {e.args[0]!r}") from None
    channels = [stem_c] + [
        int(sd[f"blocks.{i}.pointwise.0.weight"].shape[0]) if f"blocks.{i}.pointwise.0.weight" in sd else -1
        for i in range(len(BLOCKS))
    ]
    alpha = _infer_alpha(channels)
    if alpha is None:
        alpha = round(last_c / BLOCKS[-1][0], 4)
    return {"alpha": alpha, "num_classes": num_classes}


def _shape(t) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape)


def validate_state_dict(sd: dict, model: MobileNetV1, *, name: str, alpha: float | None = None) -> None:
    """Check keys, shapes and values of a state dict against ``model`` before loading it.

    Raises:
        UsageError: a shape mismatch when ``alpha`` was given by the user (wrong --alpha for the file).
        WeightsError: missing/unexpected tensors (first one named), a shape mismatch (first layer
            and both shapes), non-finite values, BN running_var with NaN or negative entries (layer named).
    """
    import torch

    want = model.state_dict()
    for k, v in want.items():
        if k not in sd:
            raise WeightsError(f"{name}: missing tensor {k} (shape {_shape(v)})")
        if _shape(sd[k]) != _shape(v):
            msg = (
                f"{name}: first mismatching layer {k}: checkpoint has shape {_shape(sd[k])}, "
                f"model with alpha {model.alpha:g} expects {_shape(v)}"
            )
            if alpha is not None:
                raise UsageError(f"--alpha {alpha:g} does not fit {msg}")
            raise WeightsError(msg)
    extra = [k for k in sd if k not in want]
    if extra:
        raise WeightsError(f"{name}: unexpected tensor {extra[0]} (shape {_shape(sd[extra[0]])})")
    for k, v in sd.items():
        if k.endswith("running_var"):
            layer = k[: -len(".running_var")]
            vv = v.double()
            if torch.isnan(vv).any():
                raise WeightsError(f"{name}: batch-norm layer {layer} has NaN in running_var")
            if (vv < 0).any():
                raise WeightsError(
                    f"{name}: batch-norm layer {layer} has negative running_var (min {vv.min().item():g})"
                )
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise WeightsError(f"{name}: tensor {k} has non-finite values (NaN or inf)")


def load_checkpoint(path: str | Path, *, alpha: float | None = None) -> LoadedWeights:
    """Load a ``.safetensors`` checkpoint (as :func:`save_checkpoint` writes) or a ``.pt``/``.pth``
    state dict (``torch.load(weights_only=True)``; pickles needing code execution are refused).

    Config, preprocessing, labels and origin come from the metadata; a checkpoint without a config
    gets alpha and num_classes from its tensor shapes and the model's other defaults.

    Args:
        path: the checkpoint.
        alpha: expected width multiplier; a checkpoint of another alpha raises UsageError naming the
            first mismatching layer and both shapes.
    Raises:
        UsageError: missing file, unknown suffix, alpha mismatch.
        WeightsError: truncated/corrupt file, refused pickle, bad tensors (see :func:`validate_state_dict`).
    """
    import torch

    from .model import build

    p = check_weights_path(path)
    if p.suffix.lower() == ".safetensors":
        sd, meta = _read_safetensors(p)
        source = "safetensors"
    elif p.suffix.lower() in (".pt", ".pth"):
        sd, meta = _read_torch(p)
        source = "torch"
    else:
        raise UsageError(f"not a checkpoint file: {p.name} (expected .safetensors, .pt or .pth)")
    config = dict(meta.get("config") or _config_from_state_dict(sd, p))
    if alpha is not None:
        config["alpha"] = float(alpha)
    try:
        model = build(config)
    except ValueError as e:
        raise WeightsError(f"{p.name}: bad config in checkpoint: {e}") from None
    validate_state_dict(sd, model, name=p.name, alpha=alpha)
    model.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in sd.items()})
    model.eval()
    origin = meta.get("source")
    return LoadedWeights(
        model=model,
        config=model.config(),
        source=source,
        file=p.name,
        sha256=sha256_file(p),
        preprocessing=meta.get("preprocessing"),
        labels=meta.get("labels"),
        origin=origin if isinstance(origin, dict) else None,
    )


# --------------------------------------------------------------------------------------------------
# verification: the source .tflite in LiteRT vs the imported torch model


def read_imagenet_labels_csv(folder: str | Path) -> dict[str, int]:
    """``file -> imagenet_index`` (0-999) from ``folder/labels.csv`` (``file,imagenet_index,...``);
    empty when there is no such file."""
    import csv

    path = Path(folder) / "labels.csv"
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {row["file"]: int(row["imagenet_index"]) for row in csv.DictReader(f)}


class TfliteClassifier:
    """Run a classification ``.tflite`` on NHWC float inputs, quantizing the input with the input
    tensor's scale/zero point when it is uint8/int8; returns float scores (dequantized output).

    Raises:
        UsageError: ``res`` differs from the file's and its graph cannot be resized (Google's
            MobileNet files have a fixed average-pool kernel and reshape).
    """

    def __init__(self, path: str | Path, res: int | None = None, *, threads: int | None = None) -> None:
        from ..runtime.runner import _quiet_stderr

        self.interp = open_tflite(path, num_threads=threads) if threads else open_tflite(path)
        inp = self.interp.get_input_details()[0]
        own = int(inp["shape"][1])
        try:
            if res is not None and tuple(inp["shape"][1:3]) != (res, res):
                self.interp.resize_tensor_input(inp["index"], [1, res, res, int(inp["shape"][3])])
            with _quiet_stderr():  # LiteRT's C++ "INFO: Created TensorFlow Lite XNNPACK delegate" on fd 2
                self.interp.allocate_tensors()
        except (RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UsageError(
                f"{Path(path).name} cannot run at res {res}: its graph is fixed to res {own} ({first}); "
                f"verify at res {own}"
            ) from None
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]
        self.res = int(self.inp["shape"][1])

    def __call__(self, x_nhwc: np.ndarray) -> np.ndarray:
        """(1, res, res, 3) float32 in the model's input range -> (num_classes,) float32 scores."""
        dt = self.inp["dtype"]
        x = x_nhwc
        if dt in (np.uint8, np.int8):
            scale, zp = self.inp["quantization"]
            info = np.iinfo(dt)
            x = np.clip(np.round(x / scale + zp), info.min, info.max).astype(dt)
        else:
            x = x.astype(dt)
        self.interp.set_tensor(self.inp["index"], x)
        self.interp.invoke()
        y = self.interp.get_tensor(self.out["index"]).reshape(-1)
        if self.out["dtype"] in (np.uint8, np.int8):
            scale, zp = self.out["quantization"]
            y = (y.astype(np.float32) - zp) * scale
        return y.astype(np.float32)


def default_res(tflite_path: str | Path) -> int:
    """The input resolution stored in a ``.tflite`` file (its input tensor's height)."""
    interp = open_tflite(tflite_path)
    return int(interp.get_input_details()[0]["shape"][1])


def verify_import(
    tflite_path: str | Path,
    loaded: LoadedWeights,
    images: list[str | Path],
    *,
    res: int | None = None,
    batch: int = 25,
    progress=None,
) -> dict:
    """Compare the source ``.tflite`` (LiteRT) and the imported model (torch) on the same images.

    Both get the same preprocessed pixels (:mod:`mobilenet_edge.core.images`, the weights' preprocessing
    at ``res``); the ``.tflite`` input is quantized with its input tensor's scale and zero point.
    Top-1 is the argmax (lowest index on ties) of each model's output.

    Args:
        tflite_path: the source ``.tflite``.
        loaded: the imported weights.
        images: image files (labels are read from ``labels.csv`` in their folders when present:
            ``file,imagenet_index,...``; with 1001 classes, predicted index - 1 == imagenet_index).
        res: input resolution (default: the ``.tflite`` file's own).
        batch: torch batch size.
        progress: optional callable ``progress(done, total)`` (3 units per image: decode, LiteRT, torch).
    Returns:
        ``{"n", "res", "agreement", "agree", "n_labelled", "top1_tflite", "top1_torch",
        "correct_tflite", "correct_torch", "max_abs_prob_diff", "tflite_top_ties", "agree_within_ties"}``;
        accuracies are fractions (None without labels); ``tflite_top_ties`` counts images whose uint8
        .tflite output has a tied maximum, ``agree_within_ties`` those where the torch top-1 is among
        the .tflite's top scores (ties included).
    """
    import torch

    from ..core.images import load

    res = res or default_res(tflite_path)
    runner = TfliteClassifier(tflite_path, res)
    prep = Preprocessing.from_dict({**(loaded.preprocessing or tflite_preprocessing()), "res": res, "layout": "NCHW"})
    offset = background_offset(loaded.config.get("num_classes"))
    paths = [Path(p) for p in images]
    total = 3 * len(paths)  # progress units: decode, LiteRT, torch
    done = 0

    def tick(k: int = 1) -> None:
        nonlocal done
        done += k
        if progress is not None:
            progress(done, total)

    xs = []
    for path in paths:
        xs.append(load(path, prep))  # (3, res, res) float32
        tick()
    # LiteRT first, then torch in batches: interleaving the two thread pools per image is ~20x slower
    y_tfl = []
    for x in xs:
        y_tfl.append(runner(x[None].transpose(0, 2, 3, 1)))
        tick()
    probs = []
    model = loaded.model.eval()
    with torch.no_grad():
        for k in range(0, len(xs), batch):
            chunk = np.stack(xs[k : k + batch])
            probs.append(torch.softmax(model(torch.from_numpy(chunk)), 1).numpy())
            tick(len(chunk))
    probs_all = np.concatenate(probs) if probs else np.zeros((0, 0), np.float32)
    y_all = np.stack(y_tfl) if y_tfl else np.zeros((0, 0), np.float32)
    if probs_all.shape != y_all.shape:
        raise WeightsError(f"output shapes differ: .tflite {y_all.shape[1:]}, imported model {probs_all.shape[1:]}")
    top_t, top_p = y_all.argmax(1), probs_all.argmax(1)
    n = len(paths)
    agree = int((top_t == top_p).sum())
    # the .tflite output is uint8 (1/256 steps): count images whose top score is tied
    ties = int(sum((y == y.max()).sum() > 1 for y in y_all))
    # torch's top-1 is one of the .tflite's tied top scores (agreement up to the uint8 output step)
    agree_ties = int(sum(y[q] == y.max() for y, q in zip(y_all, top_p)))
    label_cache: dict[Path, dict[str, int]] = {}
    n_lab = ok_t = ok_p = 0
    for path, t, q in zip(paths, top_t, top_p):
        labels = label_cache.setdefault(path.parent, read_imagenet_labels_csv(path.parent))
        if path.name in labels:
            n_lab += 1
            ok_t += int(t) - offset == labels[path.name]
            ok_p += int(q) - offset == labels[path.name]
    max_diff = float(np.abs(y_all - probs_all).max()) if n else 0.0
    return {
        "n": n,
        "res": res,
        "agree": agree,
        "agreement": agree / n if n else None,
        "n_labelled": n_lab,
        "correct_tflite": ok_t,
        "correct_torch": ok_p,
        "top1_tflite": ok_t / n_lab if n_lab else None,
        "top1_torch": ok_p / n_lab if n_lab else None,
        "max_abs_prob_diff": max_diff,
        "tflite_top_ties": ties,
        "agree_within_ties": agree_ties,
    }
