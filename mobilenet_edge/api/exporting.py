"""``export`` (a model, a checkpoint or a weights name -> a :class:`~.bundle.Bundle`), ``create_model`` (a
PyTorch MobileNetV1 with weights) and ``quantize_bundle`` (a bundle's int8 model; not ``quantize``: that name
is the package's ``quantize/`` layer).

Thin layers over the pipeline's public entries: :func:`mobilenet_edge.build.export.export_bundle` and
``build_model`` (imported inside the calls: the only torch side) and
:func:`mobilenet_edge.quantize.pipeline.quantize_bundle` (torch-free)."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

from ..core.errors import MobilenetEdgeError, UsageError
from ..core.manifest import Manifest
from .bundle import Bundle

log = logging.getLogger("mobilenet_edge")

#: what :func:`export` starts from (see its docstring)
ModelSource = Union[None, str, os.PathLike, Any]


def _is_torch_module(obj: Any) -> bool:
    """True for a ``torch.nn.Module`` (without importing torch: a module instance means torch is loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def _require(*modules: str, what: str) -> None:
    """Raise one line with the pip command when the torch side is not installed (before any work).

    Raises:
        MobilenetEdgeError: naming the missing modules.
    """
    import importlib.util

    missing = []
    for m in modules:
        try:
            found = importlib.util.find_spec(m) is not None
        except ImportError:  # an import hook refusing it (tests block torch this way)
            found = False
        if not found:
            missing.append(m)
    if missing:
        raise MobilenetEdgeError(f"{what} needs {' and '.join(missing)} (the export extra): "
                                 "pip install 'mobilenet-edge[export]' torch==2.13.0")


def export(
    model: ModelSource = None,
    *,
    res: int = 224,
    alpha: Optional[float] = None,
    labels: Optional[Sequence[str] | str | os.PathLike] = None,
    int8: bool = False,
    calib: Optional[str | os.PathLike] = None,
    eval_dir: Optional[str | os.PathLike] = None,
    out: str | os.PathLike = "export",
    name: Optional[str] = None,
    format: str = "onnx",
    recipe: Optional[str] = None,
    float_first: Optional[int] = None,
    preprocessing: Optional[dict] = None,
    activation: Optional[str] = None,
    padding: Optional[str] = None,
    bn_eps: Optional[float] = None,
    parity_images: Optional[str | os.PathLike] = None,
    opset: int = 13,
    force: bool = False,
) -> Bundle:
    """Export MobileNet V1 to a parity-checked bundle ``OUT/<name>/`` (``model.onnx``, ``labels.txt``,
    ``manifest.json``; ``model.int8.onnx`` with ``int8``; ``.tflite`` files with ``format="tflite"``).

    The same pipeline as ``mobilenet-edge export``: torch -> ONNX -> onnxsim -> parity check against
    PyTorch (max abs logit difference <= 1e-4, else ParityError and no file) -> optional int8 (ONNX
    Runtime static QDQ, with its fidelity report in the manifest). Needs the export extra (torch, onnxsim);
    torch is imported only inside this call.

    Args:
        model: what to export:
            * None: Google's pretrained weights for (``alpha`` (default 1.0), ``res``): the copy shipped
              with the package (0.25/128, 0.5/160, 0.75/192), else the cache, else a download;
            * a weights name (``"google-quant"``, ``"google-float"``, ``"keras"``, ``"SOURCE/ALPHA/RES"``;
              see ``mobilenet-edge weights list``) or ``"random"`` (seeded random weights);
            * a weights file (``.tflite``, ``.h5``, ``.safetensors``, ``.pt`` / ``.pth``; ``.pt`` loads with
              ``torch.load(weights_only=True)`` only);
            * an in-memory ``torch.nn.Module`` that is a MobileNet V1: ours
              (:class:`mobilenet_edge.build.model.MobileNetV1`, copied in eval mode), or another code's, mapped
              onto it by layer order and tensor shapes (:mod:`mobilenet_edge.build.weights.module`); the
              caller's module is left unchanged.
        res: input resolution in pixels (>= 32).
        alpha: width multiplier; default from the weights (1.0 for the pretrained default and random).
        labels: one label per class (a list of str, or a labels file with one per line); their count must
            match the model's classes. Written to ``labels.txt``, the manifest and the ONNX metadata; ``load``
            and ``predict`` then use them. Default: the weights' own, else ImageNet's (1000/1001 classes).
        int8: also write ``model.int8.onnx`` (``model.int8.tflite`` too with ``format="tflite"``).
        calib: calibration image folder. Without it, ``int8`` takes the activation ranges of Google's QAT
            ``.tflite`` weights (recipe ``qat-ranges``, no images) or noise images for ``"random"``; other
            weights (float, checkpoints, modules) need it.
        eval_dir: images for the int8 fidelity report (default: the other half of ``calib``).
        out: parent folder of the bundle.
        name: bundle name (default ``mobilenet_v1_{alpha:.2f}_{res}``).
        format: "onnx", or "tflite" (adds ``model.tflite`` via litert-torch).
        recipe, float_first: the int8 recipe ("fidelity" | "grid" | "plain" | "qat-ranges", docs/quantize.md;
            None: ``qat-ranges`` for QAT ``.tflite`` weights without ``calib``, else ``fidelity``) and the
            number of leading convs kept in float (None: the recipe's).
        preprocessing: Preprocessing fields replacing the weights' (``mean``, ``std`` (0..255 pixel units,
            1 or 3 values), ``crop`` (0, 1], ``resize``), e.g. torchvision's ``{"mean": (123.675, 116.28,
            103.53), "std": (58.395, 57.12, 57.375)}`` for a model fine-tuned with them. Default: the
            weights' own, else TF-slim's (``x / 127.5 - 1``, crop 0.875).
        activation, padding, bn_eps: conventions of random weights ("relu6" | "relu", "symmetric" |
            "tf_same", BN eps) and of other code's MobileNet modules and state dicts (None: found or
            PyTorch's defaults; recorded in the manifest); files carrying their own refuse them.
        parity_images: a folder of real images for the parity check (added to the random inputs).
        opset: ONNX opset (>= 13).
        force: replace an existing bundle (only once the new one is complete).
    Returns:
        :class:`~.bundle.Bundle` (folder, :class:`~mobilenet_edge.core.manifest.Manifest`, seconds).
    Raises:
        UsageError: an unknown weights name (close names listed), a missing file, a model of another type,
            a bad option, an existing bundle without ``force``, ``int8`` without ``calib`` for weights
            that carry no int8 ranges (anything but a QAT ``.tflite``; ``random`` uses noise images), a labels count
            that differs from the model's classes.
        WeightsError: weights (a file or a module) that are not a MobileNet V1 (the first tensor that does
            not fit named) or cannot be loaded; pretrained weights not reachable offline.
        ParityError: ONNX Runtime disagrees with PyTorch (nothing written).
        MobilenetEdgeError: torch / onnxsim not installed (the pip command named), or any other failure the
            message names (e.g. litert-torch missing for ``format="tflite"``).
    """
    # long: the docstring documents every keyword argument (the CLI's options); the body is ~20 lines
    weights = _weights(model)
    if format not in ("onnx", "tflite"):
        raise UsageError(f"format must be onnx or tflite, got {format!r}")
    label_names = _labels(labels)
    _require("torch", "onnxsim", what="export")
    from ..build.export import ExportOptions, export_bundle  # the torch side, only now

    opts = ExportOptions(
        alpha=alpha, res=res, weights=weights, labels=label_names, activation=activation, padding=padding,
        bn_eps=bn_eps, pretrained=True, out=Path(out), opset=opset, force=force,
        parity_images=_path(parity_images), formats=("onnx", "tflite") if format == "tflite" else ("onnx",),
        tflite_int8=int8 and format == "tflite", int8=int8, calib=_path(calib), eval_dir=_path(eval_dir),
        recipe=recipe, float_first=float_first, name=name, preprocessing=preprocessing,
    )
    res_ = export_bundle(opts, log=log.info,
                         warn=lambda m: warnings.warn(m, UserWarning, stacklevel=3))
    return Bundle(Path(res_["bundle"]), Manifest.from_dict(res_["manifest"]), res_["seconds"])


def create_model(weights: Optional[str | os.PathLike] = None, *, alpha: Optional[float] = None, res: int = 224) -> Any:
    """A PyTorch :class:`mobilenet_edge.build.model.MobileNetV1` with weights, e.g. to fine-tune on your classes
    (as ``timm.create_model(name, pretrained=True)``); needs torch.

    Args:
        weights: as :func:`export`'s ``model`` (None: Google's pretrained weights for ``alpha``/``res``,
            shipped / cached / downloaded; a name; ``"random"``; a weights file).
        alpha: width multiplier (default: the weights', 1.0 for None and random).
        res: the resolution the weights are picked for (Google's grid: 128, 160, 192, 224).
    Returns:
        ``MobileNetV1`` in eval mode: (N, 3, H, W) float32 -> (N, num_classes) float32 logits; Google's files
        have 1001 classes (index 0 background), TF 'SAME' padding and ReLU6. Replace ``model.classifier``
        (``torch.nn.Linear(model.num_features, n)``) for n classes of your own.
    Raises:
        UsageError / WeightsError: as :func:`export`.
    """
    _require("torch", what="create_model")
    from ..build.export import ExportOptions, build_model  # the torch side, only now

    opts = ExportOptions(alpha=alpha, res=res, weights=_weights(weights), pretrained=True)
    return build_model(opts, warn=lambda m: warnings.warn(m, UserWarning, stacklevel=3)).model


def _weights(model: ModelSource) -> Any:
    """``ExportOptions.weights`` of ``model``: None, a name or path (str), or the module itself.

    Raises:
        UsageError: anything else (naming its type).
    """
    if model is None or _is_torch_module(model):
        return model
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    raise UsageError("model must be None (pretrained), a weights name, a weights file or a MobileNet V1 "
                     f"torch.nn.Module, got {type(model).__name__}")


def _labels(labels: Optional[Sequence[str] | str | os.PathLike]) -> Optional[tuple[str, ...]]:
    """A list of labels, or a labels file (one per line), checked (:mod:`mobilenet_edge.core.labels`)."""
    from ..core.labels import check_labels, read_labels_file

    if labels is None:
        return None
    if isinstance(labels, (str, os.PathLike)):
        return read_labels_file(labels)
    return check_labels(labels, source="labels")


def _path(p: Optional[str | os.PathLike]) -> Optional[Path]:
    return None if p is None else Path(p)


def quantize_bundle(
    bundle: Bundle | str | os.PathLike,
    *,
    calib: str | os.PathLike,
    eval_dir: Optional[str | os.PathLike] = None,
    recipe: str = "fidelity",
    float_first: Optional[int] = None,
) -> Bundle:
    """Write (or replace) ``model.int8.onnx`` in an exported bundle: ONNX Runtime static QDQ quantization,
    per-channel int8 weights, calibrated on ``calib``, with the fidelity report (top-1 agreement, SQNR in
    dB vs fp32) recorded in the manifest's ``quantization``. No torch (runs on a Pi).

    Args:
        bundle: a :class:`~.bundle.Bundle` or bundle folder.
        calib: calibration image folder (>= 32 images advised; the fidelity is measured on the other half
            unless ``eval_dir`` is given).
        eval_dir: evaluation images, disjoint from ``calib``.
        recipe, float_first: as :func:`export`.
    Returns:
        The updated :class:`~.bundle.Bundle` (``bundle.manifest.quantization`` holds the record).
    Raises:
        UsageError: bad folders, too few images, an unknown recipe.
        MobilenetEdgeError: not a bundle; the int8 model too large. The bundle is then left untouched.
    """
    from ..quantize.options import QuantOptions
    from ..quantize.pipeline import quantize_bundle as write_int8

    try:
        options = QuantOptions(recipe=recipe, float_first=float_first)
    except ValueError as e:
        raise UsageError(str(e)) from None
    path = Path(bundle)
    write_int8(path, calib=calib, eval_dir=eval_dir, options=options, progress=False)
    return Bundle.open(path)
