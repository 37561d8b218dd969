"""The source ``.tflite`` (LiteRT, through :class:`mobilenet_edge.runtime.runner.Runner`) vs the imported
model (torch) on the same preprocessed images: :func:`verify_import`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...core.errors import UsageError, WeightsError
from ...core.images import Preprocessing
from ...core.labels import background_offset
from ...runtime.runner import Runner
from .load import LoadedWeights
from .tflite_file import default_res
from .tfslim import tflite_preprocessing


def read_imagenet_labels_csv(folder: str | Path) -> dict[str, int]:
    """``file -> imagenet_index`` (0-999) from ``folder/labels.csv`` (``file,imagenet_index,...``);
    empty when there is no such file."""
    import csv

    path = Path(folder) / "labels.csv"
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {row["file"]: int(row["imagenet_index"]) for row in csv.DictReader(f)}

def tflite_runner(path: str | Path, res: int | None = None, *, threads: int = 1) -> Runner:
    """A :class:`~mobilenet_edge.runtime.runner.Runner` for a classification ``.tflite`` at ``res``.

    ``runner.run(x)`` takes (N, res, res, 3) float32 in the model's input range (quantized to a
    uint8/int8 input with its scale and zero point) and returns (N, num_classes) float32 scores
    (dequantized output). LiteRT's XNNPACK INFO line is kept off stderr.

    Args:
        path: the ``.tflite`` file.
        res: input side in pixels (None: the file's own).
        threads: interpreter threads (>= 1).
    Raises:
        UsageError: ``res`` differs from the file's fixed input size (Google's MobileNet files have a
            fixed average-pool kernel and reshape, so their graph cannot be resized).
        MobilenetEdgeError: the file cannot be loaded, or is not an image classifier.
    """
    runner = Runner(path, threads=threads)
    if res is not None and runner.res is not None and res != runner.res:
        raise UsageError(
            f"{Path(path).name} cannot run at res {res}: its graph is fixed to res {runner.res}; "
            f"verify at res {runner.res}"
        )
    return runner


def verify_import(
    tflite_path: str | Path,
    loaded: LoadedWeights,
    images: list[str | Path],
    *,
    res: int | None = None,
    batch: int = 25,
    progress=None,
) -> dict:
    """Compare the source ``.tflite`` (LiteRT) and the imported model (torch) on the same images.

    Both get the same preprocessed pixels (:mod:`mobilenet_edge.core.images`, the weights' preprocessing
    at ``res``); the ``.tflite`` runs on :class:`mobilenet_edge.runtime.runner.Runner` (input quantized with its input
    tensor's scale and zero point, output dequantized).
    Top-1 is the argmax (lowest index on ties) of each model's output.

    Args:
        tflite_path: the source ``.tflite``.
        loaded: the imported weights.
        images: image files (labels are read from ``labels.csv`` in their folders when present:
            ``file,imagenet_index,...``; with 1001 classes, predicted index - 1 == imagenet_index).
        res: input resolution (default: the ``.tflite`` file's own).
        batch: torch batch size.
        progress: optional callable ``progress(done, total)`` (3 units per image: decode, LiteRT, torch).
    Returns:
        ``{"n", "res", "agreement", "agree", "n_labelled", "top1_tflite", "top1_torch",
        "correct_tflite", "correct_torch", "max_abs_prob_diff", "tflite_top_ties", "agree_within_ties"}``;
        accuracies are fractions (None without labels); ``tflite_top_ties`` counts images whose uint8
        .tflite output has a tied maximum, ``agree_within_ties`` those where the torch top-1 is among
        the .tflite's top scores (ties included).
    """
    import torch

    from ...core.images import load

    res = res or default_res(tflite_path)
    runner = tflite_runner(tflite_path, res)
    prep = Preprocessing.from_dict({**(loaded.preprocessing or tflite_preprocessing()), "res": res, "layout": "NCHW"})
    paths = [Path(p) for p in images]
    total = 3 * len(paths)  # progress units: decode, LiteRT, torch
    done = 0

    def tick(k: int = 1) -> None:
        nonlocal done
        done += k
        if progress is not None:
            progress(done, total)

    xs = []
    for path in paths:
        xs.append(load(path, prep))  # (3, res, res) float32
        tick()
    # LiteRT first, then torch in batches: interleaving the two thread pools per image is ~20x slower
    y_tfl = []
    for x in xs:
        y_tfl.append(runner.run(x[None].transpose(0, 2, 3, 1))[0])
        tick()
    probs = []
    model = loaded.model.eval()
    with torch.no_grad():
        for k in range(0, len(xs), batch):
            chunk = np.stack(xs[k : k + batch])
            probs.append(torch.softmax(model(torch.from_numpy(chunk)), 1).numpy())
            tick(len(chunk))
    probs_all = np.concatenate(probs) if probs else np.zeros((0, 0), np.float32)
    y_all = np.stack(y_tfl) if y_tfl else np.zeros((0, 0), np.float32)
    if probs_all.shape != y_all.shape:
        raise WeightsError(f"output shapes differ: .tflite {y_all.shape[1:]}, imported model {probs_all.shape[1:]}")
    summary = _summary(paths, y_all, probs_all, offset=background_offset(loaded.config.get("num_classes")))
    return {"n": summary.pop("n"), "res": res, **summary}  # the documented key order (--json prints it)


def _summary(paths: list[Path], y_all: np.ndarray, probs_all: np.ndarray, *, offset: int) -> dict:
    """Agreement, ties and accuracy figures of :func:`verify_import` (``res`` aside), from the (N, classes)
    .tflite scores and torch probabilities."""
    top_t, top_p = y_all.argmax(1), probs_all.argmax(1)
    n = len(paths)
    agree = int((top_t == top_p).sum())
    # the .tflite output is uint8 (1/256 steps): count images whose top score is tied
    ties = int(sum((y == y.max()).sum() > 1 for y in y_all))
    # torch's top-1 is one of the .tflite's tied top scores (agreement up to the uint8 output step)
    agree_ties = int(sum(y[q] == y.max() for y, q in zip(y_all, top_p)))
    label_cache: dict[Path, dict[str, int]] = {}
    n_lab = ok_t = ok_p = 0
    for path, t, q in zip(paths, top_t, top_p):
        labels = label_cache.setdefault(path.parent, read_imagenet_labels_csv(path.parent))
        if path.name in labels:
            n_lab += 1
            ok_t += int(t) - offset == labels[path.name]
            ok_p += int(q) - offset == labels[path.name]
    return {
        "n": n,
        "agree": agree,
        "agreement": agree / n if n else None,
        "n_labelled": n_lab,
        "correct_tflite": ok_t,
        "correct_torch": ok_p,
        "top1_tflite": ok_t / n_lab if n_lab else None,
        "top1_torch": ok_p / n_lab if n_lab else None,
        "max_abs_prob_diff": float(np.abs(y_all - probs_all).max()) if n else 0.0,
        "tflite_top_ties": ties,
        "agree_within_ties": agree_ties,
    }
