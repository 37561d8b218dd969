"""torch -> ONNX -> onnxsim -> parity check -> bundle folder (``export/<name>/``): :func:`export_bundle`.

Each stage is a function ``src -> dst`` (:mod:`.onnx_export`, :mod:`.parity`, :mod:`.tflite_export`,
:func:`mobilenet_edge.quantize.pipeline.quantize_bundle`); :func:`export_bundle` chains them and writes
the bundle atomically (a failing parity check leaves no file, an existing bundle is replaced only once
its successor is complete). See docs/bundle-format.md for what the bundle holds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..core.bundle import (
    FILE_FP32,
    FILE_TFLITE,
    FILE_TFLITE_INT8,
    FORMAT,
    FORMAT_VERSION,
    LABELS,
    file_record,
    read_manifest,
    staged_dir,
    write_manifest,
    write_text_atomic,
)
from ..core.errors import UsageError
from ..core.images import Preprocessing, expand_paths
from ..core.labels import imagenet_labels
from ..core.variants import Variant
from ..core.versions import export_versions
from .export_checks import check_early
from .onnx_export import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, export_onnx
from .parity import check_parity


@dataclass
class ExportOptions:
    """What :func:`export_bundle` builds.

    ``alpha``/``num_classes`` default to what the weights file says (or 1.0/1000 for random
    weights, or the number of ``labels``). ``activation``/``padding``/``bn_eps``: for random weights (None:
    relu6, symmetric, 1e-3) and for state dicts or modules of other MobileNet V1 code (None: the known
    layout's, else found or PyTorch's defaults; :mod:`mobilenet_edge.build.weights.foreign`); files that
    carry their own conventions refuse them.
    """

    alpha: float | None = None
    res: int = 224
    num_classes: int | None = None
    #: a weights file, a registry name (``google-quant``, ``google-float``, ``keras``, ``SOURCE/ALPHA/RES``),
    #: an in-memory ``torch.nn.Module`` that is a MobileNet V1 (ours or other code's), or ``"random"``; None: random weights, unless ``pretrained`` (the CLI's default: Google's weights for
    #: (alpha, res), shipped / cached / downloaded, see :mod:`mobilenet_edge.build.weights.resolve`)
    weights: Path | str | None = None
    pretrained: bool = False
    out: Path = Path("export")
    opset: int = DEFAULT_OPSET
    force: bool = False
    parity_images: Path | None = None
    tolerance: float = 1e-4
    seed: int = 0
    activation: str | None = None
    padding: str | None = None
    bn_eps: float | None = None
    #: one label per class (None: the weights' labels, else ImageNet's for 1000/1001 classes); the count must
    #: match the model's classes; written to labels.txt, the manifest and the ONNX metadata
    labels: tuple[str, ...] | None = None
    name: str | None = None
    #: "onnx" always; "tflite" adds model.tflite (and model.int8.tflite when tflite_int8) via litert-torch
    formats: tuple[str, ...] = ("onnx",)
    tflite_int8: bool = False
    #: also write model.int8.onnx (quantize.pipeline.quantize_bundle) before the bundle is put in place
    int8: bool = False
    calib: Path | None = None
    eval_dir: Path | None = None
    #: int8 recipe for model.int8.onnx and model.int8.tflite (:mod:`mobilenet_edge.quantize.recipes`; None:
    #: chosen by :func:`~.int8_recipe.choose_int8_recipe`: qat-ranges for QAT .tflite weights without calib,
    #: else fidelity), and the number of leading convs kept in float (None: the recipe's)
    recipe: str | None = None
    float_first: int | None = None
    #: Preprocessing fields (:data:`.export_checks.PREPROCESSING_OVERRIDES`: ``mean``, ``std``, ``crop``, ``resize``) replacing the weights'
    #: (e.g. torchvision's mean/std for a model fine-tuned with them); None: the weights' own, else TF-slim's
    preprocessing: dict | None = None
    extra_manifest: dict = field(default_factory=dict)


@dataclass
class BuiltModel:
    """The model an export starts from (:func:`build_model`).

    Attributes:
        model: ``MobileNetV1`` in eval mode.
        weights: the manifest's ``weights`` record (``{"source": "random", "seed"}`` or the weights file's
            ``{"source", "file", "sha256", ...}``).
        preprocessing: :class:`~mobilenet_edge.core.images.Preprocessing` fields from the weights (no
            ``res``), or None (the defaults).
        labels: one name per output from the weights, or None (ImageNet names are used).
    """

    model: Any
    weights: dict
    preprocessing: dict | None = None
    labels: list[str] | None = None
    #: the weights file read (None for random weights)
    path: Path | None = None


def build_model(opts: ExportOptions, *, progress=None, warn=None) -> BuiltModel:
    """The model to export: ``opts.weights`` (an in-memory module, a path or a registry name), the pretrained
    default (``opts.pretrained`` and no weights, :func:`~mobilenet_edge.build.weights.resolve.resolve_weights`),
    else seeded random weights.

    Args:
        progress: download progress callback (bytes done, total) when weights are downloaded.
        warn: one-line notes for stderr (weights trained at another res, trust on first use, assumed conventions).
    Raises:
        UsageError: a missing weights file, an unknown name, ``--classes`` not matching the weights,
            alpha mismatch, conventions given for a file that carries its own.
        WeightsError: the weights cannot be loaded, downloaded or mapped onto MobileNetV1.
    """
    from .model import random_model

    warn = warn or (lambda m: None)
    conventions = {"activation": opts.activation, "padding": opts.padding, "bn_eps": opts.bn_eps}
    if _is_module(opts.weights):
        from .weights.module import load_module

        return _built(opts, load_module(opts.weights, alpha=opts.alpha, **conventions), None, None, warn)
    registry = None
    path = None if opts.weights is None else opts.weights
    if opts.weights is not None or opts.pretrained:
        from .weights.resolve import resolve_weights

        resolved = resolve_weights(opts.weights, alpha=opts.alpha, res=opts.res, progress=progress, warn=warn)
        path, registry = resolved.path, resolved.record()
        if resolved.warning():
            warn(resolved.warning())
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"--weights {path}: no such file")
        from .weights import load_weights

        return _built(opts, load_weights(path, alpha=opts.alpha, **conventions), path, registry, warn)
    n_labels = len(opts.labels) if opts.labels is not None else None
    cfg = {
        "alpha": 1.0 if opts.alpha is None else opts.alpha,
        "num_classes": opts.num_classes or n_labels or 1000,
        "activation": opts.activation or "relu6",
        "padding": opts.padding or "symmetric",
        "bn_eps": 1e-3 if opts.bn_eps is None else opts.bn_eps,
    }
    model = random_model(cfg, opts.res, seed=opts.seed)
    return BuiltModel(model, {"source": "random", "seed": opts.seed})


def _is_module(obj) -> bool:
    """True for a ``torch.nn.Module`` (checked without importing torch for the other cases)."""
    if obj is None or isinstance(obj, (str, Path)):
        return False
    import torch

    return isinstance(obj, torch.nn.Module)


def _built(opts: ExportOptions, lw, path: Path | None, registry: dict | None, warn) -> BuiltModel:
    """:class:`BuiltModel` of loaded weights; ``--classes`` checked, assumed conventions said once."""
    if opts.num_classes is not None and opts.num_classes != lw.config["num_classes"]:
        raise UsageError(f"--classes {opts.num_classes} does not match the weights ({lw.config['num_classes']} classes)")
    if lw.mapping:
        m = lw.mapping
        assumed = [k for k, v in m.get("sources", {}).items() if "assumed" in v]
        warn(f"weights: {lw.file} mapped from {m['layout']}: {m['activation']}, {m['padding']} padding, "
             f"BN eps {m['bn_eps']:g}" + (f" ({', '.join(assumed)} assumed, as {m['sources'][assumed[0]].split(' (')[0]}; "
                                            "--activation, --padding, --bn-eps change them)" if assumed else ""))
    info = lw.source_info()
    if registry:
        info["registry"] = registry
    return BuiltModel(lw.model.eval(), info, lw.preprocessing, lw.labels, path)


@dataclass
class _Target:
    """What the bundle of one export is: variant, folder, preprocessing, labels, ONNX metadata."""

    variant: Variant
    name: str
    dst: Path
    prep: Preprocessing
    labels: list[str]
    metadata: dict


def export_bundle(opts: ExportOptions, *, log=None, progress=None, warn=None) -> dict:
    """Build the model, export ``model.onnx``, check parity, write ``labels.txt`` and ``manifest.json``
    (with ``opts.formats`` holding "tflite" the ``.tflite`` files too; with ``opts.int8`` model.int8.onnx).

    Returns ``{"bundle": Path, "manifest": dict, "seconds": float}``. ``progress``/``warn``: see
    :func:`build_model`.

    Raises:
        UsageError: bad variant/opset/paths, or an existing bundle without ``force``.
        ParityError: ONNX Runtime disagrees with PyTorch (nothing is written).
        WeightsError: the weights file cannot be loaded.
    """
    t0 = time.perf_counter()
    log = log or (lambda msg: None)
    images = check_early(opts)
    built = build_model(opts, progress=progress, warn=warn)
    choice = None
    if opts.int8:  # before any file is written: real weights without ranges and without --calib fail here
        from .int8_recipe import choose_int8_recipe

        choice = choose_int8_recipe(opts.recipe, calib=opts.calib, weights_source=built.weights["source"],
                                    weights_path=built.path)
        if choice.message:
            log(choice.message)
    target = _target(opts, built)
    with staged_dir(target.dst, force=opts.force) as stage:
        reg = built.weights.get("registry") or {}
        what = f"{reg['name']}, {reg.get('origin', 'file')}" if reg.get("name") else built.weights["source"]
        log(f"exporting {target.name} (weights: {what}) to ONNX opset {opts.opset}")
        info = export_onnx(built.model, stage / FILE_FP32, res=opts.res, opset=opts.opset, metadata=target.metadata)
        log(f"onnxsim: {info['nodes_before']} -> {info['nodes_after']} nodes; checking parity")
        parity = check_parity(built.model, stage / FILE_FP32, res=opts.res, prep=target.prep, images=images,
                              tolerance=opts.tolerance, seed=opts.seed)
        write_text_atomic(stage / LABELS, "\n".join(target.labels) + "\n")
        manifest = _manifest(opts, built, target, stage, info, parity)
        if "tflite" in opts.formats:
            manifest["files"].update(_export_tflite_files(built.model, stage, opts, target.prep, images, log))
        manifest["export"]["seconds"] = round(time.perf_counter() - t0, 3)
        write_manifest(stage, manifest)
        if opts.int8:  # inside the staging folder: a failure here leaves an existing bundle untouched
            from ..quantize.pipeline import QuantOptions, quantize_bundle

            log("quantizing to int8 (ONNX Runtime)")
            quantize_bundle(stage, calib=opts.calib, eval_dir=opts.eval_dir,
                            synthetic=opts.calib is None and choice.activation_ranges is None,
                            options=QuantOptions(recipe=choice.recipe, float_first=opts.float_first),
                            activation_ranges=choice.activation_ranges)
            manifest = read_manifest(stage)
    return {"bundle": target.dst, "manifest": manifest, "seconds": time.perf_counter() - t0}


def _target(opts: ExportOptions, built: BuiltModel) -> _Target:
    """Name, folder, preprocessing, labels and ONNX metadata of the bundle.

    Raises:
        UsageError: a label count that differs from the model's classes.
    """
    model = built.model
    variant = Variant(model.alpha, opts.res, model.num_classes)
    name = opts.name or variant.name
    prep = Preprocessing(**{**(built.preprocessing or {}), **(opts.preprocessing or {}), "res": opts.res})
    labels = list(opts.labels) if opts.labels is not None else built.labels
    if labels is None:
        labels = imagenet_labels(model.num_classes)
    if len(labels) != model.num_classes:
        given = "--labels gives" if opts.labels is not None else "the weights carry"
        raise UsageError(f"{given} {len(labels)} labels but the model has {model.num_classes} classes")
    if built.weights.get("file") and built.path is not None:
        built.weights["path"] = str(built.path)
    metadata = {
        "producer": "mobilenet-edge",
        "producer_version": __version__,
        "variant": name,
        "alpha": str(variant.alpha),
        "res": str(variant.res),
        "num_classes": str(variant.num_classes),
        "weights": built.weights["source"],
        "preprocessing": prep.to_dict(),
        "labels": labels,
    }
    return _Target(variant, name, Path(opts.out) / name, prep, labels, metadata)


def _manifest(opts: ExportOptions, built: BuiltModel, target: _Target, stage: Path, info: dict, parity: dict) -> dict:
    """``manifest.json`` of the ONNX export (docs/bundle-format.md), as a dict in the documented key order."""
    variant, labels = target.variant, target.labels
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": target.name,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "producer": {"name": "mobilenet-edge", "version": __version__},
        "variant": {"alpha": variant.alpha, "res": variant.res, "num_classes": variant.num_classes,
                    "params": variant.params, "macs": variant.macs},
        "model_config": built.model.config(),
        "weights": built.weights,
        "preprocessing": target.prep.to_dict(),
        "labels": {"file": LABELS, "count": len(labels),
                   "background_index": 0 if labels and labels[0] == "background" else None,
                   "source": "given" if opts.labels is not None else "weights" if built.labels
                   else "imagenet" if len(labels) in (1000, 1001) else "class_<i>"},
        "files": {
            FILE_FP32: {
                **file_record(stage / FILE_FP32),
                "format": "onnx",
                "precision": "fp32",
                "opset": info["opset"],
                "ir_version": info["ir_version"],
                "min_onnxruntime": info["min_onnxruntime"],
                "input": {"name": INPUT_NAME, "shape": ["N", 3, opts.res, opts.res], "dtype": "float32",
                          "layout": "NCHW"},
                "output": {"name": OUTPUT_NAME, "shape": ["N", variant.num_classes], "dtype": "float32"},
            },
            LABELS: file_record(stage / LABELS),
        },
        "export": {**info, "parity": parity, "tool_versions": export_versions()},
        **opts.extra_manifest,
    }


def _export_tflite_files(model, stage: Path, opts: ExportOptions, prep: Preprocessing, images, log) -> dict:
    """model.tflite (parity-checked) and, with ``opts.tflite_int8``, model.int8.tflite calibrated on
    ``opts.calib`` (litert-torch; see :mod:`mobilenet_edge.build.tflite.export`)."""
    from ..core.images import iter_batches
    from .tflite_export import export_tflite

    check = [x for _, x in iter_batches(images, prep, batch=8)] if images else None
    log("converting to TFLite (litert-torch)")
    files = {FILE_TFLITE: export_tflite(model, stage / FILE_TFLITE, res=opts.res, check=check)}
    if opts.tflite_int8:  # opts.calib is set: export_checks.check_early
        calib = (x for _, x in iter_batches(expand_paths([opts.calib]), prep, batch=16))
        log(f"quantizing TFLite to int8 on {opts.calib}")
        if opts.eval_dir is not None:  # the int8 fidelity on held-out images, as for the ONNX int8 report
            check = [x for _, x in iter_batches(expand_paths([opts.eval_dir]), prep, batch=16)]
        files[FILE_TFLITE_INT8] = export_tflite(model, stage / FILE_TFLITE_INT8, res=opts.res, int8=True,
                                                calib=calib, check=check, recipe=opts.recipe or "fidelity",
                                                float_first=opts.float_first)
    return files
