"""int8 post-training static quantization with ONNX Runtime, and the fidelity report (no torch).

The pipeline is ORT's own tools, every argument explicit (ORT's defaults changed across releases):

1. ``onnxruntime.quantization.shape_inference.quant_pre_process`` (shape inference + ORT graph
   optimisation, as ORT's docs ask before quantizing);
2. calibration with ORT's ``create_calibrator`` (MinMax, Entropy or Percentile), fed in chunks by a
   :func:`~.calibration.make_image_reader` that streams images through the model's :class:`~.images.Preprocessing`.
   We run the calibrator ourselves because ORT 1.32's ``quantize_static`` forwards only five
   calibrator settings (``CalibTensorRangeSymmetric``, ``CalibMovingAverage``,
   ``CalibMovingAverageConstant``, ``CalibMaxIntermediateOutputs``, ``CalibPercentile``): the
   histogram size of Entropy/Percentile (``num_bins``, ``num_quantized_bins``) cannot be set through
   it. The ranges go to ``quantize_static`` through its own calibration cache (``save_tensors_data``);
3. the activation-range guard: the calibrated range of every ``Clip(lo, hi)`` / ``Relu`` output is
   clamped to ``[lo, hi]`` / ``[0, inf)``. ORT removes "removable" activations (Clip, Relu) whenever
   activations are quantized asymmetrically, so the following QuantizeLinear alone must do the
   clipping; a calibration range wider than the activation (e.g. Percentile's default symmetric
   range ``[-a, a]``) would otherwise let negative pre-activations through a ReLU6;
4. ``quantize_static`` in QDQ format (per-channel int8 weights by default).

The fidelity report compares the int8 model with the fp32 model on evaluation images disjoint from
the calibration images: top-1 agreement, logits SQNR in dB per image
(``10 log10(sum(fp32^2) / sum((fp32 - int8)^2))``; mean and worst), and top-1/top-5 of both models
when labels are known.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from io import StringIO
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np

from ..core import bundle as bdl
from ..core.errors import UsageError
from ..core.images import Preprocessing, expand_paths, load
from ..core.jsonio import finite_or_none
from ..core.onnx_graph import activation_bounds as _activation_bounds
from ..core.onnx_graph import import_ort_tools_without_torch as _import_ort_tools_without_torch
from ..core.onnx_graph import model_io  # noqa: F401  (re-exported)
from ..core.onnx_graph import quiet_ort_logging as _quiet_ort_logging
from ..core.onnx_graph import stdout_to_stderr as _stdout_to_stderr
from ..core.platform_info import detect_isa  # noqa: F401  (re-exported)
from ..core.precision import quantized_ops
from ..core.versions import QUANTIZE_TOOLS, versions
from .calibration import (  # noqa: F401  (re-exported: quantize.make_image_reader, ...)
    _progress,
    _Replay,
    _Take,
    _Warnings,
    make_array_reader,
    make_image_reader,
    resolve_labels,
    split_paths,
    synthetic_images,
)
from .fidelity import (  # noqa: F401  (re-exported: quantize.fidelity, quantize.sqnr_db, ...)
    _session,
    debug_layers,
    fidelity,
    fidelity_table,
    layers_table,
    relu6_ranges,
    sqnr_db,
)
from .recipes import RECIPE_NAMES

METHODS = ("minmax", "entropy", "percentile")
ACTIVATION_TYPES = ("uint8", "int8")
#: ``--calib`` folders with fewer decodable images than this get a "thin calibration" warning.
MIN_CALIB_IMAGES = 32
#: Calibration images fed to ORT's calibrator per ``collect_data`` call (bounds memory: the
#: calibrators keep every intermediate tensor of a call until it ends).
CALIB_CHUNK = 16
#: int8 model size limit relative to the fp32 model (issue #5: 30%).
MAX_SIZE_RATIO = 0.30



# ----------------------------------------------------------------------------------------------
# options
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrtExtraOptions:
    """Typed view of ``quantize_static(extra_options=...)`` (ORT 1.32 names, quantize.py docstring).

    Attributes map one-to-one to ORT keys (see :meth:`to_ort`); ``None`` means "use the method's
    default" and is resolved by :meth:`QuantOptions.resolved` so that every value is explicit.
    """

    activation_symmetric: bool = False  # ActivationSymmetric
    weight_symmetric: bool = True  # WeightSymmetric (ORT default for int8 weights)
    calib_tensor_range_symmetric: bool | None = None  # CalibTensorRangeSymmetric (percentile: ORT default True)
    calib_moving_average: bool = False  # CalibMovingAverage (MinMax only)
    calib_moving_average_constant: float = 0.01  # CalibMovingAverageConstant
    calib_percentile: float = 99.999  # CalibPercentile (Percentile only)
    calib_num_bins: int | None = None  # calibrator num_bins: ORT defaults entropy 128, percentile 2048
    calib_num_quantized_bins: int = 128  # calibrator num_quantized_bins (Entropy only)
    calib_max_intermediate_outputs: int | None = None  # CalibMaxIntermediateOutputs (MinMax only)
    keep_removable_activations: bool = False  # QDQKeepRemovableActivations
    dedicated_qdq_pair: bool = False  # DedicatedQDQPair
    tensor_quant_overrides: dict = field(default_factory=dict)  # TensorQuantOverrides

    def to_ort(self) -> dict:
        """The ``extra_options`` dict handed to ``quantize_static`` (ORT key names)."""
        d: dict[str, Any] = {
            "ActivationSymmetric": self.activation_symmetric,
            "WeightSymmetric": self.weight_symmetric,
            "CalibMovingAverage": self.calib_moving_average,
            "CalibMovingAverageConstant": self.calib_moving_average_constant,
            "CalibPercentile": self.calib_percentile,
            "QDQKeepRemovableActivations": self.keep_removable_activations,
            "DedicatedQDQPair": self.dedicated_qdq_pair,
        }
        if self.calib_tensor_range_symmetric is not None:
            d["CalibTensorRangeSymmetric"] = self.calib_tensor_range_symmetric
        if self.calib_max_intermediate_outputs is not None:
            d["CalibMaxIntermediateOutputs"] = self.calib_max_intermediate_outputs
        if self.tensor_quant_overrides:
            d["TensorQuantOverrides"] = self.tensor_quant_overrides
        return d

    def calibrator_options(self, method: str) -> dict:
        """Keyword dict for ORT's ``create_calibrator(extra_options=...)`` (its own key names)."""
        sym = self.calib_tensor_range_symmetric
        if method == "minmax":
            d = {
                "symmetric": bool(sym) if sym is not None else False,
                "moving_average": self.calib_moving_average,
                "averaging_constant": self.calib_moving_average_constant,
                "per_channel": False,
            }
            if self.calib_max_intermediate_outputs is not None:
                d["max_intermediate_outputs"] = self.calib_max_intermediate_outputs
            return d
        if method == "entropy":
            return {
                "symmetric": bool(sym) if sym is not None else False,
                # ORT's default. With 128 bins and 128 quantized bins the KL search has one candidate
                # (the full range), so Entropy ~ MinMax; 2048 bins measured worse (agreement 76-94% vs
                # 84-98% on imagenet-calib) and ~20x slower: see docs/quantize.md.
                "num_bins": self.calib_num_bins or 128,
                "num_quantized_bins": self.calib_num_quantized_bins,
            }
        return {  # percentile
            "symmetric": bool(sym) if sym is not None else True,
            "num_bins": self.calib_num_bins or 2048,
            "percentile": self.calib_percentile,
        }


@dataclass(frozen=True)
class QuantOptions:
    """What ``quantize`` does; every field is recorded in manifest.json ("quantization.options").

    Attributes:
        method: calibration method, ``minmax`` | ``entropy`` | ``percentile`` (ORT CalibrationMethod).
        per_channel: per-channel weight scales (default; per-tensor collapses MobileNet's depthwise
            layers, see the paper's companion Krishnamoorthi 2018, arXiv:1806.08342, Table 2).
        activations: activation type, ``uint8`` (U8S8, ORT's advice for x86) or ``int8`` (S8S8).
        weights: weight type; only ``int8`` (symmetric) is supported.
        reduce_range: 7-bit weights; ``None`` = decide from the CPU (see :func:`decide_reduce_range`).
        samples: maximum number of calibration images (the first ``samples`` of the calibration set).
        extra: ORT ``extra_options`` (typed).
        activation_range_guard: clamp calibrated ranges of Clip/Relu outputs to the activation's bounds.
        nodes_to_exclude: node names kept in float (issue #10: mixed precision).
        recipe: :mod:`~.recipes` name: ``fidelity`` (default: grid-aligned weight scales, weight-error
            bias correction, float logits, first two convs in float), ``grid``, or ``plain`` (ORT as is).
            docs/fidelity.md and benchmarks/quant_fidelity.md (issue #10) have the measurements.
        float_first: keep this many Conv nodes, in graph order from the input, in float instead of the
            recipe's number (``fidelity``: 2; ``grid``/``plain``: 0). Mixed precision: more is closer to
            fp32 and slower where int8 is fast (measured trade-off in docs/fidelity.md). None = the recipe's.
        seed: seed of synthetic calibration data.
        compact: drop shape-inference value_info, tool bookkeeping metadata and all-zero weight
            zero points from the int8 file (:func:`_compact`; numerics unchanged).
    """

    method: str = "minmax"
    per_channel: bool = True
    activations: str = "uint8"
    weights: str = "int8"
    reduce_range: bool | None = None
    samples: int | None = 256
    extra: OrtExtraOptions = field(default_factory=OrtExtraOptions)
    activation_range_guard: bool = True
    nodes_to_exclude: tuple[str, ...] = ()
    recipe: str = "fidelity"
    float_first: int | None = None
    seed: int = 0
    compact: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UsageError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.activations not in ACTIVATION_TYPES:
            raise UsageError(f"activations must be one of {', '.join(ACTIVATION_TYPES)}, got {self.activations!r}")
        if self.weights != "int8":
            raise UsageError(f"weights must be int8, got {self.weights!r}")
        if self.samples is not None and self.samples < 1:
            raise UsageError(f"samples must be >= 1, got {self.samples}")
        if not 50.0 < self.extra.calib_percentile <= 100.0:
            raise UsageError(f"percentile must be in (50, 100], got {self.extra.calib_percentile}")
        if self.extra.calib_num_bins is not None and self.extra.calib_num_bins < 16:
            raise UsageError(f"calibration bins must be >= 16, got {self.extra.calib_num_bins}")
        if self.recipe not in RECIPE_NAMES:
            raise UsageError(f"recipe must be one of {', '.join(RECIPE_NAMES)}, got {self.recipe!r}")
        if self.float_first is not None and self.float_first < 0:
            raise UsageError(f"float_first must be >= 0, got {self.float_first}")

    def to_manifest(self) -> dict:
        """JSON-ready dict of every option, plus the exact ORT arguments derived from them."""
        d = asdict(self)
        d["nodes_to_exclude"] = list(self.nodes_to_exclude)
        d["ort_extra_options"] = self.extra.to_ort()
        d["ort_calibrator_options"] = self.extra.calibrator_options(self.method)
        return d


# ----------------------------------------------------------------------------------------------
# ISA: when u8 x s8 kernels can saturate
# ----------------------------------------------------------------------------------------------


def decide_reduce_range(isa: dict, requested: bool | None) -> dict:
    """Choose ``reduce_range`` for the CPU that runs the model (ORT ``quantize_static`` docstring:
    "x86/x64 CPU without VNNI ... set reduce_range=True": their u8 x s8 kernels (vpmaddubsw) add pairs
    of products into int16 and can saturate; VNNI (vpdpbusd) and ARM accumulate in int32).

    Returns:
        ``{"reduce_range": bool, "requested": bool|None, "reason": str, "warning": str|None, "isa": isa}``.
    """
    risky = isa["arch"] == "x86" and not isa["vnni"]
    auto = risky
    if isa["arch"] == "x86":
        why = "x86 without avx512_vnni/avx_vnni: u8 x s8 int16 pair sums can saturate" if risky else (
            "x86 with VNNI: int32 accumulation, no saturation")
    elif isa["arch"] == "arm":
        why = "ARM: int8 dot products accumulate in int32, no saturation"
    else:
        why = f"unknown architecture {isa['machine']!r}: full 8-bit range"
    warning = None
    if requested is None:
        value, reason = auto, f"auto: {why}"
        if risky:
            warning = ("this CPU has no VNNI: weights use 7 bits (reduce_range) to avoid int16 saturation; "
                       "pass --no-reduce-range for a model that will only run on ARM (Raspberry Pi) or VNNI CPUs")
    else:
        value, reason = bool(requested), f"explicit ({why})"
        if risky and not requested:
            warning = ("--no-reduce-range on an x86 CPU without VNNI: ORT's u8 x s8 kernels may saturate on this "
                       "machine (the figures measured here may be worse than on the target)")
        elif requested and not risky:
            warning = "--reduce-range on a CPU that does not need it: 7-bit weights cost precision"
    return {"reduce_range": value, "requested": requested, "reason": reason, "warning": warning, "isa": isa}


# ----------------------------------------------------------------------------------------------
# quantize
# ----------------------------------------------------------------------------------------------

#: metadata_props written by onnxsim / ORT's tools about their own runs (not about the model)
_BOOKKEEPING_META = ("onnxsim", "onnx.infer", "onnx.quant.pre_process")


def _compact(model) -> dict:
    """Drop what the int8 file does not need, in place; numerics unchanged.

    - ``graph.value_info`` (shape-inference results from ``quant_pre_process``; ORT re-infers them);
    - the tool bookkeeping entries of ``metadata_props``;
    - all-zero zero points of weight (int8) and bias (int32) DequantizeLinear nodes (an optional input,
      default 0: ONNX DequantizeLinear-13) that no other node shares;
    - node names (optional in ONNX; tensor names are kept, ORT's ``qdq_loss_debug`` matches on them).

    Measured for 0.25/128 with Google's weights: 598,165 -> 573,989 bytes (31.2% -> 29.95% of fp32); the
    1001 labels in ``metadata_props`` (24.7 kB, bundle format) are the other large non-weight item.

    At alpha 0.25 per-channel scales, int32 biases and the graph itself are ~6% of the fp32 size on top
    of the 25% of int8 weights, so these bytes decide the 30% limit. Returns counts of what was removed.
    """
    from collections import Counter

    from onnx import numpy_helper

    n_vi = len(model.graph.value_info)
    del model.graph.value_info[:]
    keep = [p for p in model.metadata_props if not p.key.startswith(_BOOKKEEPING_META)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    inits = {i.name: i for i in model.graph.initializer}
    uses = Counter(x for n in model.graph.node for x in n.input)
    removed = 0
    for n in model.graph.node:
        if n.op_type != "DequantizeLinear" or len(n.input) != 3:
            continue
        w, zp = inits.get(n.input[0]), inits.get(n.input[2])
        if w is None or zp is None or uses[n.input[2]] != 1 or w.data_type != zp.data_type:
            continue
        if zp.data_type not in (3, 6) or numpy_helper.to_array(zp).any():  # 3 = INT8 weights, 6 = INT32 biases
            continue
        model.graph.initializer.remove(zp)
        del n.input[2]
        removed += 1
    n_names = 0
    for n in model.graph.node:
        if n.name:
            n.name = ""  # optional in ONNX (tensor names stay: ORT's qdq_loss_debug matches on them)
            n_names += 1
    return {"value_info_removed": n_vi, "zero_points_removed": removed, "node_names_removed": n_names}


def _reader_batches(reader, limit: int, batch: int = CALIB_CHUNK) -> Iterator[np.ndarray]:
    """(n, 3, H, W) float32 batches of at most ``limit`` inputs pulled from an ORT calibration reader."""
    got, buf = 0, []
    while got < limit:
        item = reader.get_next()
        if item is None:
            break
        buf.append(next(iter(item.values())))
        got += 1
        if len(buf) == batch:
            yield np.concatenate(buf)
            buf = []
    if buf:
        yield np.concatenate(buf)


def _no_calibration_input(reader) -> UsageError:
    skipped = getattr(reader, "skipped", None)
    return UsageError("no decodable calibration image" + (f" ({len(skipped)} file(s) skipped)" if skipped else ""))


def _calibrator_prints():
    """ORT's histogram calibrators (entropy, percentile, distribution) print progress lines with
    ``print`` (onnxruntime/quantization/calibrate.py): drop them; with --debug send them to stderr."""
    if os.environ.get("MOBILENET_EDGE_DEBUG") == "1":
        return _stdout_to_stderr()
    return contextlib.redirect_stdout(StringIO())


def check_quantizable(src_onnx: str | Path, options: QuantOptions | None = None) -> int:
    """Refuse, before any work, a model that cannot be quantized as asked; returns its Conv count.

    Raises:
        UsageError: ``src_onnx`` already holds quantization nodes (QuantizeLinear/DequantizeLinear
            or QOperator ops: quantizing it again would stack a second set of scales), or
            ``options.float_first`` exceeds its number of Conv nodes (27 for MobileNet V1: paper Table 1's
            1 full conv + 13 depthwise + 13 pointwise).
    """
    import onnx

    model = onnx.load(str(src_onnx), load_external_data=False)
    found = quantized_ops(model)
    if found:
        raise UsageError(f"{src_onnx} is already quantized ({'/'.join(found)} nodes); give the fp32 model")
    convs = sum(n.op_type == "Conv" for n in model.graph.node)
    if options is not None and options.float_first is not None and options.float_first > convs:
        raise UsageError(f"--float-first {options.float_first} exceeds the model's {convs} Conv nodes")
    return convs


def _apply_recipe(pre: Path, reader, options: QuantOptions, reduce_range: bool, limit: int, warn=None):
    """Apply ``options.recipe`` (:func:`.recipes.apply`) to the pre-processed model at ``pre`` in place.

    The weight-error bias correction reads the calibration inputs once for its channel means, then the
    reader is rewound for the calibrator; a reader without ``rewind()`` skips the correction (recorded).
    """
    import onnx

    from . import recipes

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
    batches = _reader_batches(reader, limit)
    first = next(batches, None)
    if first is None:  # nothing decodable: say so here, not as "no input for the channel means"
        raise _no_calibration_input(reader)
    corrected, plan = recipes.apply(model, r, itertools.chain([first], batches), reduce_range=reduce_range)
    reader.rewind()
    if corrected is not model:
        onnx.save(corrected, str(pre))
    plan.record["recipe"] = {**plan.record["recipe"], "requested": options.recipe}
    return plan


CalibSource = Union[np.ndarray, Sequence[np.ndarray], Any]


def quantize_model(
    src_onnx: str | Path,
    dst_onnx: str | Path,
    calib: CalibSource,
    options: QuantOptions = QuantOptions(),
    *,
    reduce_range: bool | None = None,
    metadata: dict[str, str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict:
    """fp32 ONNX -> QDQ int8 ONNX with ORT (``quant_pre_process`` + calibration + ``quantize_static``).

    Args:
        src_onnx: fp32 model with one (N, 3, H, W) float32 input.
        dst_onnx: written atomically (``bundle.atomic_path``); untouched on failure.
        calib: (N, 3, H, W) float32 array(s) or an ORT ``CalibrationDataReader`` (e.g. from
            :func:`make_image_reader`); at most ``options.samples`` inputs are used.
        options: see :class:`QuantOptions`.
        reduce_range: the resolved 7-bit-weights decision (``options.reduce_range`` when None, and
            False if that is None too).
        metadata: extra ``metadata_props`` for the int8 model (the fp32 model's are copied first).
    Returns:
        Record: ``{"calibration": {"images", "skipped", "chunks", "seconds"}, "range_guard": {...},
        "ort_arguments": {...}, "seconds": float}``.
    Raises:
        UsageError: no calibration input could be read (nothing is written).
    """
    import onnx

    _import_ort_tools_without_torch()
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
    from onnxruntime.quantization.shape_inference import quant_pre_process

    t0 = time.perf_counter()
    io = model_io(src_onnx)
    input_name = io["input"]["name"]
    if isinstance(calib, np.ndarray) or (isinstance(calib, (list, tuple)) and calib and isinstance(calib[0], np.ndarray)):
        reader = make_array_reader(calib, input_name=input_name)
    else:
        reader = calib
    if reduce_range is None:
        reduce_range = bool(options.reduce_range)
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[options.method]
    act_type = QuantType.QUInt8 if options.activations == "uint8" else QuantType.QInt8
    op_types = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))  # = quantize_static's default list

    dst_onnx = Path(dst_onnx)
    with tempfile.TemporaryDirectory(prefix="mobilenet-edge-quant-") as td, _quiet_ort_logging():
        tmp = Path(td)
        pre = tmp / "pre.onnx"
        with _stdout_to_stderr():
            quant_pre_process(
                str(src_onnx), str(pre), skip_optimization=False, skip_onnx_shape=False,
                skip_symbolic_shape=False, auto_merge=False, verbose=0, save_as_external_data=False,
            )
        # --- recipe (issue #10): extra ORT arguments, and corrected fp32 biases when it asks for them ---
        limit = options.samples if options.samples is not None else 1 << 62
        rplan = _apply_recipe(pre, reader, options, bool(reduce_range), limit, warn)
        # --- calibration (ORT's calibrator, fed in chunks) ---
        tc = time.perf_counter()
        calibrator = create_calibrator(
            pre, op_types, augmented_model_path=str(tmp / "augmented.onnx"), calibrate_method=method,
            use_external_data_format=False, providers=["CPUExecutionProvider"],
            extra_options=options.extra.calibrator_options(options.method),
        )
        fed, chunks = 0, 0
        with _calibrator_prints():  # "Collecting tensor data and making histogram ..." etc.
            while fed < limit:
                take = _Take(reader, min(CALIB_CHUNK, limit - fed))
                first = take.get_next()
                if first is None:
                    break
                calibrator.collect_data(_Replay(first, take))
                fed += take.got
                chunks += 1
                if take.exhausted:
                    break
            if fed == 0:
                raise _no_calibration_input(reader)
            ranges = calibrator.compute_data()
        calib_seconds = time.perf_counter() - tc
        del calibrator

        # --- activation-range guard ---
        pre_model = onnx.load(str(pre))
        bounds = _activation_bounds(pre_model)
        clamped = []
        if options.activation_range_guard:
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
        cache = tmp / "calibration.json"
        save_tensors_data(ranges, cache)

        # --- quantize_static, every argument explicit ---
        extra_options = {**options.extra.to_ort(), **rplan.extra_options()}
        if rplan.tensor_quant_overrides and options.extra.tensor_quant_overrides:  # the user's win per tensor
            extra_options["TensorQuantOverrides"] = {**rplan.tensor_quant_overrides, **options.extra.tensor_quant_overrides}
        exclude = list(dict.fromkeys([*options.nodes_to_exclude, *rplan.nodes_to_exclude]))
        ort_args = {
            "quant_format": "QDQ", "op_types_to_quantize": op_types, "per_channel": options.per_channel,
            "reduce_range": bool(reduce_range), "activation_type": act_type.name, "weight_type": "QInt8",
            "nodes_to_quantize": None, "nodes_to_exclude": exclude,
            "use_external_data_format": False, "calibrate_method": method.name,
            "calibration_providers": ["CPUExecutionProvider"],
            "extra_options": {k: (f"{len(v)} tensors (recipe weight grid; see quantization.recipe)"
                                  if k == "TensorQuantOverrides" and rplan.tensor_quant_overrides else v)
                              for k, v in extra_options.items()},
        }
        qpath = tmp / "model.int8.onnx"
        with _stdout_to_stderr():
            quantize_static(
                str(pre), str(qpath), None, quant_format=QuantFormat.QDQ, op_types_to_quantize=op_types,
                per_channel=options.per_channel, reduce_range=bool(reduce_range), activation_type=act_type,
                weight_type=QuantType.QInt8, nodes_to_quantize=None,
                nodes_to_exclude=exclude or None, use_external_data_format=False,
                calibrate_method=method, calibration_providers=["CPUExecutionProvider"],
                extra_options=extra_options, calibration_cache_path=str(cache),
            )
        q = onnx.load(str(qpath))
        src_meta = onnx.load(str(src_onnx), load_external_data=False).metadata_props
        props = {p.key: p.value for p in src_meta if not p.key.startswith(_BOOKKEEPING_META)}
        props.update(metadata or {})
        del q.metadata_props[:]
        for k, v in props.items():
            q.metadata_props.add(key=k, value=str(v))
        compact = _compact(q) if options.compact else None
        with bdl.atomic_path(dst_onnx) as t:
            onnx.save(q, str(t))
    skipped = [str(p) for p in getattr(reader, "skipped", [])]
    return {
        "calibration": {"images": fed, "skipped": skipped, "chunks": chunks, "chunk_size": CALIB_CHUNK,
                        "seconds": round(calib_seconds, 3)},
        "range_guard": {"enabled": options.activation_range_guard, "activations": len(bounds),
                        "clamped": clamped},
        "ort_arguments": ort_args,
        "recipe": rplan.record,
        "compact": compact,
        "seconds": round(time.perf_counter() - t0, 3),
    }


# ----------------------------------------------------------------------------------------------
# fidelity
# ----------------------------------------------------------------------------------------------


def collect_images(calib, eval_dir, warn, fold: int = 0) -> tuple[list[Path], list[Path], Path | None, Path | None, str]:
    """(calibration paths, evaluation paths, calib root, eval root, description of the split); the folder is
    split into even/odd positions (``fold``) when ``eval_dir`` is None. Raises UsageError for overlapping
    folders or fewer than 2 images to split. Called by export too, to fail before any work."""
    calib_paths = expand_paths([calib])
    if eval_dir is not None:
        eval_paths = expand_paths([eval_dir])
        overlap = {p.resolve() for p in calib_paths} & {p.resolve() for p in eval_paths}
        if overlap:
            raise UsageError(f"--calib and --eval share {len(overlap)} image(s), e.g. {sorted(overlap)[0]}; "
                             "they must be disjoint")
        split = "calibration and evaluation folders given separately"
        return calib_paths, eval_paths, Path(calib), Path(eval_dir), split
    if len(calib_paths) < 2:
        raise UsageError(f"{calib} holds {len(calib_paths)} image file{'' if len(calib_paths) == 1 else 's'}; "
                         "need at least 2 to split into "
                         "calibration and evaluation halves (or pass --eval DIR)")
    c, e = split_paths(calib_paths, fold=fold)
    a, b = ("even", "odd") if fold == 0 else ("odd", "even")
    split = (f"one folder split deterministically: sorted files, {a} positions calibrate ({len(c)}), "
             f"{b} positions evaluate ({len(e)})")
    return c, e, Path(calib), Path(calib), split


def quantize_file(
    src_onnx: str | Path,
    dst_onnx: str | Path,
    prep: Preprocessing,
    *,
    calib: str | Path | None = None,
    eval_dir: str | Path | None = None,
    options: QuantOptions = QuantOptions(),
    synthetic: bool = False,
    labels_csv: str | Path | None = None,
    debug_layers_: bool = False,
    weights_source: str | None = None,
    progress: bool = True,
    check_relu6: bool = True,
    fold: int = 0,
) -> dict:
    """Quantize one fp32 ONNX file to ``dst_onnx`` and evaluate it; the core of :func:`quantize_bundle`.

    Calibration: images from ``calib`` (recursive) or, with ``synthetic``, uniform-noise images.
    Evaluation: ``eval_dir`` if given, else the other half of ``calib`` (:func:`split_paths`), else
    held-out synthetic images. ``dst_onnx`` is written only after quantization and evaluation succeed.

    Returns:
        The ``quantization`` record (JSON-ready) with ``options``, ``isa``, ``calibration``,
        ``evaluation``, ``fidelity``, optional ``layers``, ``warnings``.
    Raises:
        UsageError: bad folders or no decodable image; MobilenetEdgeError: int8 file too large.
    """
    warn = _Warnings()
    io = model_io(src_onnx)
    check_quantizable(src_onnx, options)  # before images are read or calibration starts
    input_name = io["input"]["name"]
    h, w = io["input"]["shape"][2], io["input"]["shape"][3]
    if isinstance(h, int) and isinstance(w, int) and (h != prep.res or w != prep.res):
        raise UsageError(f"{src_onnx}: input is {h}x{w} but the preprocessing resizes to {prep.res}x{prep.res}")
    if prep.layout != "NCHW":
        raise UsageError(f"preprocessing layout must be NCHW for ONNX, got {prep.layout}")
    if calib is None and not synthetic:
        raise UsageError("--calib DIR is required (calibration images)")
    if fold not in (0, 1):
        raise UsageError(f"fold must be 0 or 1, got {fold}")
    images = None if synthetic else collect_images(calib, eval_dir, warn, fold)  # bad folders fail before any work
    decision = decide_reduce_range(detect_isa(), options.reduce_range)
    if decision["warning"]:
        warn(decision["warning"])
    if not options.per_channel:
        warn("--per-tensor: one scale per weight tensor collapses MobileNet's depthwise layers; "
             "use it only to compare with per-channel")
    meaningless = weights_source == "random"
    if meaningless:
        warn("random weights: int8 accuracy figures are meaningless (only the pipeline is exercised)")

    rec: dict[str, Any] = {
        "tool": "onnxruntime.quantization (quant_pre_process, create_calibrator, quantize_static)",
        "format": "QDQ",
        "method": options.method,
        "per_channel": options.per_channel,
        "activation_type": options.activations,
        "weight_type": options.weights,
        "reduce_range": decision["reduce_range"],
        "options": options.to_manifest(),
        "isa": {k: v for k, v in decision.items() if k != "warning"},
        "versions": versions(QUANTIZE_TOOLS),
        "weights_source": weights_source,
        "accuracy_meaningful": not meaningless and not synthetic,
    }
    prog = _progress(progress)
    with prog:
        if synthetic:
            n_cal = options.samples or 64
            n_cal = min(n_cal, 64)
            cal_x = synthetic_images(n_cal, prep, seed=options.seed)
            eval_items: Any = synthetic_images(16, prep, seed=options.seed + 1)
            reader = make_array_reader(cal_x, input_name=input_name)
            labels: dict = {}
            rec["calibration_source"] = {"kind": "synthetic", "images": n_cal, "seed": options.seed,
                                         "what": "uniform pixel noise in [0,255] through the preprocessing"}
            rec["evaluation_source"] = {"kind": "synthetic", "images": 16, "seed": options.seed + 1}
            label_desc = "none"
            if calib is not None:
                warn("--synthetic given: ignoring --calib")
        else:
            cal_paths, eval_items, cal_root, eval_root, split = images
            if options.samples is not None and len(cal_paths) > options.samples:
                cal_paths = cal_paths[: options.samples]
            reader = make_image_reader(cal_paths, prep, input_name=input_name, warn=warn, progress=prog)
            labels, label_desc = resolve_labels(eval_items, eval_root, labels_csv)
            rec["calibration_source"] = {"kind": "images", "folder": str(calib), "files": len(cal_paths),
                                         "split": split, "fold": fold if eval_dir is None else None}
            rec["evaluation_source"] = {"kind": "images", "folder": str(eval_root), "files": len(eval_items),
                                        "labels": label_desc}
        dst_onnx = Path(dst_onnx)
        work = Path(tempfile.mkdtemp(prefix=".quantize-", dir=dst_onnx.parent))
        try:
            tmp_q = work / dst_onnx.name
            meta = {"precision": "int8", "quantization": json.dumps(
                {"method": options.method, "per_channel": options.per_channel, "activations": options.activations,
                 "reduce_range": decision["reduce_range"], "recipe": options.recipe})}
            qrec = quantize_model(src_onnx, tmp_q, reader, options, reduce_range=decision["reduce_range"],
                                  metadata=meta, warn=warn)
            rec.update({k: qrec[k] for k in ("range_guard", "ort_arguments", "compact", "recipe")})
            rec["calibration"] = qrec["calibration"]
            if 0 < qrec["calibration"]["images"] < MIN_CALIB_IMAGES and not synthetic:
                n_cal = qrec["calibration"]["images"]
                warn(f"only {n_cal} calibration image{'' if n_cal == 1 else 's'} (< {MIN_CALIB_IMAGES}): "
                     "the calibration is thin, ranges may not cover real inputs")
            fp_size, q_size = Path(src_onnx).stat().st_size, tmp_q.stat().st_size
            rec["size"] = {"fp32_bytes": fp_size, "int8_bytes": q_size, "ratio": q_size / fp_size}
            rec["size"]["within_limit"] = q_size <= MAX_SIZE_RATIO * fp_size
            if not rec["size"]["within_limit"]:
                warn(f"int8 model is {100 * q_size / fp_size:.1f}% of the fp32 size (target {100 * MAX_SIZE_RATIO:.0f}%)")
            rec["fidelity"] = fidelity(src_onnx, tmp_q, eval_items, prep, labels=labels, warn=warn, progress=prog)
            if debug_layers_ or check_relu6:
                sample = (eval_items[:4] if isinstance(eval_items, np.ndarray)
                          else _first_images(eval_items, prep, 4))
                if check_relu6 and len(sample):
                    rows = relu6_ranges(tmp_q, sample, fp32_onnx=src_onnx)
                    bad = [r for r in rows if r["min"] < r["lo"] - r["step"] or r["max"] > r["hi"] + r["step"]]
                    rec["activation_ranges"] = {"checked": len(rows), "outside_one_step": [r["tensor"] for r in bad],
                                                "images": int(len(sample))}
                    if bad:
                        warn(f"{len(bad)} bounded activation(s) leave their Clip range by more than one "
                             f"quantization step, e.g. {bad[0]['tensor']}")
                if debug_layers_ and len(sample):
                    rec["layers"] = debug_layers(src_onnx, tmp_q, sample, input_name=input_name)
            os.replace(tmp_q, dst_onnx)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    rec["warnings"] = list(warn)
    return finite_or_none(rec)


def _first_images(paths: Sequence[Path], prep: Preprocessing, n: int) -> np.ndarray:
    xs = []
    for p in paths:
        try:
            xs.append(load(p, prep))
        except UsageError:
            continue
        if len(xs) == n:
            break
    return np.stack(xs) if xs else np.zeros((0,), np.float32)


def quantize_bundle(
    bundle_dir: str | Path,
    *,
    calib: str | Path | None = None,
    eval_dir: str | Path | None = None,
    options: QuantOptions = QuantOptions(),
    synthetic: bool = False,
    labels_csv: str | Path | None = None,
    debug_layers: bool = False,
    force: bool = True,
    progress: bool = True,
    fold: int = 0,
) -> dict:
    """Write ``model.int8.onnx`` into a bundle and record it in ``manifest.json``.

    Args:
        bundle_dir: folder with ``manifest.json`` and ``model.onnx`` (docs/bundle-format.md).
        calib: calibration image folder. Required when ``manifest["weights"]["source"]`` is not
            ``"random"``; with random weights synthetic data is the default (``synthetic`` forces it).
        eval_dir: evaluation folder (disjoint from ``calib``); default: the other half of ``calib``.
        options: :class:`QuantOptions`.
        labels_csv: ``file,imagenet_index`` csv for top-1/top-5 of the evaluation images.
        debug_layers: add per-layer SQNR (:func:`debug_layers`) to the record.
        force: replace an existing ``model.int8.onnx`` (else UsageError).
        fold: which half of a split ``calib`` folder calibrates (0: even positions, 1: odd), for
            2-fold cross evaluation.
    Returns:
        The manifest's new ``quantization`` record.
    Raises:
        UsageError / MobilenetEdgeError: the bundle's files are then left untouched.
    """
    bundle_dir = Path(bundle_dir)
    manifest = bdl.read_manifest(bundle_dir)
    src = bdl.model_file(bundle_dir)
    dst = bundle_dir / bdl.FILE_INT8
    if dst.exists() and not force:
        raise UsageError(f"{dst} exists; use --force to replace it")
    prep = Preprocessing.from_dict(manifest.get("preprocessing") or {})
    source = (manifest.get("weights") or {}).get("source")
    if calib is None and not synthetic and source == "random":
        synthetic = True
    if (calib is None or synthetic) and source != "random":
        raise UsageError(f"--calib DIR is required: {bundle_dir.name} has weights from {source or 'an unknown source'} "
                         "and int8 ranges must come from real images (synthetic calibration is for random weights)")
    rec = quantize_file(src, dst, prep, calib=calib, eval_dir=eval_dir, options=options, synthetic=synthetic,
                        labels_csv=labels_csv, debug_layers_=debug_layers, weights_source=source, progress=progress,
                        fold=fold)
    io = model_io(dst)
    fp_entry = (manifest.get("files") or {}).get(bdl.FILE_FP32, {})
    entry = {**bdl.file_record(dst), "format": "onnx", "precision": "int8", "quant_format": "QDQ",
             "opset": io["opset"], "ir_version": io["ir_version"],
             "input": fp_entry.get("input", io["input"]), "output": fp_entry.get("output", io["output"]),
             "size_ratio_vs_fp32": rec["size"]["ratio"]}
    manifest.setdefault("files", {})[bdl.FILE_INT8] = entry
    manifest["quantization"] = rec
    bdl.write_manifest(bundle_dir, manifest)
    return rec


def preprocessing_from_metadata(meta: dict) -> Preprocessing | None:
    """The ``preprocessing`` metadata_props entry of one of our ONNX files, if present."""
    raw = meta.get("preprocessing")
    if not raw:
        return None
    try:
        return Preprocessing.from_dict(json.loads(raw))
    except (ValueError, TypeError):
        return None


__all__ = [
    "METHODS", "check_quantizable", "collect_images", "OrtExtraOptions", "QuantOptions", "Preprocessing", "debug_layers", "decide_reduce_range",
    "detect_isa", "fidelity", "fidelity_table", "layers_table", "make_array_reader", "make_image_reader",
    "model_io", "quantize_bundle", "quantize_file", "quantize_model", "relu6_ranges", "replace",
    "resolve_labels", "split_paths", "sqnr_db", "synthetic_images",
]
