"""Per-channel int8 weight scales aligned to the weights' own grid (numpy + onnx only, no torch).

Weights imported from a quantization-aware trained TF-slim ``.tflite`` are the dequantized values of a
per-tensor uint8 grid ``(q - zp) * s`` (data README). ORT's per-channel int8 scale ``max|w_c| / 127`` puts
each channel on a different grid, so re-quantizing adds a rounding error as large as Google's own.
Choosing each channel's scale as ``s / m`` with the integer ``m = floor(127 / max|q_c - zp|)`` makes every
weight of that channel exact in symmetric int8 (ORT ``TensorQuantOverrides`` rmin/rmax per channel).
Channels whose integer range exceeds 127 keep the better (least squares) of ORT's scale and ``2 s``.
Issue #10 measured it (benchmarks/quant_fidelity.md); the ``grid`` and ``fidelity`` recipes use it, and so
does the ``.tflite`` export (:func:`grid_channel_rmax`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator

import numpy as np

#: max |integer| of a symmetric int8 weight grid: ORT quantizes symmetric QInt8 weights to [-127, 127]
#: (scale ``max|w| / 127``), or to [-64, 64] with ``reduce_range`` (onnxruntime quant_utils.py,
#: ONNX_INT_TYPE_SYMMETRIC_RANGE / ONNX_INT_TYPE_REDUCED_RANGE).
QMAX = 127
QMAX_REDUCED = 64


# ----------------------------------------------------------------------------------------------
# graph helpers (also used by bias_correction and benchmarks/research)
# ----------------------------------------------------------------------------------------------


def node_attr(node, name: str, default=None):
    """The value of attribute ``name`` of an ONNX node, or ``default``."""
    for a in node.attribute:
        if a.name == name:
            import onnx

            return onnx.helper.get_attribute_value(a)
    return default


def set_initializer(model, name: str, value: np.ndarray) -> None:
    """Replace initializer ``name`` of ``model`` by ``value`` (stored as float32). Raises KeyError if absent."""
    from onnx import numpy_helper

    for i, init in enumerate(model.graph.initializer):
        if init.name == name:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
            return
    raise KeyError(name)


def weight_nodes(model) -> Iterator[tuple]:
    """(node, weight initializer name, output-channel axis) for each Conv and Gemm with a constant weight."""
    inits = {i.name for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Conv" and n.input[1] in inits:
            yield n, n.input[1], 0
        elif n.op_type == "Gemm" and n.input[1] in inits:
            yield n, n.input[1], 0 if node_attr(n, "transB", 0) else 1


# ----------------------------------------------------------------------------------------------
# weight grids
# ----------------------------------------------------------------------------------------------


def weight_grid(w: np.ndarray, *, tol: float = 1e-3, max_levels: int = 1024) -> float | None:
    """The step ``s`` of a grid that holds every weight (``w / s`` integer to ``tol``), else None.

    Args:
        w: any-shape float weights, e.g. a dequantized uint8 tensor ``(q - zp) * s`` (TF-slim .tflite).
    Returns:
        ``s`` refined by least squares, or None when the weights are not on a grid of at most
        ``max_levels`` levels each side of 0 (trained float weights, random weights).
    """
    w = np.asarray(w, np.float64)
    mags = np.unique(np.abs(w[w != 0]))
    if mags.size == 0:
        return None
    steps = np.diff(np.concatenate([[0.0], mags]))
    d = float(steps[steps > 0].min())
    # the smallest gap is a multiple j * s of the grid step (few weights, e.g. a 3x3 depthwise channel).
    # It is only an estimate: float32 storage makes a gap between two large values off by up to ~1e-5 of
    # a step, which over 127 levels is more than ``tol``. So the integers come from a coarse match and the
    # step from least squares over all weights, then ``tol`` is checked.
    for j in range(1, 257):
        s = d / j
        k = np.round(w / s)
        if np.abs(k).max() > max_levels:
            return None
        if np.abs(w / s - k).max() <= 0.25:
            s = float((w * k).sum() / (k * k).sum())
            if np.abs(w / s - k).max() <= tol:
                return s
    return None


def grid_channel_rmax(w: np.ndarray, axis: int, *, qmax: int = QMAX) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel symmetric ranges that put each channel of ``w`` exactly on int8 when its grid allows.

    Channel ``c`` on a grid of step ``s`` (:func:`weight_grid` of the channel, else of the tensor) with
    integer range ``m_c = max |w_c / s|`` gets ``rmax = qmax s / floor(qmax / m_c)``: its scale
    ``rmax / qmax`` divides ``s`` and every weight is exact. If ``m_c > qmax``, the better in least squares
    of ``max|w_c|`` (ORT's and PyTorch's choice) and ``2 qmax s``.

    Args:
        w: float weights (any rank); ``axis`` is the output-channel axis.
    Returns:
        ``(rmax, exact)``: float64 ``(C,)`` ranges and a bool ``(C,)`` mask of exact channels, or None when
        the weights lie on no grid (trained float or random weights: leave them to the quantizer).
    """
    w = np.asarray(w, np.float64)
    s = weight_grid(w)
    wc = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    per_ch = [weight_grid(c) for c in wc]
    if s is None and any(g is None for g in per_ch):
        return None
    rmax, exact = np.zeros(len(wc)), np.zeros(len(wc), bool)
    for i, (c, sc) in enumerate(zip(wc, per_ch)):
        s_c = sc if sc is not None else s  # a channel's own grid may be coarser (e.g. after equalization)
        m = float(np.abs(np.round(c / s_c)).max())
        if m == 0:
            rmax[i] = qmax * s_c
        elif m <= qmax:
            rmax[i], exact[i] = qmax * s_c / math.floor(qmax / m), True
        else:
            cands = [float(np.abs(c).max())] + ([qmax * 2 * s_c] if m <= 2 * qmax else [])
            errs = [float(np.square(c - np.clip(np.round(c / (r / qmax)), -qmax, qmax) * (r / qmax)).sum()) for r in cands]
            rmax[i] = cands[int(np.argmin(errs))]
    return rmax, exact


def grid_weight_overrides(model, *, reduce_range: bool = False) -> tuple[dict, dict]:
    """ORT ``TensorQuantOverrides`` giving per-channel symmetric int8 scales aligned to each weight's grid.

    For every Conv/Gemm weight whose channels are each on a grid, the ranges of :func:`grid_channel_rmax`
    (each weight of a channel with integer range up to 127 is exact). Weights off any grid are left to
    ORT. With ``reduce_range`` (7-bit weights, ORT's advice for x86 without VNNI) 127 becomes 64 and far
    fewer channels can be exact.

    Returns:
        (overrides ``{weight name: [{"axis", "rmin", "rmax"}, {"rmin", "rmax"}, ...]}``,
        record ``{"tensors_on_grid", "tensors", "channels_exact", "channels", "weights_exact_fraction"}``).
    """
    from onnx import numpy_helper

    qmax = QMAX_REDUCED if reduce_range else QMAX
    inits = {i.name: i for i in model.graph.initializer}
    ov: dict = {}
    rec = Counter()
    for _n, name, axis in weight_nodes(model):
        w = numpy_helper.to_array(inits[name]).astype(np.float64)
        rec["tensors"] += 1
        rec["channels"] += w.shape[axis]
        rec["weights"] += w.size
        got = grid_channel_rmax(w, axis, qmax=qmax)
        if got is None:
            continue
        rmax, exact = got
        rec["tensors_on_grid"] += 1
        rec["channels_exact"] += int(exact.sum())
        rec["weights_exact"] += int(exact.sum()) * (w.size // w.shape[axis])
        chans = [{"rmin": -float(r), "rmax": float(r)} for r in rmax]
        chans[0] = {"axis": axis, **chans[0]}
        ov[name] = chans
    record = {k: int(rec[k]) for k in ("tensors_on_grid", "tensors", "channels_exact", "channels")}
    record["weights_exact_fraction"] = rec["weights_exact"] / rec["weights"] if rec["weights"] else 0.0
    record["qmax"] = qmax
    return ov, record


__all__ = ["QMAX", "QMAX_REDUCED", "grid_channel_rmax", "grid_weight_overrides", "node_attr", "set_initializer",
           "weight_grid", "weight_nodes"]
