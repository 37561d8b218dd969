"""fp32 ONNX -> QDQ int8 ONNX with ONNX Runtime's own tools, as named stages (no torch).

Every argument is explicit (ORT's defaults changed across releases). :func:`quantize_model` runs them in order:

1. :func:`pre_process`: ``onnxruntime.quantization.shape_inference.quant_pre_process`` (shape inference +
   ORT graph optimisation, as ORT's docs ask before quantizing);
2. :func:`apply_recipe`: the :mod:`~.recipes` choices (weight grid, float nodes, weight-error bias correction);
3. :func:`calibrate`: ORT's ``create_calibrator`` (MinMax, Entropy or Percentile), fed in chunks of
   :data:`CALIB_CHUNK` by a :func:`~.calibration.make_image_reader` that streams images through the model's
   :class:`~mobilenet_edge.core.images.Preprocessing`. We run the calibrator ourselves because ORT 1.32's
   ``quantize_static`` forwards only five calibrator settings (``CalibTensorRangeSymmetric``,
   ``CalibMovingAverage``, ``CalibMovingAverageConstant``, ``CalibMaxIntermediateOutputs``,
   ``CalibPercentile``): the histogram size of Entropy/Percentile (``num_bins``, ``num_quantized_bins``)
   cannot be set through it. The ranges go to ``quantize_static`` through its own calibration cache
   (``save_tensors_data``);
4. :func:`guard_ranges`: the calibrated range of every ``Clip(lo, hi)`` / ``Relu`` output is clamped to
   ``[lo, hi]`` / ``[0, inf)``. ORT removes "removable" activations (Clip, Relu) whenever activations are
   quantized asymmetrically, so the following QuantizeLinear alone must do the clipping; a calibration
   range wider than the activation (e.g. Percentile's default symmetric range ``[-a, a]``) would otherwise
   let negative pre-activations through a ReLU6;
5. :func:`static_arguments` + :func:`run_quantize_static`: ``quantize_static`` in QDQ format (per-channel
   int8 weights by default); then the fp32 model's metadata and :func:`~.compact.compact`.

benchmarks/quant_fidelity.py calls these stages for its research variants.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from io import StringIO
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Union

import numpy as np

from ..core import bundle as bdl
from ..core.errors import UsageError
from ..core.onnx_graph import (
    activation_bounds,
    import_ort_tools_without_torch,
    model_io,
    quiet_ort_logging,
    stdout_to_stderr,
)
from ..core.sessions import PROVIDERS
from . import recipes
from .calibration import CALIB_CHUNK, ChunkReplay, ChunkTake, make_array_reader, reader_batches
from .compact import BOOKKEEPING_META, compact
from .options import QuantOptions

CalibSource = Union[np.ndarray, Sequence[np.ndarray], Any]


def ort_tools() -> SimpleNamespace:
    """``onnxruntime.quantization``'s entry points (imported with torch blocked: its tools import torch
    helpers when they find it), plus ``op_types``: ``quantize_static``'s default operator list."""
    import_ort_tools_without_torch()
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
    from onnxruntime.quantization.shape_inference import quant_pre_process

    return SimpleNamespace(
        CalibrationMethod=CalibrationMethod, QuantFormat=QuantFormat, QuantType=QuantType,
        quantize_static=quantize_static, create_calibrator=create_calibrator, save_tensors_data=save_tensors_data,
        quant_pre_process=quant_pre_process, op_types=sorted(set(QLinearOpsRegistry) | set(QDQRegistry)),
    )


def calibration_method(method: str):
    """ORT's ``CalibrationMethod`` for ``minmax`` | ``entropy`` | ``percentile``."""
    cm = ort_tools().CalibrationMethod
    return {"minmax": cm.MinMax, "entropy": cm.Entropy, "percentile": cm.Percentile}[method]


def _no_calibration_input(reader) -> UsageError:
    skipped = getattr(reader, "skipped", None)
    return UsageError("no decodable calibration image" + (f" ({len(skipped)} file(s) skipped)" if skipped else ""))


def _calibrator_prints():
    """ORT's histogram calibrators (entropy, percentile, distribution) print progress lines with
    ``print`` (onnxruntime/quantization/calibrate.py): drop them; with --debug send them to stderr."""
    if os.environ.get("MOBILENET_EDGE_DEBUG") == "1":
        return stdout_to_stderr()
    return contextlib.redirect_stdout(StringIO())


# ----------------------------------------------------------------------------------------------
# stages
# ----------------------------------------------------------------------------------------------


def pre_process(src_onnx: str | Path, dst_onnx: str | Path) -> Path:
    """ORT's ``quant_pre_process`` (symbolic + ONNX shape inference, graph optimisation) to ``dst_onnx``.

    Its prints go to stderr (stdout is for results). Returns ``dst_onnx`` as a Path.
    """
    with stdout_to_stderr():
        ort_tools().quant_pre_process(
            str(src_onnx), str(dst_onnx), skip_optimization=False, skip_onnx_shape=False,
            skip_symbolic_shape=False, auto_merge=False, verbose=0, save_as_external_data=False,
        )
    return Path(dst_onnx)


def apply_recipe(pre: Path, reader, options: QuantOptions, reduce_range: bool, limit: int, warn=None) -> recipes.Plan:
    """Apply ``options.recipe`` (:func:`.recipes.apply`) to the pre-processed model at ``pre`` in place.

    The weight-error bias correction reads the calibration inputs once for its channel means, then the
    reader is rewound for the calibrator; a reader without ``rewind()`` skips the correction (recorded).

    Returns:
        The recipe's :class:`~.recipes.Plan` (its record names the requested recipe).
    Raises:
        UsageError: the bias correction found no decodable calibration input.
    """
    import onnx

    r = recipes.get_recipe(options.recipe)
    if options.float_first is not None:
        r = replace(r, float_first=options.float_first)
    model = onnx.load(str(pre))
    if not options.per_channel and r.weight_grid:  # the aligned scales are per-channel
        r = replace(r, weight_grid=False, weight_bias_correction=False)
    if r.weight_bias_correction and not hasattr(reader, "rewind"):
        r = replace(r, weight_bias_correction=False)
        if warn is not None:
            warn("the calibration reader cannot be rewound: recipe bias correction skipped")
    if not r.weight_bias_correction:
        plan = recipes.plan(model, r, reduce_range=reduce_range)
        plan.record["recipe"] = {**plan.record["recipe"], "requested": options.recipe}
        return plan
    batches = reader_batches(reader, limit)
    first = next(batches, None)
    if first is None:  # nothing decodable: say so here, not as "no input for the channel means"
        raise _no_calibration_input(reader)
    corrected, plan = recipes.apply(model, r, itertools.chain([first], batches), reduce_range=reduce_range)
    reader.rewind()
    if corrected is not model:
        onnx.save(corrected, str(pre))
    plan.record["recipe"] = {**plan.record["recipe"], "requested": options.recipe}
    return plan


def calibrate(pre: Path, reader, options: QuantOptions, limit: int, work: Path) -> tuple[Any, dict]:
    """Run ORT's calibrator on at most ``limit`` inputs of ``reader``, :data:`CALIB_CHUNK` per call.

    Args:
        pre: the pre-processed fp32 model; ``work``: a scratch folder (the augmented model goes there).
        reader: an ORT ``CalibrationDataReader`` (one (1, 3, H, W) float32 input per ``get_next``).
    Returns:
        (ORT ``TensorsData`` ranges, ``{"images", "chunks", "seconds"}``).
    Raises:
        UsageError: no calibration input could be read.
    """
    ort = ort_tools()
    tc = time.perf_counter()
    calibrator = ort.create_calibrator(
        pre, ort.op_types, augmented_model_path=str(work / "augmented.onnx"),
        calibrate_method=calibration_method(options.method), use_external_data_format=False, providers=PROVIDERS,
        extra_options=options.extra.calibrator_options(options.method),
    )
    fed, chunks = 0, 0
    with _calibrator_prints():  # "Collecting tensor data and making histogram ..." etc.
        while fed < limit:
            take = ChunkTake(reader, min(CALIB_CHUNK, limit - fed))
            first = take.get_next()
            if first is None:
                break
            calibrator.collect_data(ChunkReplay(first, take))
            fed += take.got
            chunks += 1
            if take.exhausted:
                break
        if fed == 0:
            raise _no_calibration_input(reader)
        ranges = calibrator.compute_data()
    seconds = time.perf_counter() - tc
    del calibrator
    return ranges, {"images": fed, "chunks": chunks, "seconds": seconds}


def calibrated_tensors(pre: Path, work: Path) -> set[str]:
    """The activation tensors ORT's calibrator would collect on ``pre`` (its own ``select_tensors_to_calibrate``:
    inputs and outputs of the operators ``quantize_static`` quantizes); no data is run."""
    import onnx

    ort = ort_tools()
    calibrator = ort.create_calibrator(
        pre, ort.op_types, augmented_model_path=str(work / "augmented.onnx"),
        calibrate_method=calibration_method("minmax"), use_external_data_format=False, providers=PROVIDERS,
    )
    tensors, _ = calibrator.select_tensors_to_calibrate(onnx.load(str(pre)))
    del calibrator
    return set(tensors)


def file_ranges(pre: Path, qat, options: QuantOptions, work: Path) -> tuple[Any, dict, dict]:
    """The ``qat-ranges`` stage instead of :func:`calibrate`: the source file's activation ranges
    (:class:`~.qat_ranges.QatRanges`) mapped onto ``pre``, as ORT's calibration cache and tensor overrides.

    Returns:
        (ORT ``TensorsData``, activation ``TensorQuantOverrides``, record with the mapping).
    Raises:
        UsageError: no ranges given, or a tensor ORT quantizes without a source in the file.
    """
    import onnx

    from .qat_ranges import map_ranges, mapping_record, ort_inputs

    if qat is None:
        raise UsageError(f"recipe {options.recipe} needs the activation ranges of the source QAT .tflite "
                         "(export from Google's quantized weights, or give --calib DIR for a calibrated recipe)")
    tensors = calibrated_tensors(pre, work)
    mapping = map_ranges(onnx.load(str(pre)), qat, tensors)
    ranges, overrides = ort_inputs(mapping, options.activations, tensors)
    return ranges, overrides, mapping_record(qat, [m for m in mapping if m.tensor in tensors])


def guard_ranges(model, ranges, enabled: bool = True) -> dict:
    """Clamp the calibrated range of each Clip/Relu output of ``model`` to the activation's bounds, in place.

    Args:
        model: the pre-processed fp32 ``onnx.ModelProto`` that was calibrated.
        ranges: ORT ``TensorsData`` from :func:`calibrate` (modified when ``enabled``).
    Returns:
        ``{"enabled", "activations": bounded activations, "clamped": [{"tensor", "calibrated", "clamped"}]}``.
    """
    bounds = activation_bounds(model)
    clamped = []
    if enabled:
        for name, (lo, hi) in bounds.items():
            if name not in ranges:
                continue
            td_ = ranges[name]
            low, high = td_.range_value
            new_low = np.maximum(low, np.asarray(lo, dtype=low.dtype)) if math.isfinite(lo) else low
            new_high = np.minimum(high, np.asarray(hi, dtype=high.dtype)) if math.isfinite(hi) else high
            if new_low != low or new_high != high:
                clamped.append({"tensor": name, "calibrated": [float(low), float(high)],
                                "clamped": [float(new_low), float(new_high)]})
                td_.lowest, td_.highest = new_low.astype(low.dtype), new_high.astype(high.dtype)
    return {"enabled": enabled, "activations": len(bounds), "clamped": clamped}


def static_arguments(options: QuantOptions, rplan: recipes.Plan, reduce_range: bool) -> dict:
    """Keyword arguments of ``quantize_static`` (ORT objects), every one explicit; the recipe's tensor
    overrides lose to the user's for the same tensor. A caller may adjust them before
    :func:`run_quantize_static` (benchmarks/quant_fidelity.py does)."""
    ort = ort_tools()
    extra_options = {**options.extra.to_ort(), **rplan.extra_options()}
    if rplan.tensor_quant_overrides and options.extra.tensor_quant_overrides:  # the user's win per tensor
        extra_options["TensorQuantOverrides"] = {**rplan.tensor_quant_overrides, **options.extra.tensor_quant_overrides}
    exclude = list(dict.fromkeys([*options.nodes_to_exclude, *rplan.nodes_to_exclude]))
    act_type = ort.QuantType.QUInt8 if options.activations == "uint8" else ort.QuantType.QInt8
    return dict(
        quant_format=ort.QuantFormat.QDQ, op_types_to_quantize=ort.op_types, per_channel=options.per_channel,
        reduce_range=bool(reduce_range), activation_type=act_type, weight_type=ort.QuantType.QInt8,
        nodes_to_quantize=None, nodes_to_exclude=exclude or None, use_external_data_format=False,
        calibrate_method=calibration_method(options.method), calibration_providers=PROVIDERS,
        extra_options=extra_options,
    )


def arguments_record(kwargs: dict, rplan: recipes.Plan) -> dict:
    """JSON-ready record of :func:`static_arguments` (the recipe's weight overrides summarised)."""
    extra = {k: (f"{len(v)} tensors (recipe weight grid and file activation ranges; see quantization.recipe)"
                 if k == "TensorQuantOverrides" and v else v)
             for k, v in kwargs["extra_options"].items()}
    return {
        "quant_format": "QDQ", "op_types_to_quantize": kwargs["op_types_to_quantize"],
        "per_channel": kwargs["per_channel"], "reduce_range": kwargs["reduce_range"],
        "activation_type": kwargs["activation_type"].name, "weight_type": kwargs["weight_type"].name,
        "nodes_to_quantize": None, "nodes_to_exclude": kwargs["nodes_to_exclude"] or [],
        "use_external_data_format": False, "calibrate_method": kwargs["calibrate_method"].name,
        "calibration_providers": list(PROVIDERS), "extra_options": extra,
    }


def run_quantize_static(pre: Path, dst: Path, ranges, kwargs: dict, work: Path) -> Path:
    """``quantize_static(pre -> dst, **kwargs)`` with ``ranges`` handed over as its calibration cache
    (``work/calibration.json``); its prints go to stderr. Returns ``dst``."""
    ort = ort_tools()
    cache = work / "calibration.json"
    ort.save_tensors_data(ranges, cache)
    with stdout_to_stderr():
        ort.quantize_static(str(pre), str(dst), None, **kwargs, calibration_cache_path=str(cache))
    return Path(dst)


def finish_model(qpath: Path, src_onnx: str | Path, metadata: dict[str, str] | None):
    """The int8 model at ``qpath`` with the fp32 model's ``metadata_props`` (tool bookkeeping dropped)
    updated by ``metadata``. Returns the ``onnx.ModelProto``."""
    import onnx

    q = onnx.load(str(qpath))
    src_meta = onnx.load(str(src_onnx), load_external_data=False).metadata_props
    props = {p.key: p.value for p in src_meta if not p.key.startswith(BOOKKEEPING_META)}
    props.update(metadata or {})
    del q.metadata_props[:]
    for k, v in props.items():
        q.metadata_props.add(key=k, value=str(v))
    return q


def quantize_model(
    src_onnx: str | Path,
    dst_onnx: str | Path,
    calib: CalibSource,
    options: QuantOptions = QuantOptions(),
    *,
    reduce_range: bool | None = None,
    metadata: dict[str, str] | None = None,
    warn: Callable[[str], None] | None = None,
    activation_ranges=None,
) -> dict:
    """fp32 ONNX -> QDQ int8 ONNX with ORT: the stages of this module, in order (``qat-ranges``:
    :func:`file_ranges` instead of :func:`calibrate` and :func:`guard_ranges`; ``calib`` may be None).

    Args:
        src_onnx: fp32 model with one (N, 3, H, W) float32 input.
        dst_onnx: written atomically (``bundle.atomic_path``); untouched on failure.
        calib: (N, 3, H, W) float32 array(s) or an ORT ``CalibrationDataReader`` (e.g. from
            :func:`~.calibration.make_image_reader`); at most ``options.samples`` inputs are used.
        options: see :class:`~.options.QuantOptions`.
        reduce_range: the resolved 7-bit-weights decision (``options.reduce_range`` when None, and
            False if that is None too).
        metadata: extra ``metadata_props`` for the int8 model (the fp32 model's are copied first).
        warn: called with one-line warnings.
        activation_ranges: :class:`~.qat_ranges.QatRanges` of the source file (``qat-ranges`` recipe only).
    Returns:
        Record: ``{"calibration": {"images", "skipped", "chunks", "chunk_size", "seconds"}, "range_guard": {...},
        "ort_arguments": {...}, "recipe": {...}, "compact": {...} | None, "seconds": float}``; with
        ``qat-ranges`` the recipe record has ``activation_ranges`` (source file, sha256, per-tensor mapping).
    Raises:
        UsageError: no calibration input could be read (nothing is written).
    """
    import onnx

    t0 = time.perf_counter()
    input_name = model_io(src_onnx)["input"]["name"]
    is_arrays = isinstance(calib, np.ndarray) or (
        isinstance(calib, (list, tuple)) and calib and isinstance(calib[0], np.ndarray))
    reader = make_array_reader(calib, input_name=input_name) if is_arrays else calib
    reduce_range = bool(options.reduce_range) if reduce_range is None else bool(reduce_range)
    limit = options.samples if options.samples is not None else 1 << 62
    from_file = recipes.get_recipe(options.recipe).activation_ranges == "qat-file"
    with tempfile.TemporaryDirectory(prefix="mobilenet-edge-quant-") as td, quiet_ort_logging():
        work = Path(td)
        pre = pre_process(src_onnx, work / "pre.onnx")
        rplan = apply_recipe(pre, reader, options, reduce_range, limit, warn)  # issue #10
        if from_file:  # issue #22: no calibration, the file's ranges for every activation
            t1 = time.perf_counter()
            ranges, act_overrides, rplan.record["activation_ranges"] = file_ranges(pre, activation_ranges, options, work)
            rplan.tensor_quant_overrides.update(act_overrides)
            cal = {"images": 0, "chunks": 0, "seconds": time.perf_counter() - t1}
            guard = {"enabled": False, "reason": "qat-ranges: the file's ranges are used as they are"}
        else:
            ranges, cal = calibrate(pre, reader, options, limit, work)
            guard = guard_ranges(onnx.load(str(pre)), ranges, options.activation_range_guard)
        kwargs = static_arguments(options, rplan, reduce_range)
        qpath = run_quantize_static(pre, work / "model.int8.onnx", ranges, kwargs, work)
        q = finish_model(qpath, src_onnx, metadata)
        compacted = compact(q) if options.compact else None
        with bdl.atomic_path(dst_onnx) as t:
            onnx.save(q, str(t))
    skipped = [str(p) for p in getattr(reader, "skipped", [])]
    return {
        "calibration": {"images": cal["images"], "skipped": skipped, "chunks": cal["chunks"],
                        "chunk_size": CALIB_CHUNK, "seconds": round(cal["seconds"], 3)},
        "range_guard": guard,
        "ort_arguments": arguments_record(kwargs, rplan),
        "recipe": rplan.record,
        "compact": compacted,
        "seconds": round(time.perf_counter() - t0, 3),
    }
