"""``mobilenet-edge predict`` and ``mobilenet-edge eval``: classify images with a bundle, a lone
``.onnx`` or a foreign ``.tflite`` (no torch; the Raspberry Pi side).

Heavy modules (runtime -> onnxruntime / LiteRT) are imported inside the commands.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..errors import UsageError
from .app import PROG, app, err, out

PREDICT_EPILOG = (
    "Examples:\n\n"
    "  mobilenet-edge predict export/mobilenet_v1_0.50_160 photo.jpg holiday/ --int8\n\n"
    "  mobilenet-edge predict ../shared/data/reference/mobilenet_v1_0.5_160_quant.tflite parrot.jpg --crop 1.0\n\n"
    "  mobilenet-edge predict model.onnx cat.jpg --mean 123.675,116.28,103.53 --std 58.395,57.12,57.375 --json\n\n"
    "Preprocessing: a bundle (or an .onnx with our metadata) says how it is fed; a foreign .tflite gets "
    "TF-slim's mean=std=127.5, crop 0.875, bilinear; a foreign .onnx torchvision's mean/std, crop 0.875. "
    "--mean/--std/--crop/--resize override either."
)

EVAL_EPILOG = (
    "Examples:\n\n"
    "  mobilenet-edge eval export/mobilenet_v1_0.50_160 ../shared/data/imagenet-calib --int8\n\n"
    "  mobilenet-edge eval ../shared/data/reference/mobilenet_v1_0.5_160_quant.tflite val/ --json\n\n"
    "Ground truth (ImageNet index 0-999), first that applies: --labels CSV (columns file,imagenet_index); "
    "DIR/labels.csv; class folders (nXXXXXXXX synset names mapped through the standard sorted synset "
    "order, other names: class = position of the folder in sorted order); files named nXXXXXXXX_*. "
    "A 1001-class model's index 0 is background: prediction i counts as ImageNet class i-1."
)

# -- shared options ------------------------------------------------------------------------------------

Int8Opt = Annotated[bool, typer.Option("--int8", help="Use the bundle's int8 model (model.int8.onnx / .tflite).")]
FmtOpt = Annotated[
    Optional[str], typer.Option("--format", help="Model format inside a bundle: onnx or tflite (default: onnx if present).")
]
ThreadsOpt = Annotated[int, typer.Option("--threads", min=1, help="Backend threads (ORT intra-op / TFLite num_threads).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
MeanOpt = Annotated[
    Optional[str], typer.Option("--mean", help="Pixel mean, one value or R,G,B in 0..255 (overrides the model's).")
]
StdOpt = Annotated[Optional[str], typer.Option("--std", help="Pixel std, one value or R,G,B in 0..255.")]
CropOpt = Annotated[Optional[float], typer.Option("--crop", help="Central crop fraction per side, (0, 1]; 1.0 = plain resize.")]
ResizeOpt = Annotated[Optional[str], typer.Option("--resize", help="Resize filter: bilinear, bicubic, nearest, lanczos.")]


def _floats(text: str | None, name: str):
    if text is None:
        return None
    try:
        vals = tuple(float(v) for v in text.replace(" ", "").split(",") if v != "")
    except ValueError:
        raise UsageError(f"--{name} needs 1 or 3 numbers like 127.5 or 123.7,116.3,103.5, got {text!r}") from None
    if len(vals) not in (1, 3):
        raise UsageError(f"--{name} needs 1 or 3 numbers, got {text!r}")
    return vals if len(vals) == 3 else vals * 3


def _overrides(mean, std, crop, resize) -> dict:
    return {"mean": _floats(mean, "mean"), "std": _floats(std, "std"), "crop": crop, "resize": resize}


def _precision(runner, manifest, int8: bool) -> str:
    """"int8" for quantized models (integer I/O, a bundle's int8 file, or ``int8``/``quant`` in the name)."""
    if manifest is not None:
        rec = (manifest.get("files") or {}).get(runner.path.name) or {}
        if rec.get("precision"):
            return str(rec["precision"])
        return "int8" if int8 else "fp32"
    name = runner.path.name.lower()
    if runner.input_quant or runner.output_quant or "int8" in name or "quant" in name:
        return "int8"
    return "fp32"


def _model_name(path: Path, manifest) -> str:
    if manifest is not None and manifest.get("name"):
        return str(manifest["name"])
    return path.name


def _progress(total: int, desc: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn(desc), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err, transient=True, disable=total < 8 or not err.is_terminal,
    )


def _report_bad(path, exc) -> None:
    print(f"{PROG}: error: {exc}", file=sys.stderr)


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
) -> None:
    """Top-k classes with probabilities for each image.

    Probabilities are the model's softmax (Google's .tflite files output probabilities already; our
    bundles output logits and get a softmax here). Undecodable files are reported on stderr (one line
    each) and skipped; the exit code is then 1.
    """
    from .. import images as imglib
    from ..runtime import open_model
    from ..runtime import top_k as topk_fn

    if top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {top_k}")
    paths = imglib.expand_paths(images)
    runner, prep, names, _ = open_model(
        model, int8=int8, fmt=fmt, threads=threads, prep_overrides=_overrides(mean, std, crop, resize), labels_file=labels
    )
    if top_k > runner.num_classes:
        raise UsageError(f"--top-k must be between 1 and the class count {runner.num_classes}, got {top_k}")
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
            for p, ii, vv in zip(ps, idx, val):
                results.append(
                    {"image": str(p), "top_k": [{"index": int(i), "label": names[i], "score": float(v)} for i, v in zip(ii, vv)]}
                )
            bar.advance(task, len(ps))
    if as_json:
        out.print_json(json.dumps(results))
    else:
        for r in results:
            t = Table(title=r["image"], title_justify="left")
            t.add_column("Rank", justify="right")
            t.add_column("Label")
            t.add_column("Index", justify="right")
            t.add_column("Probability", justify="right")
            for rank, e in enumerate(r["top_k"], 1):
                t.add_row(str(rank), e["label"], str(e["index"]), f"{e['score']:.4f}")
            out.print(t)
    if bad:
        raise typer.Exit(1)


# -- eval ----------------------------------------------------------------------------------------------


def imagenet_synsets() -> list[str]:
    """The 1000 ImageNet-1k synset ids in the standard sorted order (index = position).

    Source: tensorflow/models research/slim/datasets/imagenet_lsvrc_2015_synsets.txt (Apache-2.0),
    shipped as ``mobilenet_edge/data/imagenet_synsets.txt``.
    """
    path = Path(__file__).resolve().parents[1] / "data" / "imagenet_synsets.txt"
    return path.read_text(encoding="utf-8").split()


def _is_synset(name: str) -> bool:
    return len(name) == 9 and name[0] == "n" and name[1:].isdigit()


def ground_truth(folder: Path, labels_csv: Path | None) -> tuple[dict[Path, int], str]:
    """Map each labelled image under ``folder`` to its ImageNet index (0-999).

    Returns:
        (mapping, source description).
    Raises:
        UsageError: unreadable CSV, missing columns, no labelled image.
    """
    import csv

    from .. import images as imglib

    csv_path = labels_csv if labels_csv is not None else (folder / "labels.csv")
    if labels_csv is not None and not labels_csv.is_file():
        raise UsageError(f"no such labels file: {labels_csv}")
    if csv_path.is_file():
        try:
            with open(csv_path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise UsageError(f"cannot read {csv_path}: {e}") from None
        if not rows or not {"file", "imagenet_index"} <= set(rows[0]):
            raise UsageError(f"{csv_path} needs a header with columns file,imagenet_index")
        gt = {}
        for n, row in enumerate(rows, 2):
            try:
                gt[folder / row["file"]] = int(row["imagenet_index"])
            except (TypeError, ValueError):
                raise UsageError(f"{csv_path} line {n}: imagenet_index {row.get('imagenet_index')!r} is not an integer") from None
        return gt, f"{csv_path}"
    subdirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    synsets = {s: i for i, s in enumerate(imagenet_synsets())}
    if subdirs:
        gt = {}
        by_synset = all(d.name in synsets for d in subdirs)
        for pos, d in enumerate(subdirs):
            cls = synsets[d.name] if by_synset else pos
            for f in sorted(d.rglob("*")):
                if f.is_file() and imglib.is_image_path(f):
                    gt[f] = cls
        if not gt:
            raise UsageError(f"no images in the class folders of {folder}")
        how = "synset folders (standard sorted synset order)" if by_synset else "class folders (sorted position)"
        return gt, how
    gt = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and imglib.is_image_path(f):
            head = f.name.split("_", 1)[0]
            if _is_synset(head) and head in synsets:
                gt[f] = synsets[head]
    if not gt:
        raise UsageError(
            f"no ground truth for {folder}: give --labels labels.csv (file,imagenet_index), class folders, "
            "or files named nXXXXXXXX_*"
        )
    return gt, "nXXXXXXXX_ file names (standard sorted synset order)"


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
) -> None:
    """Top-1 / top-5 accuracy on a folder of labelled images.

    top1/top5 in the JSON are fractions (0-1) of the n decoded images; images_per_s counts decoding,
    preprocessing and inference. Undecodable files are listed under "errors" and skipped.
    """
    import numpy as np

    from .. import images as imglib
    from ..runtime import background_offset, open_model
    from ..runtime import top_k as topk_fn

    if not folder.is_dir():
        raise UsageError(f"no such folder: {folder}")
    gt, source = ground_truth(folder, labels)
    missing = [p for p in gt if not p.is_file()]
    if missing:
        raise UsageError(f"{len(missing)} labelled file(s) missing, first: {missing[0]}")
    runner, prep, _, manifest = open_model(
        model, int8=int8, fmt=fmt, threads=threads, prep_overrides=_overrides(mean, std, crop, resize)
    )
    off = background_offset(runner.num_classes)
    k = min(5, runner.num_classes)
    paths = sorted(gt)
    errors: list[dict] = []
    n = c1 = c5 = 0
    batch = 8 if runner.fixed_batch is None else runner.fixed_batch

    def on_error(p, e):
        errors.append({"image": str(p), "error": str(e)})
        _report_bad(p, e)

    t0 = time.perf_counter()
    with _progress(len(paths), "eval") as bar:
        task = bar.add_task("eval", total=len(paths))
        for ps, x in imglib.iter_batches(paths, prep, batch=batch, on_error=on_error):
            idx, _ = topk_fn(runner.run(x), k)  # softmax does not change the order
            for p, row in zip(ps, idx):
                truth = gt[p] + off
                n += 1
                c1 += int(row[0] == truth)
                c5 += int(np.any(row == truth))
            bar.advance(task, len(ps))
    seconds = time.perf_counter() - t0
    if n == 0:
        from ..errors import MobilenetEdgeError

        raise MobilenetEdgeError(f"no image of {folder} could be decoded ({len(errors)} errors)")
    res = {
        "n": n,
        "top1": c1 / n,
        "top5": c5 / n,
        "model": _model_name(Path(model), manifest),
        "precision": _precision(runner, manifest, int8),
        "file": str(runner.path),
        "backend": runner.backend,
        "backend_version": runner.backend_version,
        "threads": threads,
        "top1_correct": c1,
        "top5_correct": c5,
        "images_per_s": n / seconds if seconds > 0 else None,
        "seconds": seconds,
        "ground_truth": source,
        "preprocessing": prep.to_dict(),
        "errors": errors,
    }
    if as_json:
        out.print_json(json.dumps(res))
        return
    out.print(f"{res['model']} ({res['precision']}, {runner.backend} {runner.backend_version}) on {folder}")
    t = Table()
    for col in ("n", "top-1", "top-5", "images/s", "errors"):
        t.add_column(col, justify="right")
    t.add_row(str(n), f"{100 * c1 / n:.1f}% ({c1})", f"{100 * c5 / n:.1f}% ({c5})", f"{res['images_per_s']:.1f}", str(len(errors)))
    out.print(t)
    out.print(
        f"preprocessing: crop {prep.crop}, {prep.resize}, mean {list(prep.mean)}, std {list(prep.std)}, "
        f"res {prep.res}, {prep.layout}; ground truth: {source}"
    )
