"""torch -> ONNX -> onnxsim -> parity check -> bundle folder (``export/<name>/``).

Each stage is a function ``src -> dst``; :func:`export_bundle` chains them and writes the bundle
atomically (a failing parity check leaves no file, an existing bundle is replaced only once its
successor is complete). See docs/bundle-format.md for what the bundle holds.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import __version__
from ..core.bundle import (
    FILE_FP32,
    FILE_TFLITE,
    FILE_TFLITE_INT8,
    FORMAT,
    FORMAT_VERSION,
    LABELS,
    atomic_path,
    file_record,
    read_manifest,
    staged_dir,
    write_manifest,
    write_text_atomic,
)
from ..core.errors import ParityError, UsageError
from ..core.images import Preprocessing, expand_paths, load
from ..core.labels import imagenet_labels
from ..core.sessions import ort_session
from ..core.variants import Variant
from ..core.versions import export_versions

#: Lowest opset the pipeline needs: per-channel QDQ (QuantizeLinear/DequantizeLinear with ``axis``)
#: arrived in opset 13.
MIN_OPSET = 13
DEFAULT_OPSET = MIN_OPSET
#: Highest opset the TorchScript exporter emits.
MAX_OPSET = 20

#: First onnxruntime release implementing each opset (ORT docs/Versioning.md "version matrix").
ORT_FOR_OPSET = {13: "1.6", 14: "1.8", 15: "1.9", 16: "1.11", 17: "1.12", 18: "1.14", 19: "1.15", 20: "1.17",
                 21: "1.18", 22: "1.20"}

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass
class ExportOptions:
    """What :func:`export_bundle` builds.

    ``alpha``/``num_classes`` default to what the weights file says (or 1.0/1000 for random
    weights). ``activation``/``padding`` apply to random weights only (imported weights carry theirs).
    """

    alpha: float | None = None
    res: int = 224
    num_classes: int | None = None
    weights: Path | None = None
    out: Path = Path("export")
    opset: int = DEFAULT_OPSET
    force: bool = False
    parity_images: Path | None = None
    tolerance: float = 1e-4
    seed: int = 0
    activation: str = "relu6"
    padding: str = "symmetric"
    name: str | None = None
    #: "onnx" always; "tflite" adds model.tflite (and model.int8.tflite when tflite_int8) via litert-torch
    formats: tuple[str, ...] = ("onnx",)
    tflite_int8: bool = False
    #: also write model.int8.onnx (quantize.quantize_bundle) before the bundle is put in place
    int8: bool = False
    calib: Path | None = None
    eval_dir: Path | None = None
    #: int8 recipe for model.int8.onnx and model.int8.tflite (:mod:`mobilenet_edge.quantize.recipes`), and the
    #: number of leading convs kept in float (None: the recipe's)
    recipe: str = "fidelity"
    float_first: int | None = None
    extra_manifest: dict = field(default_factory=dict)


@contextlib.contextmanager
def _quiet():
    """Send chatty library prints (onnxsim's 'Checking 0/1...') and export warnings to stderr/nowhere."""
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def check_memory(v: Variant, *, batch: int = 16) -> int:
    """Refuse a variant too large to export on this machine (e.g. ``--res 1000000000``), before torch tries.

    Estimate: 8 copies of the fp32 weights (model, ONNX, onnxsim, ORT, quantization) plus ``batch`` images
    of the input and the two largest activations (the stem's output, stride 2), float32, twice over.
    Returns the estimate in bytes. Raises UsageError when it exceeds the machine's physical memory.
    """
    stem_ch = v.channels[0]
    per_image = 4 * (3 * v.res**2 + 2 * ((v.res + 1) // 2) ** 2 * stem_ch)
    need = 8 * 4 * v.params + 2 * batch * per_image
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on this platform: do not guess
        return need
    if need > have:
        raise UsageError(f"alpha {v.alpha:g}, res {v.res} needs about {need / 2**30:,.0f} GiB to export; "
                         f"this machine has {have / 2**30:,.0f} GiB")
    return need


def check_opset(opset: int) -> int:
    """Raises UsageError for an opset the pipeline cannot use, naming the minimum."""
    if opset < MIN_OPSET:
        raise UsageError(
            f"--opset {opset} is too low: the pipeline needs opset >= {MIN_OPSET} (per-channel QDQ quantization)"
        )
    if opset > MAX_OPSET:
        raise UsageError(f"--opset {opset} is not supported by the exporter (max {MAX_OPSET})")
    return opset


def build_model(opts: ExportOptions):
    """(model in eval mode, weights record, preprocessing fields, labels or None)."""
    from .model import random_model

    if opts.weights is not None:
        path = Path(opts.weights)
        if not path.is_file():
            raise UsageError(f"--weights {path}: no such file")
        from .weights import load_weights

        lw = load_weights(path, alpha=opts.alpha)
        if opts.num_classes is not None and opts.num_classes != lw.config["num_classes"]:
            raise UsageError(
                f"--classes {opts.num_classes} does not match the weights ({lw.config['num_classes']} classes)"
            )
        record = lw.source_info()
        return lw.model.eval(), record, lw.preprocessing, lw.labels
    cfg = {
        "alpha": 1.0 if opts.alpha is None else opts.alpha,
        "num_classes": 1000 if opts.num_classes is None else opts.num_classes,
        "activation": opts.activation,
        "padding": opts.padding,
    }
    model = random_model(cfg, opts.res, seed=opts.seed)
    return model, {"source": "random", "seed": opts.seed}, None, None


def export_onnx(model, dst: str | Path, *, res: int, opset: int = DEFAULT_OPSET, metadata: dict | None = None) -> dict:
    """torch model -> simplified, checked ONNX file at ``dst`` (written atomically).

    The graph has input ``input`` (N, 3, res, res) float32 and output ``logits`` (N, classes) float32,
    N dynamic. Returns ``{"exporter", "opset", "ir_version", "nodes_before", "nodes_after",
    "min_onnxruntime", "seconds"}``.

    Exporter: the TorchScript exporter (``dynamo=False``). Measured on torch 2.13 for 0.5/160 tf_same:
    it emits opset 13 directly (the dynamo exporter needs >= 18, i.e. onnxruntime >= 1.14 on the Pi),
    takes ~1 s versus ~10 s, is byte-for-byte deterministic, and after onnxsim gives the same
    27 Conv + 27 Clip graph (59 nodes) as dynamo's 57. It is deprecated upstream; if a future torch
    drops it we fall back to dynamo at opset >= 18.

    Raises:
        UsageError: unsupported opset.
        MobilenetEdgeError: onnxsim's own check or onnx.checker fails.
    """
    import onnx
    import onnxsim
    import torch

    check_opset(opset)
    t0 = time.perf_counter()
    model = model.eval()
    example = torch.zeros(2, 3, res, res)
    buf = io.BytesIO()
    exporter = "torchscript"
    with _quiet(), torch.no_grad():
        try:
            torch.onnx.export(
                model, (example,), buf, dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}}, do_constant_folding=True,
            )
        except (TypeError, RuntimeError, AttributeError) as e:  # pragma: no cover - future torch
            if "dynamo" not in str(e).lower() and "torchscript" not in str(e).lower():
                raise
            exporter, opset = "dynamo", max(opset, 18)
            buf = io.BytesIO()
            prog = torch.onnx.export(
                model, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_shapes={"x": {0: torch.export.Dim("N")}},
            )
            prog.save(buf)
    raw = onnx.load_from_string(buf.getvalue())
    nodes_before = len(raw.graph.node)
    with _quiet():
        simplified, ok = onnxsim.simplify(raw, check_n=1, test_input_shapes={INPUT_NAME: [1, 3, res, res]})
    if not ok:
        from ..core.errors import MobilenetEdgeError

        raise MobilenetEdgeError("onnxsim's check of the simplified model against the original failed")
    # the oldest IR version that carries this opset, so older runtimes (on a Pi) load the file
    simplified.ir_version = onnx.helper.find_min_ir_version_for(list(simplified.opset_import))
    simplified.producer_name = "mobilenet-edge"
    simplified.producer_version = __version__
    del simplified.metadata_props[:]
    for k, v in (metadata or {}).items():
        simplified.metadata_props.add(key=str(k), value=v if isinstance(v, str) else json.dumps(v))
    onnx.checker.check_model(simplified, full_check=True)
    with atomic_path(dst) as tmp:
        onnx.save(simplified, str(tmp))
    return {
        "exporter": exporter,
        "opset": opset,
        "ir_version": simplified.ir_version,
        "nodes_before": nodes_before,
        "nodes_after": len(simplified.graph.node),
        "min_onnxruntime": ORT_FOR_OPSET.get(opset, "unknown"),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def check_parity(
    model, onnx_path: str | Path, *, res: int, prep: Preprocessing, images: list[Path] | None = None,
    tolerance: float = 1e-4, seed: int = 0,
) -> dict:
    """ONNX Runtime vs PyTorch logits on a seeded random batch of 3 and on real images.

    Random inputs are uniform in [-1, 1] (the preprocessed range). Images are preprocessed with
    ``prep``. Returns ``{"max_abs_diff", "max_abs_diff_random", "max_abs_diff_images", "tolerance",
    "top1_equal", "n_random", "n_images"}``.

    Raises:
        ParityError: max abs logit difference > tolerance, or a different top-1 on any input.
    """
    import torch

    rng = np.random.default_rng(seed)
    batches = [("random", rng.uniform(-1, 1, size=(3, 3, res, res)).astype(np.float32))]
    if images:
        batches.append(("images", np.stack([load(p, prep) for p in images])))
    sess = ort_session(onnx_path)
    result = {"tolerance": tolerance, "top1_equal": True, "n_random": 3, "n_images": len(images or [])}
    worst = 0.0
    for kind, x in batches:
        with torch.no_grad():
            ref = model.eval()(torch.from_numpy(x)).numpy()
        got = sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        diff = float(np.max(np.abs(ref - got)))
        result[f"max_abs_diff_{kind}"] = diff
        worst = max(worst, diff)
        if not np.array_equal(ref.argmax(1), got.argmax(1)):
            result["top1_equal"] = False
    result["max_abs_diff"] = worst
    if worst > tolerance or not result["top1_equal"]:
        raise ParityError(
            f"ONNX Runtime disagrees with PyTorch: max abs logit difference {worst:.3g} "
            f"(tolerance {tolerance:g}), top-1 {'identical' if result['top1_equal'] else 'differs'}"
        )
    return result


def export_bundle(opts: ExportOptions, *, log=None) -> dict:
    """Build the model, export ``model.onnx``, check parity, write ``labels.txt`` and ``manifest.json``.

    Returns ``{"bundle": Path, "manifest": dict, "seconds": float}``.

    Raises:
        UsageError: bad variant/opset/paths, or an existing bundle without ``force``.
        ParityError: ONNX Runtime disagrees with PyTorch (nothing is written).
        WeightsError: the weights file cannot be loaded.
    """
    t0 = time.perf_counter()
    log = log or (lambda msg: None)
    check_opset(opts.opset)
    from ..quantize.recipes import get_recipe

    try:
        get_recipe(opts.recipe)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if opts.float_first is not None and opts.float_first < 0:
        raise UsageError(f"--float-first must be >= 0, got {opts.float_first}")
    v0 = Variant(1.0 if opts.alpha is None else opts.alpha, opts.res)  # validate early, before loading anything
    check_memory(v0)
    n_convs = sum(layer.kind in ("conv", "dw", "pw") for layer in v0.layers())  # paper Table 1: 27
    if opts.float_first is not None and opts.float_first > n_convs:
        raise UsageError(f"--float-first {opts.float_first} exceeds the model's {n_convs} Conv nodes")
    if "tflite" in opts.formats:
        import importlib.util

        if importlib.util.find_spec("litert_torch") is None:
            from .tflite_export import _import_litert_torch

            _import_litert_torch()  # raises the install hint (exit 1) before any work
    if opts.int8 and opts.calib is not None:
        from ..quantize.pipeline import collect_images

        collect_images(opts.calib, opts.eval_dir, warn=lambda m: None)  # too few images: fail now, not after export
    images = expand_paths([opts.parity_images]) if opts.parity_images else None
    for folder in (opts.calib, opts.eval_dir):
        if folder is not None:
            expand_paths([folder])  # fail now (no such folder / no image), before any work or replacement
    model, weights_record, prep_fields, labels = build_model(opts)
    variant = Variant(model.alpha, opts.res, model.num_classes)
    name = opts.name or variant.name
    dst = Path(opts.out) / name
    prep = Preprocessing(**{**(prep_fields or {}), "res": opts.res})
    if labels is None:
        labels = imagenet_labels(model.num_classes)
    if len(labels) != model.num_classes:
        raise UsageError(f"{len(labels)} labels for a model with {model.num_classes} classes")
    if weights_record.get("file") and opts.weights is not None:
        weights_record["path"] = str(opts.weights)
    metadata = {
        "producer": "mobilenet-edge",
        "producer_version": __version__,
        "variant": name,
        "alpha": str(variant.alpha),
        "res": str(variant.res),
        "num_classes": str(variant.num_classes),
        "weights": weights_record["source"],
        "preprocessing": prep.to_dict(),
        "labels": labels,
    }
    with staged_dir(dst, force=opts.force) as stage:
        log(f"exporting {name} (weights: {weights_record['source']}) to ONNX opset {opts.opset}")
        info = export_onnx(model, stage / FILE_FP32, res=opts.res, opset=opts.opset, metadata=metadata)
        log(f"onnxsim: {info['nodes_before']} -> {info['nodes_after']} nodes; checking parity")
        parity = check_parity(model, stage / FILE_FP32, res=opts.res, prep=prep, images=images,
                              tolerance=opts.tolerance, seed=opts.seed)
        write_text_atomic(stage / LABELS, "\n".join(labels) + "\n")
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": name,
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "producer": {"name": "mobilenet-edge", "version": __version__},
            "variant": {"alpha": variant.alpha, "res": variant.res, "num_classes": variant.num_classes,
                        "params": variant.params, "macs": variant.macs},
            "model_config": model.config(),
            "weights": weights_record,
            "preprocessing": prep.to_dict(),
            "labels": {"file": LABELS, "count": len(labels),
                       "background_index": 0 if labels and labels[0] == "background" else None},
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
        if "tflite" in opts.formats:
            manifest["files"].update(_export_tflite_files(model, stage, opts, prep, images, log))
        manifest["export"]["seconds"] = round(time.perf_counter() - t0, 3)
        write_manifest(stage, manifest)
        if opts.int8:  # inside the staging folder: a failure here leaves an existing bundle untouched
            from ..quantize.pipeline import QuantOptions, quantize_bundle

            log("quantizing to int8 (ONNX Runtime)")
            quantize_bundle(stage, calib=opts.calib, eval_dir=opts.eval_dir, synthetic=opts.calib is None,
                            options=QuantOptions(recipe=opts.recipe, float_first=opts.float_first))
            manifest = read_manifest(stage)
    return {"bundle": dst, "manifest": manifest, "seconds": time.perf_counter() - t0}


def _export_tflite_files(model, stage: Path, opts: ExportOptions, prep: Preprocessing, images, log) -> dict:
    """model.tflite (parity-checked) and, with ``opts.tflite_int8``, model.int8.tflite calibrated on
    ``opts.calib`` (litert-torch; see :mod:`mobilenet_edge.build.tflite_export`)."""
    from ..core.images import iter_batches
    from .tflite_export import export_tflite

    check = [x for _, x in iter_batches(images, prep, batch=8)] if images else None
    log("converting to TFLite (litert-torch)")
    files = {FILE_TFLITE: export_tflite(model, stage / FILE_TFLITE, res=opts.res, check=check)}
    if opts.tflite_int8:
        if opts.calib is None:
            raise UsageError("--format tflite --int8 needs --calib DIR (calibration images)")
        calib = (x for _, x in iter_batches(expand_paths([opts.calib]), prep, batch=16))
        log(f"quantizing TFLite to int8 on {opts.calib}")
        if opts.eval_dir is not None:  # the int8 fidelity on held-out images, as for the ONNX int8 report
            check = [x for _, x in iter_batches(expand_paths([opts.eval_dir]), prep, batch=16)]
        files[FILE_TFLITE_INT8] = export_tflite(model, stage / FILE_TFLITE_INT8, res=opts.res, int8=True,
                                                calib=calib, check=check, recipe=opts.recipe,
                                                float_first=opts.float_first)
    return files
