"""``mobilenet-edge predict`` and ``mobilenet-edge eval``: classify images with a bundle, a lone
``.onnx`` or a foreign ``.tflite`` (no torch; the Raspberry Pi side).

Heavy modules (runtime -> onnxruntime / LiteRT) are imported inside the commands.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..core import jsonio
from ..core.errors import UsageError
from ..core.tables import add_columns, compact_table
from .app import NO_VERIFY_HELP, PROG, app, err, out, warn_no_verify

PREDICT_EPILOG = (
    "Examples:\n\n"
    "  mobilenet-edge predict export/mobilenet_v1_0.50_160 photo.jpg holiday/ --int8\n\n"
    "  mobilenet-edge predict ../shared/data/reference/mobilenet_v1_0.5_160_quant.tflite parrot.jpg --crop 1.0\n\n"
    "  mobilenet-edge predict export/mobilenet_v1_0.50_160 photo.jpg --int8 --on pi5   # on the Pi, over SSH\n\n"
    "  mobilenet-edge predict model.onnx cat.jpg --mean 123.675,116.28,103.53 --std 58.395,57.12,57.375 --json\n\n"
    "  mobilenet-edge predict export/mobilenet_v1_0.50_160 photo.jpg --int8 --runtime openvino\n\n"
    "Preprocessing: a bundle (or an .onnx with our metadata) says how it is fed; a foreign .tflite gets "
    "TF-slim's mean=std=127.5, crop 0.875, bilinear; a foreign .onnx torchvision's mean/std, crop 0.875. "
    "--mean/--std/--crop/--resize override either."
)

EVAL_EPILOG = (
    "Examples:\n\n"
    "  mobilenet-edge eval export/mobilenet_v1_0.50_160 ../shared/data/imagenet-calib --int8\n\n"
    "  mobilenet-edge eval ../shared/data/reference/mobilenet_v1_0.5_160_quant.tflite val/ --json\n\n"
    "  mobilenet-edge eval export/mobilenet_v1_0.50_160 ../shared/data/imagenet-calib --int8 --runtime openvino\n\n"
    "Ground truth (class index), first that applies: --labels CSV (columns file,imagenet_index); "
    "DIR/labels.csv; class folders, torchvision's ImageFolder layout (nXXXXXXXX synset names mapped through the "
    "standard sorted synset order; names that are the model's labels: that label's class; all names integers: "
    "the name is the index; other names: class = position of the folder in sorted order, with a warning); "
    "files named nXXXXXXXX_*. The table's caption and the JSON field ground_truth name the rule used; an image "
    "reached twice through a symlink counts once. "
    "A 1001-class model's index 0 is background: prediction i counts as ImageNet class i-1."
)

# -- shared options ------------------------------------------------------------------------------------

Int8Opt = Annotated[bool, typer.Option("--int8", help="Use the bundle's int8 model (model.int8.onnx / .tflite).")]
FmtOpt = Annotated[
    Optional[str], typer.Option("--format", help="Model format inside a bundle: onnx or tflite (default: onnx if present).")
]
ThreadsOpt = Annotated[int, typer.Option("--threads", min=1, help="Backend threads (ORT intra-op / TFLite num_threads / OpenVINO).")]
RuntimeOpt = Annotated[
    Optional[str],
    typer.Option("--runtime", help="ort (onnxruntime) or openvino for .onnx, litert for .tflite "
                 "(default: ort for .onnx, litert for .tflite; in a bundle litert picks the .tflite)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
MeanOpt = Annotated[
    Optional[str], typer.Option("--mean", help="Pixel mean, one value or R,G,B in 0..255 (overrides the model's).")
]
StdOpt = Annotated[Optional[str], typer.Option("--std", help="Pixel std, one value or R,G,B in 0..255.")]
CropOpt = Annotated[Optional[float], typer.Option("--crop", help="Central crop fraction per side, (0, 1]; 1.0 = plain resize.")]
#: the --resize choices, from core.images.RESIZE_MODES (not imported here: Pillow stays out of `--help`)
RESIZE_HELP = ("Resize filter: tf_bilinear (TF-slim's evaluation resize; the default for Google's weights), "
               "bilinear, bicubic, nearest, lanczos.")
ResizeOpt = Annotated[Optional[str], typer.Option("--resize", help=RESIZE_HELP)]
NoVerifyOpt = Annotated[bool, typer.Option("--no-verify", help=NO_VERIFY_HELP)]


def _floats(text: str | None, name: str):
    if text is None:
        return None
    try:
        vals = tuple(float(v) for v in text.replace(" ", "").split(",") if v != "")
    except ValueError:
        raise UsageError(f"--{name} needs 1 or 3 numbers like 127.5 or 123.7,116.3,103.5, got {text!r}") from None
    if len(vals) not in (1, 3):
        raise UsageError(f"--{name} needs 1 or 3 numbers, got {text!r}")
    # float() accepts "nan" and "inf": every score would be nan (exit 0, invalid JSON)
    if name == "std" and not all(math.isfinite(v) and v != 0 for v in vals):
        raise UsageError(f"--std must be finite and non-zero, got {text!r}")
    if not all(math.isfinite(v) for v in vals):
        raise UsageError(f"--{name} must be finite, got {text!r}")
    return vals if len(vals) == 3 else vals * 3


def _overrides(mean, std, crop, resize) -> dict:
    return {"mean": _floats(mean, "mean"), "std": _floats(std, "std"), "crop": crop, "resize": resize}


def _progress(total: int, desc: str):
    """A bar with the fixed text ``desc`` and the time remaining; hidden for fewer than 8 items or off a terminal."""
    from ..core.progress import progress_bar

    return progress_bar(err, description=desc, enabled=total >= 8 and err.is_terminal, remaining=True)


def _report_bad(path, exc) -> None:
    print(f"{PROG}: error: {exc}", file=sys.stderr)


def _warn(msg: str) -> None:
    """One warning line on stderr, worded as quantize's (``warning: ...``)."""
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def _report_skipped(path, exc) -> None:
    """eval: an undecodable image is skipped and the run still succeeds, so it is a warning."""
    from ..core.images import skipped_message

    _warn(skipped_message(path, exc))


# -- predict -------------------------------------------------------------------------------------------


@app.command(epilog=PREDICT_EPILOG)
def predict(
    model: Annotated[Path, typer.Argument(help="Bundle folder, .onnx or .tflite file.", show_default=False)],
    images: Annotated[list[str], typer.Argument(help="Image files or folders (folders expand in sorted order).", show_default=False)],
    int8: Int8Opt = False,
    top_k: Annotated[int, typer.Option("--top-k", help="How many classes to show per image (1..classes).")] = 5,
    as_json: JsonOpt = False,
    threads: ThreadsOpt = 1,
    mean: MeanOpt = None,
    std: StdOpt = None,
    crop: CropOpt = None,
    resize: ResizeOpt = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="Labels file, one per output index.")] = None,
    fmt: FmtOpt = None,
    on: Annotated[Optional[str], typer.Option("--on", help="Predict on these devices over SSH: HOST[:DIR],... "
                                              "(the bundle is pushed, the images copied; see `push --help`).")] = None,
    remote_cmd: Annotated[Optional[str], typer.Option("--remote-cmd", help="--on: the devices' mobilenet-edge.")] = None,
    runtime: RuntimeOpt = None,
    no_verify: NoVerifyOpt = False,
) -> None:
    """Top-k classes with probabilities for each image.

    Probabilities are the model's softmax (Google's .tflite files output probabilities already; our
    bundles output logits and get a softmax here). Undecodable files are reported on stderr (one line
    each) and skipped; the exit code is then 1.
    """
    import numpy as np

    from ..core import images as imglib
    from ..runtime.evaluate import random_weights_warning, run_info, weights_source
    from ..runtime.load import open_model
    from ..runtime.scores import top_k as topk_fn

    if top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {top_k}")
    warn_no_verify(no_verify)
    if on is not None:  # issue #19: the device's own predict
        if any(v is not None for v in (mean, std, crop, resize, labels)):
            raise UsageError("predict --on uses the bundle's own preprocessing and labels (no --mean/--std/--crop/--resize/--labels)")
        args = ["--top-k", str(top_k), "--threads", str(threads)] + (["--int8"] if int8 else [])
        return _predict_on(model, images, on, remote_cmd=remote_cmd, as_json=as_json, predict_args=args + (
            ["--format", fmt] if fmt else []) + (["--no-verify"] if no_verify else []))
    paths = imglib.expand_paths(images)
    overrides = _overrides(mean, std, crop, resize)
    runner, prep, names, manifest = open_model(model, int8=int8, fmt=fmt, threads=threads, prep_overrides=overrides,
                                               labels_file=labels, runtime=runtime, verify=not no_verify)
    if top_k > runner.num_classes:
        raise UsageError(f"--top-k must be between 1 and the class count {runner.num_classes}, got {top_k}")
    info = run_info(model, runner, manifest, int8=int8, threads=threads, prep=prep)
    if random_weights := weights_source(runner, manifest) == "random":
        _warn(random_weights_warning(manifest))
    results, bad = [], 0
    batch = 1 if runner.fixed_batch is None else runner.fixed_batch

    def on_error(p, e):
        nonlocal bad
        bad += 1
        _report_bad(p, e)

    with _progress(len(paths), "predict") as bar:
        task = bar.add_task("predict", total=len(paths))
        for ps, x in imglib.iter_batches(paths, prep, batch=batch, on_error=on_error):
            probs = runner.probabilities(x)
            idx, val = topk_fn(probs, top_k)
            finite = np.all(np.isfinite(probs), axis=1)
            for p, ii, vv, ok in zip(ps, idx, val, finite):
                if not ok:  # a broken model: no score to rank, and nan is not JSON
                    on_error(p, f"the model gave non-finite scores for {p}")
                    continue
                results.append(
                    {"image": str(p), "random_weights": random_weights,
                     "top_k": [{"index": int(i), "label": names[i], "score": float(v)} for i, v in zip(ii, vv)],
                     **info}  # what ran, in eval's keys (per image: the JSON stays a list, as before)
                )
            bar.advance(task, len(ps))
    if as_json:
        out.print_json(jsonio.dumps(results))
    else:
        _print_predictions(results)
    if bad:
        raise typer.Exit(1)


def ran_lines(info: dict) -> list[str]:
    """What ran, in the words predict and eval share: the model, its file, precision, runtime and
    threads, then the preprocessing (``info``: :func:`~mobilenet_edge.runtime.evaluate.run_info`'s keys)."""
    hint = f", {info['execution']['inference_precision']} hint" if info.get("execution") else ""
    n = info.get("threads")
    threads = f", {n} thread{'s' if n != 1 else ''}" if n else ""
    prep = info["preprocessing"]
    what = info["file"] if Path(info["file"]).name == info["model"] else f"{info['model']}: {info['file']}"
    return [f"{what} ({info['precision']}, {info['backend']} {info['backend_version']}"
            f"{hint}{threads})",
            f"preprocessing: crop {prep['crop']}, {prep['resize']}, mean {prep['mean']}, std {prep['std']}, "
            f"res {prep['res']}, {prep['layout']}"]


def _predict_on(model, images, on, **kwargs) -> None:
    """``predict --on``: the devices' own predict (runtime/remote, issue #19)."""
    from .push import predict_on_hosts

    predict_on_hosts(model, images, on, show=_print_predictions, **kwargs)


def _print_predictions(results: list[dict]) -> None:
    """What ran (:func:`ran_lines`, once), then one table per image: rank, label, index, probability."""
    if results and "file" in results[0]:  # a device's older mobilenet-edge (predict --on) may not say
        for line in ran_lines(results[0]):
            out.print(line, markup=False, soft_wrap=True)
    for r in results:
        t = compact_table(r["image"])
        add_columns(t, ("Rank", "Label", "Index", "Probability"), left=("Label",), fold=("Label",))
        for rank, e in enumerate(r["top_k"], 1):
            t.add_row(str(rank), e["label"], str(e["index"]), f"{e['score']:.4f}")
        out.print(t)


# -- eval ----------------------------------------------------------------------------------------------


@app.command(name="eval", epilog=EVAL_EPILOG)
def eval_cmd(
    model: Annotated[Path, typer.Argument(help="Bundle folder, .onnx or .tflite file.", show_default=False)],
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="Folder of labelled images.", show_default=False)],
    int8: Int8Opt = False,
    labels: Annotated[
        Optional[Path], typer.Option("--labels", help="CSV with columns file,imagenet_index (default: DIR/labels.csv).")
    ] = None,
    as_json: JsonOpt = False,
    threads: ThreadsOpt = 1,
    mean: MeanOpt = None,
    std: StdOpt = None,
    crop: CropOpt = None,
    resize: ResizeOpt = None,
    fmt: FmtOpt = None,
    runtime: RuntimeOpt = None,
    no_verify: NoVerifyOpt = False,
) -> None:
    """Top-1 / top-5 accuracy on a folder of labelled images.

    top1/top5 in the JSON are fractions (0-1) of the n decoded images; images_per_s counts decoding,
    preprocessing and inference. Undecodable files are listed under "errors" and skipped.
    """
    from ..runtime.evaluate import evaluate

    warn_no_verify(no_verify)
    with _progress(8, "eval") as bar:  # total unknown until the ground truth is read
        task = bar.add_task("eval", total=None)
        res = evaluate(
            model, folder, int8=int8, labels_csv=labels, threads=threads, fmt=fmt,
            prep_overrides=_overrides(mean, std, crop, resize), on_error=_report_skipped,
            progress=lambda done, total: bar.update(task, completed=done, total=total), warn=_warn, runtime=runtime,
            verify=not no_verify,
        )
    n, c1, c5, errors = res["n"], res["top1_correct"], res["top5_correct"], res["errors"]
    source = res["ground_truth"]
    if as_json:
        out.print_json(jsonio.dumps(res))
        return
    ran, prep_line = ran_lines(res)
    out.print(f"{ran} on {folder}", markup=False, soft_wrap=True)
    t = compact_table()
    add_columns(t, ("n", "top-1", "top-5", "images/s", "errors"))
    t.add_row(str(n), f"{100 * c1 / n:.1f}% ({c1})", f"{100 * c5 / n:.1f}% ({c5})", f"{res['images_per_s']:.1f}", str(len(errors)))
    out.print(t)
    out.print(f"{prep_line}; ground truth: {source}", markup=False, soft_wrap=True)
