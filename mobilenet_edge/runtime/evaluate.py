"""Top-1/top-5 evaluation on labelled image folders, and where ground truth comes from (no torch).

Shared by ``eval``, ``quantize``'s fidelity report and ``bench --eval``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..core import images as imglib
from ..core.errors import MobilenetEdgeError, UsageError


def imagenet_synsets() -> list[str]:
    """The 1000 ImageNet-1k synset ids in the standard sorted order (index = position).

    Source: tensorflow/models research/slim/datasets/imagenet_lsvrc_2015_synsets.txt (Apache-2.0),
    shipped as ``mobilenet_edge/data/imagenet_synsets.txt``.
    """
    path = Path(__file__).parent.parent / "core" / "data" / "imagenet_synsets.txt"
    return path.read_text(encoding="utf-8").split()


def _is_synset(name: str) -> bool:
    return len(name) == 9 and name[0] == "n" and name[1:].isdigit()


def _is_index(name: str) -> bool:
    return name.isascii() and name.isdigit()


#: ``ground_truth`` descriptions (the ``ground_truth`` field of eval's output) for the folder rules
GT_SYNSET_FOLDERS = "synset folders (standard sorted synset order)"
GT_INDEX_FOLDERS = "index folders (folder name = ImageNet index)"
GT_POSITION_FOLDERS = "class folders (sorted position)"
GT_SYNSET_FILES = "nXXXXXXXX_ file names (standard sorted synset order)"


def _csv_file(csv_path: Path, row: dict, n: int, folder: Path) -> Path:
    name = (row.get("file") or "").strip()
    if not name:
        raise UsageError(f"{csv_path} line {n}: empty file name")
    rel = Path(name)
    if rel.is_absolute() or rel.drive or ".." in rel.parts:
        raise UsageError(f"{csv_path} line {n}: {name!r} is outside {folder} (paths must stay inside the folder)")
    return folder / rel


def ground_truth(folder: Path, labels_csv: Path | None, *, classes: int = 1000) -> tuple[dict[Path, int], str]:
    """Map each labelled image under ``folder`` to its ImageNet index (0 .. ``classes`` - 1).

    Rules, first that applies: ``labels_csv`` or ``folder/labels.csv`` (columns ``file,imagenet_index``,
    UTF-8 with or without a BOM, paths relative to ``folder`` and inside it); class folders: all named
    ``nXXXXXXXX`` synsets -> the standard sorted synset order, all named by integers -> the integer is
    the ImageNet index, otherwise the folder's position in sorted order; files named ``nXXXXXXXX_*``.

    Args:
        folder: image folder.
        labels_csv: explicit CSV, or None for ``folder/labels.csv`` if present.
        classes: number of ImageNet classes the model scores (1000; a 1001-class model's background
            is not a class here). Every index must lie in ``0 .. classes - 1``.
    Returns:
        (mapping, source description: one of the ``GT_*`` strings or the CSV path).
    Raises:
        UsageError: unreadable CSV, missing columns, an index out of range, a path leaving ``folder``,
            no image in ``folder``, no labelled image.
    """
    import csv

    csv_path = labels_csv if labels_csv is not None else (folder / "labels.csv")
    if labels_csv is not None and labels_csv.is_dir():
        raise UsageError(f"{labels_csv} is a folder, expected a labels file (CSV with columns file,imagenet_index)")
    if labels_csv is not None and not labels_csv.is_file():
        raise UsageError(f"no such labels file: {labels_csv}")
    top = classes - 1
    if csv_path.is_file():
        try:
            # utf-8-sig: Excel saves CSV with a byte-order mark, which would glue itself to "file"
            with open(csv_path, newline="", encoding="utf-8-sig") as f:
                rows = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise UsageError(f"cannot read {csv_path}: {e}") from None
        if not rows or not {"file", "imagenet_index"} <= set(rows[0]):
            raise UsageError(f"{csv_path} needs a header with columns file,imagenet_index")
        gt = {}
        for n, row in enumerate(rows, 2):
            path = _csv_file(csv_path, row, n, folder)
            try:
                idx = int(row["imagenet_index"])
            except (TypeError, ValueError):
                raise UsageError(f"{csv_path} line {n}: imagenet_index {row.get('imagenet_index')!r} is not an integer") from None
            if not 0 <= idx <= top:
                raise UsageError(f"{csv_path} line {n}: imagenet_index must be 0..{top}, got {idx}")
            gt[path] = idx
        return gt, f"{csv_path}"
    subdirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    synsets = {s: i for i, s in enumerate(imagenet_synsets())}
    if subdirs:
        if all(d.name in synsets for d in subdirs):
            how, classes_of = GT_SYNSET_FOLDERS, {d: synsets[d.name] for d in subdirs}
        elif all(_is_index(d.name) for d in subdirs):
            how, classes_of = GT_INDEX_FOLDERS, {d: int(d.name) for d in subdirs}
        else:
            how, classes_of = GT_POSITION_FOLDERS, {d: pos for pos, d in enumerate(subdirs)}
        gt = {}
        for d in subdirs:
            files = [f for f in sorted(d.rglob("*")) if f.is_file() and imglib.is_image_path(f)]
            if files and not 0 <= classes_of[d] <= top:
                if how == GT_POSITION_FOLDERS:
                    raise UsageError(f"{folder}: {len(subdirs)} class folders (sorted position = class) but "
                                     f"the model scores {classes} classes")
                raise UsageError(f"{d}: class folder names must be ImageNet indices 0..{top}")
            for f in files:
                gt[f] = classes_of[d]
        if not gt:
            raise UsageError(f"no images in the class folders of {folder}")
        return gt, how
    gt = {}
    any_image = False
    for f in sorted(folder.iterdir()):
        if f.is_file() and imglib.is_image_path(f):
            any_image = True
            head = f.name.split("_", 1)[0]
            if _is_synset(head) and head in synsets:
                if synsets[head] > top:
                    raise UsageError(f"{f}: synset {head} is ImageNet index {synsets[head]}, "
                                     f"beyond the model's 0..{top}")
                gt[f] = synsets[head]
    if not any_image:
        raise UsageError(f"no images in {folder}")
    if not gt:
        raise UsageError(
            f"no ground truth for {folder}: give --labels labels.csv (file,imagenet_index), class folders, "
            "or files named nXXXXXXXX_*"
        )
    return gt, GT_SYNSET_FILES


#: the stderr warning (after "warning: ") of predict/eval on a bundle whose manifest says the weights
#: are random; ``(model metadata)`` replaces ``(manifest)`` for a lone .onnx (see :func:`random_weights_warning`)
RANDOM_WEIGHTS_WARNING = "random weights (manifest): predictions and accuracy are meaningless"


def random_weights_warning(manifest) -> str:
    """:data:`RANDOM_WEIGHTS_WARNING`, naming where the fact comes from (manifest or model metadata)."""
    if manifest is not None:
        return RANDOM_WEIGHTS_WARNING
    return RANDOM_WEIGHTS_WARNING.replace("(manifest)", "(model metadata)")


def weights_source(runner, manifest) -> str | None:
    """Where the model's weights came from: the manifest's ``weights.source`` ("random", "tflite",
    "safetensors"), else an ONNX file's ``weights`` metadata (our exports write it), else None."""
    if manifest is not None:
        w = manifest.get("weights")
        src = w.get("source") if isinstance(w, dict) else w
        return str(src) if src else None
    src = (getattr(runner, "metadata", None) or {}).get("weights")
    return str(src) if src else None


def precision_of(runner, manifest, int8: bool) -> str:
    """"int8" for quantized models (integer I/O, a bundle's int8 file, ``precision`` metadata, or
    ``int8``/``quant`` in the name)."""
    if manifest is not None:
        rec = (manifest.get("files") or {}).get(runner.path.name) or {}
        if rec.get("precision"):
            return str(rec["precision"])
        return "int8" if int8 else "fp32"
    from .runner import is_int8_file

    return "int8" if is_int8_file(runner) else "fp32"


def model_name(path: Path, manifest) -> str:
    if manifest is not None and manifest.get("name"):
        return str(manifest["name"])
    return path.name


def evaluate(
    model: str | Path,
    folder: str | Path,
    *,
    int8: bool = False,
    labels_csv: str | Path | None = None,
    threads: int = 1,
    fmt: str | None = None,
    prep_overrides: dict | None = None,
    on_error: Callable[[Path, Exception], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict:
    """Top-1 and top-5 of a bundle / .onnx / .tflite on a folder of labelled images.

    Ground truth from :func:`ground_truth`. A 1001-class model's index 0 is background: prediction i
    counts as ImageNet class i-1. Undecodable images are skipped (listed under ``errors``).
    ``warn(msg)`` gets :func:`random_weights_warning` before any image is run when the weights are random.

    Returns:
        ``{"n", "top1", "top5"`` (fractions 0-1), ``"model", "precision", "file", "backend",
        "backend_version", "threads", "top1_correct", "top5_correct", "images_per_s", "seconds",
        "ground_truth", "preprocessing", "errors", "weights", "random_weights"}``; ``ground_truth``
        names the rule used (see :func:`ground_truth`), ``weights`` is :func:`weights_source`,
        ``random_weights`` is True when it is "random" (then top-1/top-5 mean nothing).
    Raises:
        UsageError: no such folder (or a file given), no ground truth or an index beyond the model's
            classes, labelled files missing.
        MobilenetEdgeError: no image could be decoded.
    """
    from .runner import background_offset, open_model, top_k

    folder = Path(folder)
    if folder.is_file():
        raise UsageError(f"{folder} is a file, expected a folder of images")
    if not folder.is_dir():
        raise UsageError(f"no such folder: {folder}")
    runner, prep, _, manifest = open_model(model, int8=int8, fmt=fmt, threads=threads, prep_overrides=prep_overrides)
    off = background_offset(runner.num_classes)
    gt, source = ground_truth(
        folder, Path(labels_csv) if labels_csv is not None else None, classes=runner.num_classes - off
    )
    missing = [p for p in gt if not p.is_file()]
    if missing:
        raise UsageError(f"{len(missing)} labelled file(s) missing, first: {missing[0]}")
    weights = weights_source(runner, manifest)
    if weights == "random" and warn is not None:
        warn(random_weights_warning(manifest))
    k = min(5, runner.num_classes)
    paths = sorted(gt)
    errors: list[dict] = []
    n = c1 = c5 = done = 0
    batch = 8 if runner.fixed_batch is None else runner.fixed_batch

    def bad(p, e):
        errors.append({"image": str(p), "error": str(e)})
        if on_error is not None:
            on_error(p, e)

    t0 = time.perf_counter()
    for ps, x in imglib.iter_batches(paths, prep, batch=batch, on_error=bad):
        idx, _ = top_k(runner.run(x), k)  # softmax does not change the order
        for p, row in zip(ps, idx):
            truth = gt[p] + off
            n += 1
            c1 += int(row[0] == truth)
            c5 += int(np.any(row == truth))
        done = n + len(errors)
        if progress is not None:
            progress(done, len(paths))
    seconds = time.perf_counter() - t0
    if n == 0:
        raise MobilenetEdgeError(f"no image of {folder} could be decoded ({len(errors)} errors)")
    return {
        "n": n,
        "top1": c1 / n,
        "top5": c5 / n,
        "model": model_name(Path(model), manifest),
        "precision": precision_of(runner, manifest, int8),
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
        "weights": weights,
        "random_weights": weights == "random",
    }
