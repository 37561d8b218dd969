"""``mobilenet-edge export``: a parity-checked ONNX bundle folder, ready to copy to a Pi."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..core import jsonio
from .app import app, err, out

EPILOG = (
    "Examples:\n\n"
    "  mobilenet-edge export --alpha 0.5 --res 160                      # Google's weights (shipped, no network)\n\n"
    "  mobilenet-edge export --alpha 1.0 --res 224 --weights google-float  # downloaded once, then cached\n\n"
    "  mobilenet-edge export --alpha 0.5 --res 160 --weights random     # random weights on purpose (latency work)\n\n"
    "  mobilenet-edge export --alpha 0.5 --res 160 --weights mobilenet_v1_0.5_160_quant.tflite\n\n"
    "  mobilenet-edge export --alpha 0.5 --res 160 --int8                # int8 from the ranges Google's file learned\n\n"
    "  mobilenet-edge export --alpha 0.5 --res 160 --weights W.tflite --int8 --calib imagenet-calib/\n\n"
    "  mobilenet-edge export --alpha 0.5 --res 160 --weights W.tflite --format tflite --int8 --calib imagenet-calib/\n\n"
    "  mobilenet-edge export ... --format tflite --int8 --calib imagenet-calib/ --float-first 0   # full-integer .tflite\n\n"
    "  mobilenet-edge export --res 160 --weights my_finetuned.pt --labels classes.txt --int8 --calib my_images/\n\n"
    "Writes export/mobilenet_v1_0.50_160/{model.onnx, labels.txt, manifest.json} (+ model.int8.onnx with --int8; "
    "+ model.tflite, model.int8.tflite with --format tflite)."
)


@app.command(epilog=EPILOG)
def export(
    alpha: Annotated[Optional[float], typer.Option(help="Width multiplier (default: from --weights, else 1.0).")] = None,
    res: Annotated[int, typer.Option(help="Input resolution in pixels (>= 32).")] = 224,
    weights: Annotated[Optional[str], typer.Option(help="A name (google-quant, google-float, keras; see `weights list`), random, or a file (.tflite, .h5, .safetensors, .pt/.pth: ours or a state dict of other MobileNet V1 code, see docs/weights.md). Default: Google's pretrained weights for --alpha/--res, offline first.")] = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="Class labels, one per line (UTF-8); their count must match the weights' classes. Default: the weights' own, else ImageNet's.")] = None,
    classes: Annotated[Optional[int], typer.Option("--classes", help="Classes for random weights (default 1000).")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Parent folder of the bundle.")] = Path("export"),
    opset: Annotated[int, typer.Option(help="ONNX opset (>= 13: per-channel QDQ).")] = 13,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing bundle (only once the new one is complete).")] = False,
    parity_images: Annotated[Optional[Path], typer.Option(help="Folder of real images for the parity check.")] = None,
    int8: Annotated[bool, typer.Option("--int8", help="Also write model.int8.onnx (static PTQ, ONNX Runtime); with --format tflite also model.int8.tflite (PT2E, litert-torch).")] = False,
    calib: Annotated[Optional[Path], typer.Option(help="Calibration images for --int8 (required with real weights).")] = None,
    eval_dir: Annotated[Optional[Path], typer.Option("--eval", help="Evaluation images for the --int8 fidelity reports (ONNX and .tflite).")] = None,
    recipe: Annotated[Optional[str], typer.Option(help="int8 recipe: fidelity | grid | plain | qat-ranges (ONNX only). "
                      "Default: qat-ranges for Google's QAT weights without --calib (no images), else fidelity. "
                      "See docs/quantize.md.")] = None,
    float_first: Annotated[Optional[int], typer.Option(min=0, help="int8: keep the first N convs in float (fidelity: 2; 0 = all int8, a full-integer .tflite).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="onnx, or tflite (adds model.tflite via litert-torch).")] = "onnx",
    padding: Annotated[Optional[str], typer.Option(help="symmetric | tf_same, for random weights (default symmetric) and state dicts of other MobileNet V1 code (default: the known layout's, else symmetric).")] = None,
    activation: Annotated[Optional[str], typer.Option(help="relu | relu6, for random weights (default relu6) and state dicts of other code (default: the known layout's, else relu).")] = None,
    bn_eps: Annotated[Optional[float], typer.Option("--bn-eps", min=0.0, help="Batch-norm eps, for random weights (default 1e-3) and state dicts of other code (default: the known layout's, else 1e-5).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random weights and parity inputs.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Export MobileNet V1 to a simplified ONNX bundle (and .tflite with --format tflite), checked for parity against PyTorch.

    Without --weights the model gets Google's quantization-aware trained weights for --alpha (default 1.0) and
    --res: the copy shipped with the package (0.25/128, 0.5/160, 0.75/192), else the cache, else a download
    (see `mobilenet-edge weights list`); weights trained at another res are used with a warning and the
    manifest records it. --weights random gives seeded random weights (latency work only; "weights": "random").
    """
    from ..build.export import ExportOptions, export_bundle
    from ..core.errors import UsageError

    if fmt not in ("onnx", "tflite"):
        raise UsageError(f"--format must be onnx or tflite, got {fmt!r}")
    if not int8 and (recipe is not None or float_first is not None):
        err.print("warning: --recipe/--float-first shape the int8 models; without --int8 they are ignored", markup=False)
    label_names = None
    if labels is not None:
        from ..core.labels import read_labels_file

        label_names = read_labels_file(labels)
    opts = ExportOptions(
        alpha=alpha, res=res, num_classes=classes, weights=weights, pretrained=True, out=out_dir, opset=opset, force=force,
        parity_images=parity_images, seed=seed, padding=padding, activation=activation, bn_eps=bn_eps, labels=label_names,
        formats=("onnx", "tflite") if fmt == "tflite" else ("onnx",), tflite_int8=int8 and fmt == "tflite",
        int8=int8, calib=calib, eval_dir=eval_dir, recipe=recipe, float_first=float_first,
    )
    with err.status("exporting...") as status:
        res_ = export_bundle(opts, log=lambda m: err.print(m, style="dim"), progress=_status_progress(status),
                             warn=lambda m: err.print(m, style="yellow", markup=False, soft_wrap=True))
    manifest = res_["manifest"]
    p = manifest["export"]["parity"]
    err.print(
        f"ONNX parity vs PyTorch: max abs logit diff {p['max_abs_diff']:.2e} (tolerance {p['tolerance']:g}) on "
        f"{p['n_random']} random + {p['n_images']} real images, top-1 identical"
    )
    if as_json:
        out.print_json(jsonio.dumps(manifest, default=str))
    else:
        _print_summary(res_, int8=int8, fmt=fmt, eval_given=eval_dir is not None)


def _print_summary(res_: dict, *, int8: bool, fmt: str, eval_given: bool) -> None:
    """The human summary of an export: saved files, .tflite lines, the int8 report, the next commands."""
    from ..core.bundle import FILE_FP32

    bundle, manifest = res_["bundle"], res_["manifest"]
    record = manifest.get("quantization")
    others = ", ".join(f"{n} ({r['size'] / 1e6:.2f} MB)" for n, r in manifest["files"].items()
                       if "format" in r and n != FILE_FP32)
    out.print(f"saved {bundle / FILE_FP32} ({manifest['files'][FILE_FP32]['size'] / 1e6:.2f} MB)"
              + (f" and {others}" if others else "") + f"; the whole export took {res_['seconds']:.1f} s",
              markup=False, soft_wrap=True)
    for line in _tflite_lines(manifest, eval_given=eval_given):
        out.print(line, markup=False, soft_wrap=True)
    if record is not None:
        from ..core.bundle import FILE_INT8
        from .quantize import print_record

        print_record(record, bundle / FILE_INT8)
    q = shlex.quote(str(bundle))  # commands to paste: quoted, and no rich markup ("[...]" in a path)
    err.print("next:")
    if not int8:
        qat = str((manifest.get("weights", {}).get("registry") or {}).get("name", "")).startswith("google-quant")
        err.print(f"  mobilenet-edge quantize {q}" + ("   # no images needed: activation ranges from the QAT .tflite; --calib DIR calibrates"
                  if qat and fmt != "tflite" else " --calib DIR") + ("   # model.int8.onnx; for model.int8.tflite "
                  "export again with --int8 --calib DIR" if fmt == "tflite" else ""), markup=False, soft_wrap=True)
    err.print(f"  mobilenet-edge predict {q} photo.jpg{' --int8' if int8 else ''}", markup=False, soft_wrap=True)
    if fmt == "tflite":
        err.print(f"  mobilenet-edge predict {q} photo.jpg --format tflite{' --int8' if int8 else ''}",
                  markup=False, soft_wrap=True)
    err.print(f"  mobilenet-edge bench {q}", markup=False, soft_wrap=True)


def _status_progress(status):
    """Download progress as the spinner's text (a second live display on stderr would clash with it)."""
    def progress(done: int, total: int) -> None:
        status.update(f"downloading weights: {done / 1e6:.1f}" + (f" / {total / 1e6:.1f} MB" if total else " MB"))

    return progress


def _tflite_lines(manifest: dict, *, eval_given: bool) -> list[str]:
    """One summary line per .tflite file of the bundle: size, input, parity (fp32) or recipe and fidelity."""
    lines = []
    for name in ("model.tflite", "model.int8.tflite"):
        rec = manifest["files"].get(name)
        if rec is None:
            continue
        line = f"{name}: input {rec['input']['layout']} {rec['input']['dtype']}"
        par = rec.get("parity")
        if par:
            line += (f"; parity vs PyTorch: max abs logit diff {par['max_abs_diff']:.2e} on {par['n_random']} random + "
                     f"{par['n_images']} real images")
        q = rec.get("quantization") or {}
        if q.get("recipe"):
            n = q["recipe"].get("float_first", 0)
            line += f"; recipe {q['recipe']['name']}" + (f" ({n} float conv{'s' if n != 1 else ''})" if n else " (full integer)")
        fid = q.get("fidelity")
        if fid:
            what = ("calibration images (the ones it was calibrated on)" if fid.get("data") == "calibration"
                    else "evaluation images" if eval_given else "parity images")
            line += (f"; vs PyTorch fp32 on {fid['n_images']} {what}: top-1 agreement "
                     f"{100 * fid['top1_agreement']:.0f}%, SQNR {fid['sqnr_db']:.1f} dB")
        lines.append(line)
    return lines
