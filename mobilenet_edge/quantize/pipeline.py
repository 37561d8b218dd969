"""int8 post-training static quantization of a file or a bundle, with the fidelity report (no torch).

:func:`quantize_file` checks the model and the image folders before any work, calibrates and quantizes
with the ORT stages of :mod:`~.stages` (:func:`~.stages.quantize_model`), then compares the int8 model with
the fp32 model on evaluation images disjoint from the calibration images (:mod:`~.fidelity`): top-1
agreement, logits SQNR in dB per image (``10 log10(sum(fp32^2) / sum((fp32 - int8)^2))``; mean and
worst), and top-1/top-5 of both models when labels are known. :func:`quantize_bundle` does it for a
bundle's ``model.onnx`` and records the result in its manifest.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from ..core import bundle as bdl
from ..core.errors import UsageError
from ..core.images import Preprocessing, load
from ..core.jsonio import finite_or_none
from ..core.manifest import Manifest
from ..core.onnx_graph import model_io
from ..core.platform_info import detect_isa
from ..core.precision import quantized_ops
from ..core.progress import progress_bar
from ..core.versions import QUANTIZE_TOOLS, versions
from .calibration import (
    Warnings,
    collect_images,
)
from .fidelity import debug_layers, fidelity, relu6_ranges
from .options import QuantOptions
from .recipes import FILE_RANGE_RECIPES
from .reduce_range import decide_reduce_range
from .sources import class_labels, file_range_data, image_data, synthetic_data
from .stages import quantize_model

#: ``--calib`` folders with fewer decodable images than this get a "thin calibration" warning.
MIN_CALIB_IMAGES = 32
#: int8 model size limit relative to the fp32 model (issue #5: 30%).
MAX_SIZE_RATIO = 0.30

_STDERR = Console(stderr=True, highlight=False, markup=False, emoji=False)


def check_quantizable(src_onnx: str | Path, options: QuantOptions | None = None) -> int:
    """Refuse, before any work, a model that cannot be quantized as asked; returns its Conv count.

    Raises:
        UsageError: ``src_onnx`` already holds quantization nodes (QuantizeLinear/DequantizeLinear
            or QOperator ops: quantizing it again would stack a second set of scales), or
            ``options.float_first`` exceeds its number of Conv nodes (27 for MobileNet V1: paper Table 1's
            1 full conv + 13 depthwise + 13 pointwise).
    """
    import onnx

    model = onnx.load(str(src_onnx), load_external_data=False)
    found = quantized_ops(model)
    if found:
        raise UsageError(f"{src_onnx} is already quantized ({'/'.join(found)} nodes); give the fp32 model")
    convs = sum(n.op_type == "Conv" for n in model.graph.node)
    if options is not None and options.float_first is not None and options.float_first > convs:
        raise UsageError(f"--float-first {options.float_first} exceeds the model's {convs} Conv nodes")
    return convs


# ----------------------------------------------------------------------------------------------
# the steps of quantize_file
# ----------------------------------------------------------------------------------------------


def _check_inputs(src_onnx, prep: Preprocessing, options: QuantOptions, calib, synthetic: bool, fold: int) -> str:
    """Refuse bad arguments before images are read or calibration starts; returns the input name."""
    io = model_io(src_onnx)
    check_quantizable(src_onnx, options)
    h, w = io["input"]["shape"][2], io["input"]["shape"][3]
    if isinstance(h, int) and isinstance(w, int) and (h != prep.res or w != prep.res):
        raise UsageError(f"{src_onnx}: input is {h}x{w} but the preprocessing resizes to {prep.res}x{prep.res}")
    if prep.layout != "NCHW":
        raise UsageError(f"preprocessing layout must be NCHW for ONNX, got {prep.layout}")
    if calib is None and not synthetic and not _from_file(options):
        raise UsageError("--calib DIR is required (calibration images)")
    if fold not in (0, 1):
        raise UsageError(f"fold must be 0 or 1, got {fold}")
    return io["input"]["name"]


def _from_file(options: QuantOptions) -> bool:
    """True for recipes that take activation ranges from the weights file (``qat-ranges``: no calibration)."""
    return options.recipe in FILE_RANGE_RECIPES


def _decide(options: QuantOptions, weights_source: str | None, warn) -> dict:
    """The reduce_range decision for this CPU, and the warnings about the options and the weights."""
    decision = decide_reduce_range(detect_isa(), options.reduce_range)
    if decision["warning"]:
        warn(decision["warning"])
    if not options.per_channel:
        warn("--per-tensor: one scale per weight tensor collapses MobileNet's depthwise layers; "
             "use it only to compare with per-channel")
    if weights_source == "random":
        warn("random weights: int8 accuracy figures are meaningless (only the pipeline is exercised)")
    return decision


def _record(options: QuantOptions, decision: dict, weights_source: str | None, synthetic: bool) -> dict[str, Any]:
    return {
        "tool": "onnxruntime.quantization (quant_pre_process, create_calibrator, quantize_static)",
        "format": "QDQ",
        "method": options.method,
        "per_channel": options.per_channel,
        "activation_type": options.activations,
        "weight_type": options.weights,
        "reduce_range": decision["reduce_range"],
        "options": options.to_manifest(),
        "isa": {k: v for k, v in decision.items() if k != "warning"},
        "versions": versions(QUANTIZE_TOOLS),
        "weights_source": weights_source,
        "accuracy_meaningful": weights_source != "random" and not synthetic,
    }


def _quantize_to(tmp_q: Path, src_onnx, reader, options: QuantOptions, rec: dict, synthetic: bool, warn,
                 activation_ranges=None) -> None:
    """Run :func:`~.stages.quantize_model` into ``tmp_q`` and add its record and size figures to ``rec``."""
    reduce_range = rec["reduce_range"]
    meta = {"precision": "int8", "quantization": json.dumps(
        {"method": options.method, "per_channel": options.per_channel, "activations": options.activations,
         "reduce_range": reduce_range, "recipe": options.recipe})}
    qrec = quantize_model(src_onnx, tmp_q, reader, options, reduce_range=reduce_range, metadata=meta, warn=warn,
                          activation_ranges=activation_ranges)
    rec.update({k: qrec[k] for k in ("range_guard", "ort_arguments", "compact", "recipe")})
    rec["calibration"] = qrec["calibration"]
    n_cal = qrec["calibration"]["images"]
    if 0 < n_cal < MIN_CALIB_IMAGES and not synthetic:
        warn(f"only {n_cal} calibration image{'' if n_cal == 1 else 's'} (< {MIN_CALIB_IMAGES}): "
             "the calibration is thin, ranges may not cover real inputs")
    fp_size, q_size = Path(src_onnx).stat().st_size, tmp_q.stat().st_size
    rec["size"] = {"fp32_bytes": fp_size, "int8_bytes": q_size, "ratio": q_size / fp_size}
    rec["size"]["within_limit"] = q_size <= MAX_SIZE_RATIO * fp_size
    if not rec["size"]["within_limit"]:
        warn(f"int8 model is {100 * q_size / fp_size:.1f}% of the fp32 size (target {100 * MAX_SIZE_RATIO:.0f}%)")


def _check_layers(src_onnx, tmp_q: Path, eval_items, prep: Preprocessing, input_name: str, rec: dict, warn, *,
                  check_relu6: bool, debug: bool) -> None:
    """ReLU6 range check and per-layer SQNR (``--debug-layers``) on the first 4 evaluation images."""
    if not (debug or check_relu6):
        return
    sample = eval_items[:4] if isinstance(eval_items, np.ndarray) else _first_images(eval_items, prep, 4)
    if check_relu6 and len(sample):
        rows = relu6_ranges(tmp_q, sample, fp32_onnx=src_onnx)
        bad = [r for r in rows if r["min"] < r["lo"] - r["step"] or r["max"] > r["hi"] + r["step"]]
        rec["activation_ranges"] = {"checked": len(rows), "outside_one_step": [r["tensor"] for r in bad],
                                    "images": int(len(sample))}
        if bad:
            warn(f"{len(bad)} bounded activation(s) leave their Clip range by more than one "
                 f"quantization step, e.g. {bad[0]['tensor']}")
    if debug and len(sample):
        rec["layers"] = debug_layers(src_onnx, tmp_q, sample, input_name=input_name)


def _first_images(paths: Sequence[Path], prep: Preprocessing, n: int) -> np.ndarray:
    xs = []
    for p in paths:
        try:
            xs.append(load(p, prep))
        except UsageError:
            continue
        if len(xs) == n:
            break
    return np.stack(xs) if xs else np.zeros((0,), np.float32)


# ----------------------------------------------------------------------------------------------
# entry points
# ----------------------------------------------------------------------------------------------


def quantize_file(
    src_onnx: str | Path,
    dst_onnx: str | Path,
    prep: Preprocessing,
    *,
    calib: str | Path | None = None,
    eval_dir: str | Path | None = None,
    options: QuantOptions = QuantOptions(),
    synthetic: bool = False,
    labels_csv: str | Path | None = None,
    debug_layers_: bool = False,
    weights_source: str | None = None,
    progress: bool = True,
    check_relu6: bool = True,
    fold: int = 0,
    runtime: str = "onnxruntime",
    activation_ranges=None,
) -> dict:
    """Quantize one fp32 ONNX file to ``dst_onnx`` and evaluate it; the core of :func:`quantize_bundle`.

    ``activation_ranges``: :class:`~.qat_ranges.QatRanges` of the source QAT ``.tflite`` for the ``qat-ranges``
    recipe (read by the build side: ``mobilenet_edge.build.weights.tflite_file.read_activation_ranges``);
    nothing is calibrated then, and the evaluation uses ``eval_dir``, else all of ``calib``, else noise.

    ``runtime`` runs the fidelity report (both models): "onnxruntime" or "openvino" (:func:`~.fidelity.fidelity`).

    Calibration: images from ``calib`` (recursive) or, with ``synthetic``, uniform-noise images.
    Evaluation: ``eval_dir`` if given, else the other half of ``calib`` (:func:`~.calibration.split_paths`),
    else held-out synthetic images. ``dst_onnx`` is written only after quantization and evaluation succeed.

    Returns:
        The ``quantization`` record (JSON-ready) with ``options``, ``isa``, ``calibration``,
        ``evaluation``, ``fidelity``, optional ``layers``, ``warnings``.
    Raises:
        UsageError: bad folders or no decodable image; MobilenetEdgeError: int8 file too large.
    """
    warn = Warnings()
    input_name = _check_inputs(src_onnx, prep, options, calib, synthetic, fold)
    from_file = _from_file(options)
    images = None if synthetic or from_file else collect_images(calib, eval_dir, warn, fold)  # fail before any work
    decision = _decide(options, weights_source, warn)
    rec = _record(options, decision, weights_source, synthetic)
    with progress_bar(_STDERR, enabled=progress) as prog:
        if from_file:
            reader, eval_items, labels = file_range_data(rec, prep, options, activation_ranges, calib=calib,
                                                          eval_dir=eval_dir, labels_csv=labels_csv,
                                                          model_classes=class_labels(src_onnx))
        elif synthetic:
            reader, eval_items, labels = synthetic_data(rec, prep, options, input_name, calib, warn)
        else:
            reader, eval_items, labels = image_data(rec, images, prep, options, input_name, calib=calib,
                                                     eval_dir=eval_dir, labels_csv=labels_csv, fold=fold,
                                                     warn=warn, prog=prog, model_classes=class_labels(src_onnx))
        dst_onnx = Path(dst_onnx)
        work = Path(tempfile.mkdtemp(prefix=".quantize-", dir=dst_onnx.parent))
        try:
            tmp_q = work / dst_onnx.name
            _quantize_to(tmp_q, src_onnx, reader, options, rec, synthetic, warn, activation_ranges)
            rec["fidelity"] = fidelity(src_onnx, tmp_q, eval_items, prep, labels=labels, warn=warn, progress=prog,
                                       runtime=runtime)
            _check_layers(src_onnx, tmp_q, eval_items, prep, input_name, rec, warn, check_relu6=check_relu6,
                          debug=debug_layers_)
            os.replace(tmp_q, dst_onnx)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    rec["warnings"] = list(warn)
    return finite_or_none(rec)


def quantize_bundle(
    bundle_dir: str | Path,
    *,
    calib: str | Path | None = None,
    eval_dir: str | Path | None = None,
    options: QuantOptions = QuantOptions(),
    synthetic: bool = False,
    labels_csv: str | Path | None = None,
    debug_layers: bool = False,
    force: bool = True,
    progress: bool = True,
    fold: int = 0,
    runtime: str = "onnxruntime",
    activation_ranges=None,
    verify: bool = True,
) -> dict:
    """Write ``model.int8.onnx`` into a bundle and record it in ``manifest.json``.

    Args:
        bundle_dir: folder with ``manifest.json`` and ``model.onnx`` (docs/bundle-format.md).
        calib: calibration image folder. Required when ``manifest["weights"]["source"]`` is not
            ``"random"`` and the recipe is not ``qat-ranges``; with random weights synthetic data is the
            default (``synthetic`` forces it). With ``qat-ranges`` it is only evaluated on (without ``eval_dir``).
        eval_dir: evaluation folder (disjoint from ``calib``); default: the other half of ``calib``.
        options: :class:`~.options.QuantOptions`.
        labels_csv: ``file,imagenet_index`` csv for top-1/top-5 of the evaluation images.
        debug_layers: add per-layer SQNR (:func:`~.fidelity.debug_layers`) to the record.
        force: replace an existing ``model.int8.onnx`` (else UsageError).
        fold: which half of a split ``calib`` folder calibrates (0: even positions, 1: odd), for
            2-fold cross evaluation.
        runtime: where the fidelity report runs both models: "onnxruntime" or "openvino".
        activation_ranges: the ``qat-ranges`` recipe's source ranges (:func:`quantize_file`); no ``calib`` needed.
        verify: check ``model.onnx`` against the manifest's size and sha256 before quantizing it
            (:func:`~mobilenet_edge.core.bundle.check_bundle_file`; the CLI's ``--no-verify`` turns it off).
    Returns:
        The manifest's new ``quantization`` record.
    Raises:
        UsageError / MobilenetEdgeError: the bundle's files are then left untouched.
    """
    bundle_dir = Path(bundle_dir)
    manifest = Manifest.read(bundle_dir)
    src = bdl.model_file(bundle_dir)
    dst = bundle_dir / bdl.FILE_INT8
    if dst.exists() and not force:
        raise UsageError(f"{dst} exists; use --force to replace it")
    if verify:
        bdl.check_bundle_file(bundle_dir, src.name, manifest)
    prep = manifest.prep()
    source = manifest.weights_source
    if _from_file(options):
        if activation_ranges is None:
            raise UsageError(f"recipe {options.recipe} needs the source QAT .tflite's activation ranges; "
                             f"{bundle_dir.name} has weights from {source or 'an unknown source'}")
    elif calib is None and not synthetic and source == "random":
        synthetic = True
    if (calib is None or synthetic) and source != "random" and not _from_file(options):
        raise UsageError(f"--calib DIR is required: {bundle_dir.name} has weights from {source or 'an unknown source'} "
                         "and int8 ranges must come from real images (synthetic calibration is for random weights)")
    rec = quantize_file(src, dst, prep, calib=calib, eval_dir=eval_dir, options=options, synthetic=synthetic,
                        labels_csv=labels_csv, debug_layers_=debug_layers, weights_source=source, progress=progress,
                        fold=fold, runtime=runtime, activation_ranges=activation_ranges)
    _record_int8_file(manifest, dst, rec)
    manifest.write(bundle_dir)
    return rec


def _record_int8_file(manifest: Manifest, dst: Path, rec: dict) -> None:
    """The manifest's ``files["model.int8.onnx"]`` entry (I/O as recorded for fp32) and ``quantization``."""
    io = model_io(dst)
    fp_entry = manifest.file(bdl.FILE_FP32)
    entry = {**bdl.file_record(dst), "format": "onnx", "precision": "int8", "quant_format": "QDQ",
             "opset": io["opset"], "ir_version": io["ir_version"],
             "input": fp_entry.get("input", io["input"]), "output": fp_entry.get("output", io["output"]),
             "size_ratio_vs_fp32": rec["size"]["ratio"]}
    if manifest.files is None:
        manifest.files = {}
    manifest.files[bdl.FILE_INT8] = entry
    manifest.quantization = rec


def preprocessing_from_metadata(meta: dict) -> Preprocessing | None:
    """The ``preprocessing`` metadata_props entry of one of our ONNX files, if present."""
    raw = meta.get("preprocessing")
    if not raw:
        return None
    try:
        return Preprocessing.from_dict(json.loads(raw))
    except (ValueError, TypeError):
        return None


__all__ = [
    "MAX_SIZE_RATIO", "MIN_CALIB_IMAGES", "check_quantizable", "collect_images", "preprocessing_from_metadata",
    "quantize_bundle", "quantize_file",
]
