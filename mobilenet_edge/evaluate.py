"""Top-1/top-5 evaluation on labelled image folders, and where ground truth comes from (no torch).

Shared by ``eval``, ``quantize``'s fidelity report and ``bench --eval``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import images as imglib
from .errors import MobilenetEdgeError, UsageError


def imagenet_synsets() -> list[str]:
    """The 1000 ImageNet-1k synset ids in the standard sorted order (index = position).

    Source: tensorflow/models research/slim/datasets/imagenet_lsvrc_2015_synsets.txt (Apache-2.0),
    shipped as ``mobilenet_edge/data/imagenet_synsets.txt``.
    """
    path = Path(__file__).with_name("data") / "imagenet_synsets.txt"
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


def precision_of(runner, manifest, int8: bool) -> str:
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
) -> dict:
    """Top-1 and top-5 of a bundle / .onnx / .tflite on a folder of labelled images.

    Ground truth from :func:`ground_truth`. A 1001-class model's index 0 is background: prediction i
    counts as ImageNet class i-1. Undecodable images are skipped (listed under ``errors``).

    Returns:
        ``{"n", "top1", "top5"`` (fractions 0-1), ``"model", "precision", "file", "backend",
        "backend_version", "threads", "top1_correct", "top5_correct", "images_per_s", "seconds",
        "ground_truth", "preprocessing", "errors"}``.
    Raises:
        UsageError: no such folder, no ground truth, labelled files missing.
        MobilenetEdgeError: no image could be decoded.
    """
    from .runtime import background_offset, open_model, top_k

    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"no such folder: {folder}")
    gt, source = ground_truth(folder, Path(labels_csv) if labels_csv is not None else None)
    missing = [p for p in gt if not p.is_file()]
    if missing:
        raise UsageError(f"{len(missing)} labelled file(s) missing, first: {missing[0]}")
    runner, prep, _, manifest = open_model(model, int8=int8, fmt=fmt, threads=threads, prep_overrides=prep_overrides)
    off = background_offset(runner.num_classes)
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
    }
