"""Top-1/top-5 evaluation of one model on a labelled image folder (no torch).

Used by ``eval`` and ``bench --eval``; ground truth comes from :func:`mobilenet_edge.core.labels.ground_truth`
(shared with ``quantize``'s fidelity report).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..core import images as imglib
from ..core.errors import MobilenetEdgeError, UsageError
from ..core.labels import GT_POSITION_FOLDERS, background_offset, ground_truth
from ..core.manifest import Manifest
from .scores import top_k

#: the stderr warning (after "warning: ") of predict/eval on a bundle whose manifest says the weights
#: are random; ``(model metadata)`` replaces ``(manifest)`` for a lone .onnx (see :func:`random_weights_warning`)
RANDOM_WEIGHTS_WARNING = "random weights (manifest): predictions and accuracy are meaningless"
#: the stderr warning when class folders are matched to classes by their sorted position (a guess)
POSITION_WARNING = ("class folders matched to classes by sorted position (folder k = class k): their names are "
                    "not the model's labels, ImageNet synsets or indices; top-1 is only right if that order is the model's")


def random_weights_warning(manifest) -> str:
    """:data:`RANDOM_WEIGHTS_WARNING`, naming where the fact comes from (manifest or model metadata)."""
    if manifest is not None:
        return RANDOM_WEIGHTS_WARNING
    return RANDOM_WEIGHTS_WARNING.replace("(manifest)", "(model metadata)")


def weights_source(runner, manifest: Manifest | None) -> str | None:
    """Where the model's weights came from: the manifest's ``weights.source`` ("random", "tflite",
    "safetensors"), else an ONNX file's ``weights`` metadata (our exports write it), else None."""
    if manifest is not None:
        return manifest.weights_source
    src = (getattr(runner, "metadata", None) or {}).get("weights")
    return str(src) if src else None


def precision_of(runner, manifest: Manifest | None, int8: bool) -> str:
    """"int8" for quantized models: a bundle file's recorded precision (else the ``--int8`` choice),
    or for a lone file the one rule of :mod:`mobilenet_edge.core.precision`."""
    if manifest is not None:
        rec = manifest.file(runner.path.name)
        if rec.get("precision"):
            return str(rec["precision"])
        return "int8" if int8 else "fp32"
    from .runner import is_int8_file

    return "int8" if is_int8_file(runner) else "fp32"


def model_name(path: Path, manifest: Manifest | None) -> str:
    """The bundle's name from its manifest, else the file name."""
    if manifest is not None and manifest.name:
        return str(manifest.name)
    return path.name


def run_info(model: str | Path, runner, manifest: Manifest | None, *, int8: bool, threads: int, prep) -> dict:
    """What ran, as ``predict`` and ``eval`` report it (text and JSON): ``{"model"`` (:func:`model_name`),
    ``"precision"`` (:func:`precision_of`), ``"file"`` (the model file run), ``"backend", "backend_version",
    "threads", "runtime"`` (:mod:`.names`), ``"preprocessing"`` (:meth:`Preprocessing.to_dict`), and
    ``"execution"`` (OpenVINO only: :attr:`~.runner.Runner.execution`)``}``."""
    return {
        "model": model_name(Path(model), manifest),
        "precision": precision_of(runner, manifest, int8),
        "file": str(runner.path),
        "backend": runner.backend,
        "backend_version": runner.backend_version,
        "threads": threads,
        "runtime": runner.runtime,
        "preprocessing": prep.to_dict(),
        **({"execution": runner.execution} if runner.execution is not None else {}),
    }


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
    runtime: str | None = None,
    verify: bool = True,
) -> dict:
    """Top-1 and top-5 of a bundle / .onnx / .tflite on a folder of labelled images.

    Ground truth from :func:`ground_truth`. A 1001-class model's index 0 is background: prediction i
    counts as ImageNet class i-1. Undecodable images are skipped (listed under ``errors``).
    ``warn(msg)`` gets :func:`random_weights_warning` before any image is run when the weights are random,
    and :data:`POSITION_WARNING` when class folders are matched by position. Class folders named by the model's
    labels (torchvision's ImageFolder layout) map to those labels.
    ``runtime``, ``verify``: as :func:`~.load.open_model` (None: the file's default runtime; a bundle's
    file checked against its manifest).

    Returns:
        ``{"n", "top1", "top5"`` (fractions 0-1), ``"model", "precision", "file", "backend",
        "backend_version", "threads", "runtime", "top1_correct", "top5_correct", "images_per_s", "seconds",
        "ground_truth", "preprocessing", "errors", "weights", "random_weights"}``; ``ground_truth``
        names the rule used (see :func:`ground_truth`), ``runtime`` the runtime name (:mod:`.names`),
        ``execution`` (OpenVINO only) :attr:`~.runner.Runner.execution`, ``weights`` is :func:`weights_source`,
        ``random_weights`` is True when it is "random" (then top-1/top-5 mean nothing).
    Raises:
        UsageError: no such folder (or a file given), no ground truth or an index beyond the model's
            classes, labelled files missing.
        MobilenetEdgeError: no image could be decoded.
    """
    from .load import open_model

    folder = imglib.image_folder(folder)
    runner, prep, labels, manifest = open_model(model, int8=int8, fmt=fmt, threads=threads,
                                                prep_overrides=prep_overrides, runtime=runtime, verify=verify)
    gt, source = _truth(runner, folder, labels_csv, labels)
    if source == GT_POSITION_FOLDERS and warn is not None:
        warn(POSITION_WARNING)
    weights = weights_source(runner, manifest)
    if weights == "random" and warn is not None:
        warn(random_weights_warning(manifest))
    t0 = time.perf_counter()
    n, c1, c5, errors = _score(runner, prep, gt, on_error=on_error, progress=progress)
    seconds = time.perf_counter() - t0
    if n == 0:
        raise MobilenetEdgeError(f"no image of {folder} could be decoded ({len(errors)} errors)")
    info = run_info(model, runner, manifest, int8=int8, threads=threads, prep=prep)
    return {
        "n": n,
        "top1": c1 / n,
        "top5": c5 / n,
        **{k: v for k, v in info.items() if k not in ("preprocessing", "execution")},
        "top1_correct": c1,
        "top5_correct": c5,
        "images_per_s": n / seconds if seconds > 0 else None,
        "seconds": seconds,
        "ground_truth": source,
        "preprocessing": info["preprocessing"],
        "errors": errors,
        "weights": weights,
        "random_weights": weights == "random",
        **({"execution": info["execution"]} if "execution" in info else {}),
    }


def _truth(runner, folder: Path, labels_csv: str | Path | None, labels=None) -> tuple[dict[Path, int], str]:
    """:func:`ground_truth` for the model's classes and labels (background excluded); every labelled file must exist."""
    off = background_offset(runner.num_classes)
    gt, source = ground_truth(
        folder, Path(labels_csv) if labels_csv is not None else None, classes=runner.num_classes - off,
        labels=list(labels)[off:] if labels is not None else None,
    )
    missing = [p for p in gt if not p.is_file()]
    if missing:
        raise UsageError(f"{len(missing)} labelled file(s) missing, first: {missing[0]}")
    return gt, source


def _score(runner, prep, gt: dict[Path, int], *, on_error, progress) -> tuple[int, int, int, list[dict]]:
    """Run every labelled image in sorted order: (n decoded, top-1 correct, top-5 correct, errors)."""
    off = background_offset(runner.num_classes)
    k = min(5, runner.num_classes)
    paths = sorted(gt)
    errors: list[dict] = []
    n = c1 = c5 = 0
    batch = 8 if runner.fixed_batch is None else runner.fixed_batch

    def bad(p, e):
        errors.append({"image": str(p), "error": str(e)})
        if on_error is not None:
            on_error(p, e)

    for ps, x in imglib.iter_batches(paths, prep, batch=batch, on_error=bad):
        idx, _ = top_k(runner.run(x), k)  # softmax does not change the order
        for p, row in zip(ps, idx):
            truth = gt[p] + off
            n += 1
            c1 += int(row[0] == truth)
            c5 += int(np.any(row == truth))
        if progress is not None:
            progress(n + len(errors), len(paths))
    return n, c1, c5, errors
