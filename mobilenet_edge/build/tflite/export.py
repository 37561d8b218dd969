"""PyTorch MobileNet V1 -> LiteRT ``.tflite`` through ``litert-torch`` (no TensorFlow): fp32, and int8
static post-training quantization (PT2E) with per-channel weights, calibrated on images, by the same
recipes as the ONNX path (default ``fidelity``: the first two convs float; ``--float-first 0``: full integer).

Torch side (needs the ``tflite-export`` extra)::

    pip install 'mobilenet-edge[tflite-export]' torch==2.13.0   # pin torch in the same command

Graph input is NHWC by default: the model is wrapped with a ``permute`` so a camera frame (H, W, 3) is
fed without a transpose; litert-torch's layout pass propagates NHWC through the net, so the fp32 graph
holds no TRANSPOSE op at all (27 convs, MEAN, FULLY_CONNECTED) and TF-'SAME' pads fold into the convs.

Arrays given as ``calib`` / ``check`` are the output of :func:`mobilenet_edge.core.images.preprocess` with
``Preprocessing(res=res)`` (float32, ``(pixel - 127.5) / 127.5``, central crop 0.875, bilinear), in
either layout: ``(3, res, res)`` / ``(N, 3, res, res)`` (NCHW, the default ``Preprocessing`` layout, the
same arrays the ONNX path uses) or ``(res, res, 3)`` / ``(N, res, res, 3)`` (NHWC). They are transposed
to the graph's layout here.

int8 recipes: static post-training quantization (PT2E, litert-torch's ``PT2EQuantizer``): int8 weights,
symmetric, per output channel; int8 activations per tensor with ranges observed on ``calib``. The
``recipe`` names mean what they mean for ONNX (:mod:`mobilenet_edge.quantize.recipes`, docs/fidelity.md):
``plain`` = the quantizer's own scales; ``grid`` = grid-aligned weight scales (:func:`.pt2e.make_quantizer`);
``fidelity`` (default) = ``grid`` + bias correction of the weight rounding left
(:func:`.pt2e.weight_bias_correct`) + the first ``float_first`` convs (2) in float, so the input is
float32. With 0 float convs the file is full integer (int8 input and output, as accelerators need).
The recipes' float logits have no .tflite form (the int8 FULLY_CONNECTED has no float output; a float
classifier would store its weights in float32, doubling the file): the output is int8. Grid alignment
(Google's weights: exact int8 weights, +6.5 dB logits SQNR at 0.5/160) needs ``per_channel``. Measured
with Google's weights (benchmarks/tflite_recipes.md, 2-fold, mean over images): ``fidelity`` adds +2.6
to +4.1 dB logits SQNR over ``grid``.

Checks, run on :class:`mobilenet_edge.runtime.runner.Runner`: the fp32 file must match PyTorch
(:func:`mobilenet_edge.build.parity.check_tflite_parity`) on every ``check`` array plus ``N_RANDOM``
seeded random inputs; the int8 file's fidelity against PyTorch fp32 (top-1 agreement, logits SQNR in dB,
max |diff|) is measured on ``check`` when given, else on ``calib``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...core import bundle
from ...core.errors import MobilenetEdgeError, UsageError
from ...core.versions import TFLITE_TOOLS, versions
from ...quantize.recipes import Recipe, get_recipe
from ...runtime.runner import Runner
from ..parity import check_tflite_parity
from .layout import NHWCInput, batches, random_inputs
from .litert import import_litert_torch, nhwc_constant_pads, quiet_litert_torch
from .pt2e import grid_record, quantize_pt2e, weight_bias_correct
from .records import fidelity_record, io_record, op_counts

PARITY_TOLERANCE = 1e-4  # max |logit diff| fp32 .tflite vs PyTorch (issue #9)
N_RANDOM = 3  # seeded random inputs added to every parity check (uniform in [-1, 1], the input range)
EXPORTER = "litert-torch"


@dataclass
class _Plan:
    """The checked arguments of one :func:`export_tflite` call (arrays in the graph layout, batch 1 each)."""

    res: int
    int8: bool
    nhwc: bool
    tolerance: float
    per_channel: bool
    recipe: Recipe
    float_first: int
    weight_grid: bool
    calib: list[np.ndarray]
    check: list[np.ndarray]


def export_tflite(
    model: nn.Module,
    dst: str | Path,
    *,
    res: int,
    int8: bool = False,
    calib: Iterable[np.ndarray] | None = None,
    nhwc: bool = True,
    check: Iterable[np.ndarray] | None = None,
    tolerance: float = PARITY_TOLERANCE,
    per_channel: bool = True,
    recipe: str = "fidelity",
    float_first: int | None = None,
) -> dict:
    """Convert a PyTorch classifier to ``dst`` (``model.tflite`` / ``model.int8.tflite``) with litert-torch.

    Steps: check the arguments, convert (int8: bias correction, PT2E calibration), write the file to a
    temp name, check it (fp32 parity / int8 fidelity, see the module docstring), rename it into place.

    Args:
        model: an NCHW classifier (``MobileNetV1``) taking (N, 3, res, res) float32. An eval-mode copy
            is converted; ``model`` itself is not modified.
        dst: output file; written atomically. An existing ``dst`` is left untouched on any failure.
        res: input side in pixels (the graph is static: batch 1, res x res).
        int8: quantize (needs ``calib``).
        calib: calibration arrays, preprocessed as the module docstring says (NCHW or NHWC, (3,res,res)
            or (N,3,res,res) float32 in [-1, 1]); real images, e.g. ``images.iter_batches`` over
            ../shared/data/imagenet-calib. Consumed once.
        nhwc: graph input (res, res, 3) channels-last (default) instead of (3, res, res).
        check: arrays for the parity/fidelity check (same format as ``calib``), e.g. real photos.
        tolerance: fp32 parity tolerance on logits (default 1e-4, issue #9).
        per_channel: per-output-channel weight scales (default) instead of per-tensor.
        recipe: ``plain`` | ``grid`` | ``fidelity`` (module docstring).
        float_first: convs kept in float, overriding the recipe's (``fidelity``: 2, else 0).
    Returns:
        A record for ``manifest.json["files"][name]``: file, format, precision, sha256, size, input and
        output (name, shape, dtype, layout, quantization {scale, zero_point} or None), exporter,
        tool_versions, op_counts, then ``parity`` (fp32) or ``quantization`` (int8), then seconds.
    Raises:
        UsageError: bad arguments (int8 without calib, arrays of the wrong shape).
        ParityError: fp32 output differs from PyTorch beyond ``tolerance`` or in top-1.
        MobilenetEdgeError: litert-torch missing, or the converter failed (message carries its error).
    """
    plan = _plan(res=res, int8=int8, calib=calib, nhwc=nhwc, check=check, tolerance=tolerance,
                 per_channel=per_channel, recipe=recipe, float_first=float_first)
    litert_torch = import_litert_torch()
    dst = Path(dst)
    t0 = time.perf_counter()
    module = NHWCInput(copy.deepcopy(model).eval(), nhwc=nhwc).eval()
    sample = torch.from_numpy((plan.calib or plan.check or random_inputs(1, res=res, nhwc=nhwc))[0])
    edge, bias_rec, grid_stats = _convert(litert_torch, module, sample, plan)
    with bundle.atomic_path(dst) as tmp:
        with quiet_litert_torch():
            edge.export(str(tmp))
        runner = Runner(tmp, threads=1)
        if plan.int8:
            checked = {"quantization": _quant_record(module, runner, plan, bias_rec, grid_stats)}
        else:
            inputs = plan.check + random_inputs(N_RANDOM, res=res, nhwc=nhwc)
            checked = {"parity": check_tflite_parity(module, runner, inputs, tolerance=plan.tolerance,
                                                     n_images=len(plan.check))}
        rec = {
            "file": dst.name,
            "format": "tflite",
            "precision": "int8" if int8 else "fp32",
            **bundle.file_record(tmp),
            "input": io_record(runner, layout="NHWC" if nhwc else "NCHW"),
            "output": io_record(runner, output=True),
            "exporter": EXPORTER,
            "tool_versions": versions(TFLITE_TOOLS),
            "op_counts": op_counts(tmp),
        }
        del runner
    return {**rec, **checked, "seconds": round(time.perf_counter() - t0, 3)}


def _plan(*, res: int, int8: bool, calib, nhwc: bool, check, tolerance: float, per_channel: bool, recipe: str,
          float_first: int | None) -> _Plan:
    """Check :func:`export_tflite`'s arguments (in this order) and bring the arrays to the graph layout.

    Raises:
        UsageError: res < 32, unknown recipe, float_first < 0, tolerance < 0, arrays of the wrong
            shape, int8 without calibration arrays.
    """
    if res < 32:
        raise UsageError(f"res must be >= 32, got {res}")
    try:
        rcp = get_recipe(recipe)
    except ValueError as e:
        raise UsageError(str(e)) from None
    n_float = rcp.float_first if float_first is None else float_first
    if n_float < 0:
        raise UsageError(f"float_first must be >= 0, got {n_float}")
    if tolerance < 0:
        raise UsageError(f"tolerance must be >= 0, got {tolerance}")
    calib_list = batches(calib, res=res, nhwc=nhwc, what="calibration array")
    if int8 and not calib_list:
        raise UsageError("int8 export needs calibration images (calib), none given")
    check_list = batches(check, res=res, nhwc=nhwc, what="check array")
    return _Plan(res=res, int8=int8, nhwc=nhwc, tolerance=tolerance, per_channel=per_channel, recipe=rcp,
                 float_first=n_float, weight_grid=rcp.weight_grid and per_channel, calib=calib_list,
                 check=check_list)


def _convert(litert_torch, module: nn.Module, sample: torch.Tensor, plan: _Plan):
    """litert-torch conversion of ``module`` (int8: bias-corrected copy, PT2E-calibrated on ``plan.calib``).

    Returns:
        (edge model with ``.export(path)``, bias-correction record or None, grid observer stats).
    Raises:
        MobilenetEdgeError: the converter failed.
    """
    bias_rec, grid_stats = None, {}
    with quiet_litert_torch(), nhwc_constant_pads():
        try:
            if not plan.int8:
                return litert_torch.convert(module, (sample,)), None, grid_stats
            qsrc = copy.deepcopy(module)
            if plan.recipe.weight_bias_correction and plan.weight_grid:
                bias_rec = weight_bias_correct(qsrc, plan.calib, skip_convs=plan.float_first)
                if not bias_rec["layers"]:
                    bias_rec = None  # weights on no grid (random, float-trained): nothing was corrected
            qmodule, quantizer = quantize_pt2e(
                qsrc, sample, plan.calib, per_channel=plan.per_channel, weight_grid=plan.weight_grid,
                grid_stats=grid_stats, float_first=plan.float_first,
            )
            from litert_torch.quantize.quant_config import QuantConfig

            edge = litert_torch.convert(qmodule, (sample,), quant_config=QuantConfig(pt2e_quantizer=quantizer))
            return edge, bias_rec, grid_stats
        except (RuntimeError, ValueError, TypeError, NotImplementedError, AssertionError) as e:
            raise MobilenetEdgeError(f"litert-torch conversion failed: {type(e).__name__}: {e}") from e


def _quant_record(module: nn.Module, runner: Runner, plan: _Plan, bias_rec: dict | None, grid_stats: dict) -> dict:
    """``files[model.int8.tflite]["quantization"]``: method, fidelity vs PyTorch fp32 (on the check arrays,
    else the calibration ones), calibration, recipe, weight grid and bias correction."""
    data = plan.check if plan.check else plan.calib
    rec = fidelity_record(module, runner, data, per_channel=plan.per_channel, float_first=plan.float_first)
    rec["calibration"] = {"n_images": len(plan.calib), "observer": "HistogramObserver"}
    rec["recipe"] = {**plan.recipe.to_dict(), "weight_grid": plan.weight_grid, "float_first": plan.float_first,
                     "float_logits": False, "weight_bias_correction": bias_rec is not None}
    rec["weight_grid"] = {"enabled": plan.weight_grid, **(grid_record(grid_stats) if plan.weight_grid else {})}
    if bias_rec is not None:
        rec["bias_correction"] = bias_rec
    rec["fidelity"]["data"] = "check" if plan.check else "calibration"
    return rec
