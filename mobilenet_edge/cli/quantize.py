"""``mobilenet-edge quantize``: int8 QDQ model with ONNX Runtime, calibrated on real images, with a
fidelity report (int8 vs fp32 on disjoint evaluation images). Never imports torch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..core import jsonio
from .app import NO_VERIFY_HELP, app, err, out, warn_no_verify
from .predict import MeanOpt, StdOpt, _floats

EPILOG = (
    "Examples:\n\n"
    "  mobilenet-edge quantize export/mobilenet_v1_0.50_160 --calib imagenet-calib/\n\n"
    "  mobilenet-edge quantize export/mobilenet_v1_0.50_160 --eval imagenet-calib/   # Google's QAT weights: "
    "their own ranges (qat-ranges), no calibration\n\n"
    "  mobilenet-edge quantize export/mobilenet_v1_0.50_160 --calib calib/ --eval val/ --labels val/labels.csv "
    "--method entropy --debug-layers\n\n"
    "  mobilenet-edge quantize export/mobilenet_v1_0.50_160 --calib imagenet-calib/ --per-tensor --force --json\n\n"
    "  mobilenet-edge quantize export/mobilenet_v1_0.50_160 --calib imagenet-calib/ --recipe plain --force\n\n"
    "  mobilenet-edge quantize export/mobilenet_v1_0.25_128 --calib imagenet-calib/ --float-first 14 --force   "
    "# closer to fp32, slower on ARM\n\n"
    "  mobilenet-edge quantize other.onnx --calib photos/ --mean 123.675,116.28,103.53 --std 58.395,57.12,57.375 "
    "--crop 0.875\n\n"
    "Without --eval, the --calib folder is split deterministically: sorted files, even positions calibrate, "
    "odd positions evaluate."
)


@app.command(epilog=EPILOG)
def quantize(
    target: Annotated[Path, typer.Argument(help="Bundle folder (export/<name>) or an fp32 .onnx file.")],
    calib: Annotated[Optional[Path], typer.Option(help="Calibration image folder (recursive). Required for real weights.")] = None,
    eval_dir: Annotated[Optional[Path], typer.Option("--eval", help="Evaluation folder (disjoint); default: half of --calib.")] = None,
    labels: Annotated[Optional[Path], typer.Option(help="labels.csv (file,imagenet_index) for the evaluation images.")] = None,
    recipe: Annotated[Optional[str], typer.Option(help="fidelity (default with --calib: grid-aligned weights, bias "
                                        "correction, float logits and stem) | grid | plain (ORT as is) | qat-ranges "
                                        "(default without --calib for a bundle of Google's QAT weights: the ranges "
                                        "the .tflite learned, no images). See docs/quantize.md.")] = None,
    float_first: Annotated[Optional[int], typer.Option(min=0, help="Keep the first N convs in float (mixed "
                           "precision; fidelity keeps 2). More = closer to fp32, slower where int8 is fast: "
                           "trade-off table in docs/fidelity.md.")] = None,
    method: Annotated[str, typer.Option(help="Calibration: minmax | entropy | percentile.")] = "minmax",
    per_tensor: Annotated[bool, typer.Option("--per-tensor", help="One weight scale per tensor (worse; for comparison).")] = False,
    activations: Annotated[str, typer.Option(help="Activation type: uint8 | int8.")] = "uint8",
    samples: Annotated[int, typer.Option(min=1, help="Maximum calibration images.")] = 256,
    percentile: Annotated[float, typer.Option(help="Percentile for --method percentile.")] = 99.999,
    bins: Annotated[Optional[int], typer.Option(help="Histogram bins (ORT defaults: entropy 128, percentile 2048).")] = None,
    symmetric_activations: Annotated[bool, typer.Option("--symmetric-activations", help="Symmetric activation ranges (zero point 0).")] = False,
    reduce_range: Annotated[Optional[bool], typer.Option("--reduce-range/--no-reduce-range", help="7-bit weights; default: decided from this CPU (x86 without VNNI -> on).")] = None,
    synthetic: Annotated[bool, typer.Option("--synthetic", help="Calibrate on noise images (random-weight bundles only: accuracy meaningless).")] = False,
    fold: Annotated[int, typer.Option(min=0, max=1, help="Without --eval: 0 = even positions calibrate, 1 = odd (2-fold check).")] = 0,
    debug_layers: Annotated[bool, typer.Option("--debug-layers", help="Per-layer SQNR from ORT's QDQ debug tools, worst first.")] = False,
    mean: MeanOpt = None,
    std: StdOpt = None,
    crop: Annotated[Optional[float], typer.Option(help="Foreign ONNX: central crop fraction (0, 1].")] = None,
    resize: Annotated[Optional[str], typer.Option(help="Foreign ONNX: resize tf_bilinear | bilinear | bicubic | nearest | lanczos.")] = None,
    res: Annotated[Optional[int], typer.Option(help="Foreign ONNX with a symbolic H/W: input resolution.")] = None,
    runtime: Annotated[Optional[str], typer.Option("--runtime", help="Where the fidelity report runs both models: "
                       "ort (default) or openvino.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the quantization record as JSON.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing int8 model.")] = False,
    no_verify: Annotated[bool, typer.Option("--no-verify", help=NO_VERIFY_HELP)] = False,
) -> None:
    """Quantize an fp32 model to int8 (QDQ, per-channel weights) with ONNX Runtime and report its
    fidelity to fp32: top-1 agreement, logits SQNR (dB), top-1/top-5 with labels.

    A bundle gets model.int8.onnx and a "quantization" record in manifest.json. A lone .onnx file gets
    <name>.int8.onnx beside it; its preprocessing comes from its metadata (our exports) or from
    --mean/--std/--crop/--resize.
    """
    from ..core.bundle import check_listed_file
    from ..core.errors import UsageError
    from ..core.images import image_folder
    from ..quantize.options import OrtExtraOptions, QuantOptions
    from ..quantize.pipeline import quantize_bundle

    mean, std = _floats(mean, "mean"), _floats(std, "std")  # same syntax as predict: 127.5 or R,G,B
    fidelity_runtime = _fidelity_runtime(runtime)

    extra = OrtExtraOptions(activation_symmetric=symmetric_activations, calib_percentile=percentile, calib_num_bins=bins)
    for name, path in (("--calib", calib), ("--eval", eval_dir)):
        if path is not None:
            image_folder(path, name)  # export's words for the same mistake
    qat = None
    if target.is_dir() and (recipe == "qat-ranges" or (recipe is None and calib is None and not synthetic)):
        recipe, qat = _bundle_recipe(target, recipe)
    opts = QuantOptions(method=method, per_channel=not per_tensor, activations=activations,
                        reduce_range=reduce_range, samples=samples, extra=extra, recipe=recipe or "fidelity",
                        float_first=float_first)
    if target.is_dir():
        if any(v is not None for v in (mean, std, crop, resize, res)):
            raise UsageError("--mean/--std/--crop/--resize/--res apply to a lone .onnx file; a bundle has its preprocessing")
        warn_no_verify(no_verify)
        rec = quantize_bundle(target, calib=calib, eval_dir=eval_dir, options=opts, synthetic=synthetic,
                              labels_csv=labels, debug_layers=debug_layers, force=force, fold=fold,
                              runtime=fidelity_runtime, activation_ranges=qat, verify=not no_verify)
        dst = target / "model.int8.onnx"
    elif target.is_file():
        if recipe == "qat-ranges":
            raise UsageError("--recipe qat-ranges needs a bundle folder (its manifest names the source .tflite)")
        if not no_verify:
            check_listed_file(target)  # a bundle's model.onnx given by its path: its manifest record holds
        prep = _lone_file_prep(target, mean=mean, std=std, crop=crop, resize=resize, res=res)
        dst, rec = _quantize_lone_file(target, prep, force=force, calib=calib, eval_dir=eval_dir, options=opts,
                                       synthetic=synthetic, labels_csv=labels, debug_layers_=debug_layers, fold=fold,
                                       runtime=fidelity_runtime)
    else:
        raise UsageError(f"no such bundle folder or .onnx file: {target}")
    out.print_json(jsonio.dumps(rec)) if as_json else print_record(rec, dst)

def _quantize_lone_file(target: Path, prep, *, force: bool, calib, synthetic: bool, **kw):
    """``<name>.int8.onnx`` beside a lone .onnx file: (its path, the quantization record)."""
    from ..core.errors import UsageError
    from ..core.onnx_graph import model_io
    from ..quantize.pipeline import quantize_file

    dst = target.with_name(target.name[: -len(".onnx")] + ".int8.onnx" if target.name.endswith(".onnx")
                           else target.name + ".int8.onnx")
    if dst.exists() and not force:
        raise UsageError(f"{dst} exists; use --force to replace it")
    weights = model_io(target)["metadata"].get("weights")
    if calib is None and not synthetic:
        raise UsageError("--calib DIR is required (or --synthetic for a random-weight model)")
    return dst, quantize_file(target, dst, prep, calib=calib, synthetic=synthetic, weights_source=weights, **kw)


def _bundle_recipe(bundle: Path, recipe: str | None):
    """(recipe, activation ranges) for a bundle quantized without --calib: ``qat-ranges`` when its manifest names
    a QAT .tflite found on this machine (same sha256); else (None, None), and quantize_bundle asks for --calib
    (random weights: synthetic calibration). ``--recipe qat-ranges`` that cannot be served: UsageError."""
    from ..build.int8_recipe import bundle_qat_source
    from ..build.weights.tflite_file import read_activation_ranges
    from ..core.errors import UsageError
    from ..core.manifest import Manifest

    weights = Manifest.read(bundle).weights or {}
    if recipe is None and (weights.get("source") != "tflite" or not weights.get("sha256")):
        return None, None
    try:
        qat = read_activation_ranges(bundle_qat_source(weights))
    except UsageError:
        if recipe is None:
            return None, None
        raise
    if qat is None:
        if recipe is None:
            return None, None
        raise UsageError(f"--recipe qat-ranges: {weights.get('file')} is a float .tflite (no activation ranges)")
    err.print(f"int8 recipe: qat-ranges (activation ranges from {qat.file})", markup=False, highlight=False)
    return "qat-ranges", qat


def _lone_file_prep(target: Path, *, mean, std, crop, resize, res):
    """The preprocessing of a lone .onnx file: its metadata (our exports), updated by the options given.

    Raises:
        UsageError: a symbolic input height without --res, or a foreign model without --mean/--std.
    """
    from ..core.errors import UsageError
    from ..core.images import Preprocessing
    from ..core.onnx_graph import model_io
    from ..quantize.pipeline import preprocessing_from_metadata

    io = model_io(target)
    prep = preprocessing_from_metadata(io["metadata"])
    h = io["input"]["shape"][2]
    if prep is None or any(v is not None for v in (mean, std, crop, resize, res)):
        base = prep.to_dict() if prep else {}
        r = res or (h if isinstance(h, int) else None) or base.get("res")
        if r is None:
            raise UsageError(f"{target}: input height is symbolic ({h}); pass --res")
        if prep is None and (mean is None or std is None):
            raise UsageError(f"{target} is not one of our models (no preprocessing metadata): "
                             "pass --mean and --std (and --crop, --resize)")
        base.update({k: v for k, v in {"res": r, "mean": mean, "std": std, "crop": crop, "resize": resize}.items()
                     if v is not None})
        prep = Preprocessing.from_dict(base)
    return prep


def print_record(rec: dict, dst) -> None:
    """The human-readable quantization report: fidelity table, worst layers, one 'saved' line."""
    from ..quantize.fidelity import fidelity_table, layers_table

    fid = rec["fidelity"]
    title = (f"{dst}: int8 (recipe {rec['options']['recipe']}, {rec['method']}, "
             f"{'per-channel' if rec['per_channel'] else 'per-tensor'}, "
             f"{rec['activation_type']} activations) vs fp32")
    table = fidelity_table(fid, title)
    gt = (rec.get("evaluation_source") or {}).get("labels")
    if gt:  # which rule mapped evaluation images to classes ("none": no top-1 rows)
        table.caption, table.caption_justify = f"ground truth: {gt}", "left"
    out.print(table)
    if "layers" in rec:
        out.print(layers_table(rec["layers"]))
    size = rec["size"]
    cal = rec["calibration"]
    src = rec.get("calibration_source") or {}
    how = (f"activation ranges from {src.get('file')} (no calibration)" if src.get("kind") == "qat-file"
           else f"calibrated on {cal['images']} images in {cal['seconds']:.1f} s")
    out.print(f"saved {dst} ({size['int8_bytes'] / 1e6:.2f} MB, {100 * size['ratio']:.1f}% of fp32) "
              f"{how}; reduce_range={rec['reduce_range']} ({rec['isa']['reason']})", markup=False, highlight=False)
    if src.get("kind") == "qat-file" and (rec.get("evaluation_source") or {}).get("kind") == "synthetic":
        out.print("note: no evaluation images: agreement and SQNR above are on 16 noise images; "
                  "pass --eval DIR for figures on photos", markup=False)
    elif not rec["accuracy_meaningful"]:
        out.print("note: random weights / synthetic calibration: the int8 accuracy figures are meaningless",
                  markup=False)
    if rec.get("warnings"):
        err.print(f"{len(rec['warnings'])} warning(s), see above", markup=False)


def _fidelity_runtime(runtime: str | None) -> str:
    """``--runtime`` of the fidelity report: "onnxruntime" (default) or "openvino" (UsageError otherwise)."""
    from ..core.errors import UsageError
    from ..runtime.names import RUNTIME_OPENVINO, RUNTIME_ORT, runtime_name

    if runtime is None:
        return RUNTIME_ORT
    try:
        name = runtime_name(runtime)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if name not in (RUNTIME_ORT, RUNTIME_OPENVINO):
        raise UsageError(f"--runtime {runtime}: the fidelity report runs .onnx models on ort or openvino")
    return name
