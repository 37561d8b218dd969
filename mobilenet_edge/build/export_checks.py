"""The export's checks that need no model: run before any work, so that bad options never leave a file
or replace an existing bundle (:func:`check_early`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import UsageError
from ..core.images import Preprocessing, expand_paths, image_folder
from ..core.variants import Variant
from .memory import check_memory
from .onnx_export import check_opset

if TYPE_CHECKING:
    from .bundle_builder import ExportOptions

#: the :class:`~mobilenet_edge.core.images.Preprocessing` fields :attr:`ExportOptions.preprocessing` may set
PREPROCESSING_OVERRIDES = ("mean", "std", "crop", "resize")


def check_early(opts: ExportOptions) -> list[Path] | None:
    """Every check that needs no model, before any work or replacement; returns the parity images.

    Raises:
        UsageError: bad opset, recipe, --float-first, variant, too little memory, missing folders.
        MobilenetEdgeError: --format tflite without litert-torch; too few calibration images.
    """
    for option, folder in (("--calib", opts.calib), ("--eval", opts.eval_dir), ("--parity-images", opts.parity_images)):
        if folder is not None:
            image_folder(folder, option)  # quantize's words for the same mistake
    check_opset(opts.opset)
    if opts.labels is not None:
        from ..core.labels import check_labels

        opts.labels = check_labels(opts.labels, source="labels")
    from ..quantize.recipes import FILE_RANGE_RECIPES, get_recipe

    try:
        if opts.recipe is not None:
            get_recipe(opts.recipe)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if opts.tflite_int8 and opts.calib is None:  # the int8 .tflite is calibrated (PT2E): no qat-ranges form
        raise UsageError("--format tflite --int8 needs --calib DIR (calibration images for the int8 .tflite)")
    if opts.recipe in FILE_RANGE_RECIPES and opts.tflite_int8:
        raise UsageError(f"--recipe {opts.recipe} makes model.int8.onnx only; the int8 .tflite is calibrated "
                         "(PT2E): use --recipe fidelity, grid or plain with --format tflite --int8 --calib DIR")
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
            from .tflite.litert import import_litert_torch

            import_litert_torch()  # raises the install hint (exit 1) before any work
    if opts.int8 and opts.calib is not None:
        from ..quantize.pipeline import collect_images

        collect_images(opts.calib, opts.eval_dir, warn=lambda m: None)  # too few images: fail now, not after export
    check_preprocessing(opts)
    images = expand_paths([opts.parity_images]) if opts.parity_images else None
    for folder in (opts.calib, opts.eval_dir):
        if folder is not None:
            expand_paths([folder])  # fail now (no such folder / no image), before any work or replacement
    return images


def check_preprocessing(opts: ExportOptions) -> None:
    """``opts.preprocessing``: known fields, valid values (a Preprocessing is built from them), no ``res``.

    Raises:
        UsageError: naming the unknown field or the bad value.
    """
    extra = dict(opts.preprocessing or {})
    bad = sorted(k for k in extra if k not in PREPROCESSING_OVERRIDES)
    if bad:
        raise UsageError(f"preprocessing: cannot set {', '.join(bad)}; fields: {', '.join(PREPROCESSING_OVERRIDES)} "
                         "(res is the export's, layout NCHW float32 the model's)")
    Preprocessing(**{**extra, "res": opts.res})
