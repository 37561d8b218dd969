"""TF-slim MobileNet V1 ``.tflite`` -> ``MobileNetV1`` state dict and config (:func:`import_tflite`).

- Layouts: conv weights OHWI -> OIHW, depthwise 1HWC -> (C, 1, H, W), logits (K, 1, 1, C) -> Linear
  (K, C).
- Batch norm is folded into these files (conv weights and a per-channel bias). The folded bias is
  carried by the model's ``BatchNorm2d`` set to an affine pass-through: ``running_mean = 0``,
  ``running_var = 1``, ``weight = sqrt(1 + eps)``, ``bias = folded bias``, so in eval mode
  ``BN(x) = (x - 0) / sqrt(1 + eps) * sqrt(1 + eps) + b = x + b`` within float32 rounding (one ulp).
  The model keeps its plain conv -> BN -> ReLU6 structure and exports like any other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...core.bundle import sha256_file
from ...core.errors import UsageError, WeightsError
from ...core.images import Preprocessing
from ...core.labels import imagenet_labels
from ...core.variants import BLOCKS, STEM_CHANNELS, make_channels
from .load import LoadedWeights, model_from_arrays, passthrough_bn
from .tflite_file import TFLITE_LAYERS, RawTensor, read_tflite_tensors


def tflite_preprocessing() -> dict:
    """TF-slim evaluation preprocessing without ``res``: x/127.5 - 1 (mean = std = 127.5), central crop
    0.875, bilinear resize, RGB (tensorflow/models research/slim ``inception_preprocessing``)."""
    d = Preprocessing(mean=(127.5,) * 3, std=(127.5,) * 3, crop=0.875, resize="tf_bilinear").to_dict()
    d.pop("res")
    return d


def _not_mobilenet(path: Path, what: str) -> WeightsError:
    return WeightsError(f"{path.name} is not a TF-slim MobileNet V1 .tflite: {what}")


def infer_alpha(channels: list[int]) -> float | None:
    """alpha from the stem's output channels (TF-slim ``max(int(32 * alpha), 8)``), checked against
    every layer; the last pointwise layer (1024 * alpha) settles the ambiguous low-alpha stems."""
    stem, last = channels[0], channels[-1]
    cands = [round(stem / STEM_CHANNELS, 2), round(last / BLOCKS[-1][0], 2), last / BLOCKS[-1][0]]
    for a in cands:
        if a > 0 and expected_channels(a) == channels:
            return float(a)
    return None


def expected_channels(alpha: float) -> list[int]:
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
    w, b = _dequantized(tensors, path)
    channels, num_classes = _check_shapes(w, b, path)
    alpha_used = _check_alpha(w, path, channels, alpha)
    config = {
        "alpha": alpha_used,
        "num_classes": num_classes,
        "activation": "relu6",
        "padding": "tf_same",
        "dropout": 0.001,  # TF-slim keep_prob 0.999 (no effect in eval)
        "bn_eps": bn_eps,
    }
    return _state_dict(w, b, bn_eps=bn_eps), config


def _dequantized(
    tensors: dict[tuple[str, str], RawTensor], path: Path
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """float32 weights and biases per TF-slim layer. Raises WeightsError naming a missing layer."""
    for layer in TFLITE_LAYERS:
        for role in ("weights", "bias"):
            if (layer, role) not in tensors:
                raise _not_mobilenet(path, f"no {role} tensor for layer {layer}")
    w = {layer: tensors[(layer, "weights")].dequantize() for layer in TFLITE_LAYERS}
    b = {layer: tensors[(layer, "bias")].dequantize() for layer in TFLITE_LAYERS}
    return w, b


def _check_shapes(w: dict[str, np.ndarray], b: dict[str, np.ndarray], path: Path) -> tuple[list[int], int]:
    """(output channels of the stem and of each pointwise layer, num_classes) from the file's layouts:
    stem OHWI (C, 3, 3, 3); depthwise 1HWC (1, 3, 3, C); pointwise OHWI (C', 1, 1, C); logits (K, 1, 1, C).

    Raises:
        WeightsError: a weight or bias of another shape (layer named).
    """

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

    return channels, num_classes


def _check_alpha(w: dict[str, np.ndarray], path: Path, channels: list[int], alpha: float | None) -> float:
    """The width multiplier: ``alpha`` when every layer fits it, else the one the channels follow.

    Raises:
        UsageError: ``alpha`` given and a layer has the shape of another alpha (first one named).
        WeightsError: no alpha given and the channels follow no width multiplier.
    """
    inferred = infer_alpha(channels)
    if alpha is not None:
        exp = expected_channels(alpha)
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
        return float(alpha)
    if inferred is None:
        raise _not_mobilenet(path, f"output channels {channels} follow no width multiplier alpha")
    return inferred


def _state_dict(w: dict[str, np.ndarray], b: dict[str, np.ndarray], *, bn_eps: float) -> dict[str, np.ndarray]:
    """``MobileNetV1`` state dict (float32 arrays; pass-through BNs carrying the folded biases)."""
    sd: dict[str, np.ndarray] = {}
    prefixes = ["stem"] + [f"blocks.{i}.{kind}" for i in range(len(BLOCKS)) for kind in ("depthwise", "pointwise")]
    for layer, prefix in zip(TFLITE_LAYERS[:-1], prefixes):
        wt = w[layer]
        if layer.endswith("_depthwise"):
            conv = wt.transpose(3, 0, 1, 2)  # 1HWC -> (C, 1, H, W)
        else:
            conv = wt.transpose(0, 3, 1, 2)  # OHWI -> OIHW
        sd[f"{prefix}.0.weight"] = np.ascontiguousarray(conv, np.float32)
        # pass-through BN that adds the folded bias (module docstring)
        sd.update({f"{prefix}.1.{k}": v for k, v in passthrough_bn(b[layer], bn_eps).items()})
    logits = w["Conv2d_1c_1x1"]
    sd["classifier.weight"] = np.ascontiguousarray(logits.reshape(logits.shape[0], -1), np.float32)
    sd["classifier.bias"] = b["Conv2d_1c_1x1"].astype(np.float32)
    return sd


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
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"weights file not found: {p}")
    sd, config = tflite_state_dict(read_tflite_tensors(p), path=p, alpha=alpha)
    model = model_from_arrays(sd, config)
    return LoadedWeights(
        model=model,
        config=model.config(),
        source="tflite",
        file=p.name,
        sha256=sha256_file(p),
        preprocessing=tflite_preprocessing(),
        labels=_default_labels(config["num_classes"]),
    )
