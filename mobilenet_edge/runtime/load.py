"""Open a model with what it needs to be fed: :func:`open_model` -> :class:`LoadedModel` (no torch).

Preprocessing defaults for files without our metadata (:func:`default_preprocessing`):
    * ``.tflite`` (Google's TF-slim files): mean = std = 127.5 (``x/127.5 - 1``), central crop 0.875,
      bilinear resize (TF-slim ``inception_preprocessing`` evaluation), layout from the model (NHWC).
    * ``.onnx`` without ``preprocessing`` metadata: the torchvision ImageNet convention, mean
      (123.675, 116.28, 103.53), std (58.395, 57.12, 57.375) (= 255 x (0.485, 0.456, 0.406) and
      255 x (0.229, 0.224, 0.225)), crop 0.875 (resize 256 -> crop 224), bilinear, layout from the model.
    * Labels: ImageNet names (``labels.imagenet_labels``) when the model has 1000 or 1001 (index 0 =
      background) outputs, else ``class_<i>``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple, Optional

from ..core import bundle as _bundle
from ..core.errors import MobilenetEdgeError, UsageError
from ..core.images import Preprocessing
from ..core.labels import imagenet_labels, read_labels
from ..core.manifest import Manifest
from .names import RUNTIME_LITERT, runtime_name
from .runner import Runner, is_int8_file

#: torchvision's ImageNet normalisation in 0..255 pixel units (255 x (0.485, 0.456, 0.406), 255 x (0.229, 0.224, 0.225))
TORCHVISION_MEAN = (123.675, 116.28, 103.53)
TORCHVISION_STD = (58.395, 57.12, 57.375)


class LoadedModel(NamedTuple):
    """A model ready to be fed (what :func:`open_model` returns).

    A typed, immutable record; it also unpacks as ``runner, prep, labels, manifest``.

    Attributes:
        runner: the :class:`~.runner.Runner` of the chosen file.
        prep: the :class:`~mobilenet_edge.core.images.Preprocessing` to feed it (res and layout from the model).
        labels: one label per output index (``len == runner.num_classes``).
        manifest: the bundle's :class:`~mobilenet_edge.core.manifest.Manifest`, None for a lone file.
    """

    runner: Runner
    prep: Preprocessing
    labels: list[str]
    manifest: Optional[Manifest]


def default_preprocessing(fmt: str, res: int, layout: str) -> Preprocessing:
    """Preprocessing for a file without our metadata (see the module docstring for the sources).

    Args:
        fmt: "tflite" (Google's TF-slim convention) or "onnx" (torchvision convention).
        res: model input side (pixels).
        layout: "NCHW" or "NHWC" (from the model).
    """
    if fmt == "tflite":
        return Preprocessing(res=res, mean=(127.5,) * 3, std=(127.5,) * 3, crop=0.875, resize="tf_bilinear", layout=layout)
    return Preprocessing(res=res, mean=TORCHVISION_MEAN, std=TORCHVISION_STD, crop=0.875, resize="bilinear", layout=layout)


def default_labels(num_classes: int) -> list[str]:
    """ImageNet names for 1000 / 1001 (background first) outputs, else ``class_<i>``."""
    return imagenet_labels(num_classes)


def open_model(
    path_or_bundle: str | Path,
    *,
    int8: bool = False,
    fmt: str | None = None,
    threads: int = 1,
    prep_overrides: dict | None = None,
    labels_file: str | Path | None = None,
    runtime: str | None = None,
    verify: bool = True,
) -> LoadedModel:
    """Open a bundle folder, a lone ``.onnx`` or a foreign ``.tflite`` with what it needs to be fed.

    Resolution:
        * bundle folder (has manifest.json): ``model.onnx`` / ``model.int8.onnx`` (``fmt="tflite"``:
          ``model.tflite`` / ``model.int8.tflite``; ``fmt=None`` takes ONNX when present), the
          manifest's ``preprocessing``, labels from its ``labels.txt``.
        * ``.onnx`` file: preprocessing and labels from its metadata_props (``preprocessing``,
          ``labels``), else :func:`default_preprocessing` ("onnx") and :func:`default_labels`.
        * ``.tflite`` file: :func:`default_preprocessing` ("tflite") and :func:`default_labels`.
        In every case ``res`` and ``layout`` come from the model itself (when the model fixes them).

    Args:
        path_or_bundle: bundle folder or model file.
        int8: take the bundle's int8 model; with a lone file, the file must itself be int8
            (:func:`~.runner.is_int8_file`), else UsageError (running the fp32 file would mislabel it).
        fmt: "onnx" or "tflite" inside a bundle.
        threads: backend threads (>= 1).
        prep_overrides: Preprocessing fields to override (``mean``, ``std``, ``crop``, ``resize``, ...),
            None values ignored.
        labels_file: a labels file (one label per output index) replacing the model's labels.
        runtime: None (the file's default: ONNX Runtime for ``.onnx``, LiteRT for ``.tflite``) or a runtime
            name (:mod:`.names`: "ort"/"onnxruntime", "openvino", "litert"); in a bundle it also picks the
            format when ``fmt`` is None (litert: ``.tflite``, the others: ``.onnx``).
        verify: in a bundle, check the model file (and labels.txt when listed) against manifest.json's
            size and sha256 first (:func:`~mobilenet_edge.core.bundle.check_bundle_file`); also a file given
            by its path inside a bundle folder that lists it. False is the CLI's ``--no-verify``. A lone
            file has no manifest and is not checked.
    Returns:
        :class:`LoadedModel` (runner, preprocessing, labels (len == num_classes), manifest or None).
    Raises:
        UsageError: missing path, bad override, unknown runtime or one that cannot run the file, ``int8`` with a lone non-int8 file, a labels folder
            instead of a file, or labels whose count differs from the model's classes.
        MobilenetEdgeError: a bundle without the requested model, a bundle file that differs from its
            manifest (``verify``), an unloadable model.
    """
    p = Path(path_or_bundle)
    if fmt not in (None, "onnx", "tflite"):
        raise UsageError(f"format must be onnx or tflite, got {fmt!r}")
    if runtime is not None:
        try:
            runtime = runtime_name(runtime)
        except ValueError as e:
            raise UsageError(str(e)) from None
        if fmt is None and p.is_dir():
            fmt = "tflite" if runtime == RUNTIME_LITERT else "onnx"
    if p.is_dir():
        runner, prep_dict, labels, manifest = _open_bundle(p, int8=int8, fmt=fmt, threads=threads, runtime=runtime,
                                                           verify=verify)
    elif p.is_file():
        if verify:
            _bundle.check_listed_file(p)  # a file inside a bundle, given by its path: its record still holds
        runner, prep_dict, labels = _open_file(p, int8=int8, threads=threads, runtime=runtime)
        manifest = None
    else:
        raise UsageError(f"no such model file or bundle folder: {p}")
    prep = _preprocessing(runner, prep_dict, prep_overrides)
    labels = _labels(runner, labels, labels_file)
    return LoadedModel(runner, prep, labels, manifest)


def _open_bundle(p: Path, *, int8: bool, fmt: str | None, threads: int, runtime: str | None = None,
                 verify: bool = True):
    """(runner, preprocessing dict or None, labels or None, manifest) of a bundle folder; with ``verify`` the
    model file and (when listed) the labels file are checked against the manifest before use."""
    manifest = Manifest.read(p)
    if fmt is None:
        fmt = "onnx" if (p / (_bundle.FILE_INT8 if int8 else _bundle.FILE_FP32)).is_file() else (
            "tflite" if (p / (_bundle.FILE_TFLITE_INT8 if int8 else _bundle.FILE_TFLITE)).is_file() else "onnx"
        )
    model = _bundle.model_file(p, int8=int8, fmt=fmt)
    labels_path = p / manifest.labels_file
    if verify:
        _bundle.check_bundle_file(p, model.name, manifest)
        if manifest.file(manifest.labels_file) and labels_path.is_file():
            _bundle.check_bundle_file(p, manifest.labels_file, manifest)
    runner = Runner(model, threads=threads, runtime=runtime)
    labels = read_labels(labels_path) if labels_path.is_file() else None
    return runner, manifest.preprocessing, labels, manifest


def _open_file(p: Path, *, int8: bool, threads: int, runtime: str | None = None):
    """(runner, preprocessing dict or None, labels or None) of a lone .onnx / .tflite (ONNX metadata_props)."""
    runner = Runner(p, threads=threads, runtime=runtime)
    if int8 and not is_int8_file(runner):
        raise UsageError("--int8 selects the int8 model of a bundle; give the bundle folder or the int8 file itself")
    prep_dict = labels = None
    if runner.runtime != RUNTIME_LITERT:  # an .onnx (ONNX Runtime or OpenVINO): metadata_props
        md = runner.metadata
        if "preprocessing" in md:
            try:
                prep_dict = json.loads(md["preprocessing"])
            except ValueError:
                raise MobilenetEdgeError(f"{p}: metadata 'preprocessing' is not JSON") from None
        if "labels" in md:
            try:
                labels = [str(v) for v in json.loads(md["labels"])]
            except (ValueError, TypeError):
                raise MobilenetEdgeError(f"{p}: metadata 'labels' is not a JSON list") from None
    return runner, prep_dict, labels


def _preprocessing(runner: Runner, prep_dict: dict | None, prep_overrides: dict | None) -> Preprocessing:
    """The recorded (or default) preprocessing, with res/layout fixed by the model, then the overrides."""
    layout = runner.layout
    if prep_dict:
        prep = Preprocessing.from_dict(prep_dict)
    else:
        res = runner.res or 224
        prep = default_preprocessing("tflite" if runner.runtime == RUNTIME_LITERT else "onnx", res, layout)
    fixed = {"layout": layout}
    if runner.res is not None:
        fixed["res"] = runner.res
    prep = replace(prep, **fixed)
    overrides = {k: v for k, v in (prep_overrides or {}).items() if v is not None}
    if overrides:
        unknown = set(overrides) - set(Preprocessing.__dataclass_fields__)
        if unknown:
            raise UsageError(f"unknown preprocessing field(s): {', '.join(sorted(unknown))}")
        if "res" in overrides and runner.res is not None and overrides["res"] != runner.res:
            raise UsageError(f"res is fixed by the model at {runner.res}, got {overrides['res']}")
        prep = replace(prep, **overrides)
    return prep


def _labels(runner: Runner, labels: list[str] | None, labels_file: str | Path | None) -> list[str]:
    """``labels_file``'s labels, else the model's, else :func:`default_labels`; count checked."""
    if labels_file is not None:
        lf = Path(labels_file)
        if lf.is_dir():
            raise UsageError(f"{lf} is a folder, expected a labels file (one label per line)")
        if not lf.is_file():
            raise UsageError(f"no such labels file: {lf}")
        labels = read_labels(lf)
        src = str(lf)
    else:
        src = "the model"
    if labels is None:
        labels = default_labels(runner.num_classes)
    if len(labels) != runner.num_classes:
        msg = f"{len(labels)} labels from {src} but the model has {runner.num_classes} outputs"
        if labels_file is not None:
            raise UsageError(msg)
        raise MobilenetEdgeError(msg)
    return labels
