"""Where quantization's calibration and evaluation data come from: noise images (random weights), the
source file's own ranges (``qat-ranges``: nothing to calibrate), or image folders with their ground truth.

Each function returns ``(calibration reader or None, evaluation items, labels)`` and records its source in
the quantization record ``rec``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core.images import Preprocessing, expand_paths
from ..core.onnx_graph import model_io
from .calibration import make_array_reader, make_image_reader, resolve_labels, synthetic_images
from .options import QuantOptions


def synthetic_data(rec: dict, prep: Preprocessing, options: QuantOptions, input_name: str, calib, warn):
    """(calibration reader, evaluation arrays, labels) of uniform-noise images (random weights)."""
    n_cal = min(options.samples or 64, 64)
    cal_x = synthetic_images(n_cal, prep, seed=options.seed)
    eval_items = synthetic_images(16, prep, seed=options.seed + 1)
    rec["calibration_source"] = {"kind": "synthetic", "images": n_cal, "seed": options.seed,
                                 "what": "uniform pixel noise in [0,255] through the preprocessing"}
    rec["evaluation_source"] = {"kind": "synthetic", "images": 16, "seed": options.seed + 1}
    if calib is not None:
        warn("--synthetic given: ignoring --calib")
    return make_array_reader(cal_x, input_name=input_name), eval_items, {}


def file_range_data(rec: dict, prep: Preprocessing, options: QuantOptions, qat, *, calib, eval_dir, labels_csv,
                     model_classes=(None, None)):
    """(no reader, evaluation items, labels) for ``qat-ranges``: nothing is calibrated, so the evaluation
    uses ``eval_dir``, else every image of ``calib``, else 16 noise images (agreement and SQNR only)."""
    rec["calibration_source"] = {"kind": "qat-file", **(qat.source_record() if qat is not None else {})}
    folder = eval_dir if eval_dir is not None else calib
    if folder is None:
        rec["evaluation_source"] = {"kind": "synthetic", "images": 16, "seed": options.seed + 1,
                                    "what": "no evaluation images given: uniform pixel noise (pass --eval DIR)"}
        rec["accuracy_meaningful"] = False
        return None, synthetic_images(16, prep, seed=options.seed + 1), {}
    paths = expand_paths([folder])
    classes, class_labels = model_classes
    labels, label_desc = resolve_labels(paths, Path(folder), labels_csv, classes=classes, class_labels=class_labels)
    rec["evaluation_source"] = {"kind": "images", "folder": str(folder), "files": len(paths), "labels": label_desc}
    return None, paths, labels


def class_labels(src_onnx) -> tuple[int | None, list[str] | None]:
    """(classes the model scores, their labels), background excluded; from the ONNX output and our metadata."""
    from ..core.labels import background_offset

    io = model_io(src_onnx)
    n = io["output"]["shape"][-1] if io["output"]["shape"] else None
    if not isinstance(n, int) or n <= 0:
        return None, None
    off = background_offset(n)
    try:
        labels = [str(v) for v in json.loads(io["metadata"]["labels"])] if "labels" in io["metadata"] else None
    except (ValueError, TypeError):
        labels = None
    return n - off, (labels[off:] if labels is not None and len(labels) == n else None)


def image_data(rec: dict, images, prep: Preprocessing, options: QuantOptions, input_name: str, *,
                calib, eval_dir, labels_csv, fold: int, warn, prog, model_classes=(None, None)):
    """(calibration reader streaming files, evaluation paths, labels) from :func:`collect_images`'s split."""
    cal_paths, eval_items, _cal_root, eval_root, split = images
    if options.samples is not None and len(cal_paths) > options.samples:
        cal_paths = cal_paths[: options.samples]
    reader = make_image_reader(cal_paths, prep, input_name=input_name, warn=warn, progress=prog)
    classes, class_labels = model_classes
    labels, label_desc = resolve_labels(eval_items, eval_root, labels_csv, classes=classes, class_labels=class_labels)
    rec["calibration_source"] = {"kind": "images", "folder": str(calib), "files": len(cal_paths),
                                 "split": split, "fold": fold if eval_dir is None else None}
    rec["evaluation_source"] = {"kind": "images", "folder": str(eval_root), "files": len(eval_items),
                                "labels": label_desc}
    return reader, eval_items, labels
