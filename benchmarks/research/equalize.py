"""Research code measured for issue #10 and not kept (benchmarks/quant_fidelity.md has the table): cross-layer
equalization and empirical bias correction of activation errors. Not part of the package; used by
benchmarks/quant_fidelity.py and tested by tests/test_equalize.py (which puts benchmarks/ on sys.path).

- :func:`cross_layer_equalize`: cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization
  Through Weight Equalization and Bias Correction", arXiv:1906.04721, sec. 4.1) of each
  ``Conv -> Clip(0, 6) -> depthwise Conv`` pair, with the scales from the weight ranges (the paper's
  ``s_i = sqrt(r1_i r2_i) / r2_i``) or from calibrated activation ranges (Meller et al. 2019, "Same, Same
  But Different: Recovering Neural Network Quantization Error Through Weight Factorization",
  arXiv:1902.01917). ReLU6 is not positively homogeneous (``relu6(x / s) != relu6(x) / s``), so the Clip
  of an equalized pair becomes ``Min(Relu(x), 6 / s)`` with a per-channel bound: the fp32 graph stays
  numerically equivalent (tests/test_equalize.py checks max |logit diff| <= 1e-4). Only pairs whose
  consumer is depthwise are equalized: scaling a depthwise channel keeps it on a per-channel grid.
- :func:`bias_correct`: empirical bias correction (Nagel et al. 2019, sec. 4.2, the data-driven
  variant): ``b += W E[x - x_q]`` per output channel, with ``x`` the fp32 input of each Conv/Gemm and
  ``x_q`` the int8 model's dequantized input, means over calibration images and pixels.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from mobilenet_edge.core.onnx_graph import constants as _consts
from mobilenet_edge.quantize.bias_correction import run_tensors
from mobilenet_edge.quantize.weight_grid import node_attr, set_initializer, weight_nodes

# ----------------------------------------------------------------------------------------------
# cross-layer equalization
# ----------------------------------------------------------------------------------------------


def equalization_pairs(model) -> list[dict]:
    """``Conv A -> Clip(0, hi) | Relu -> depthwise Conv B`` chains where each tensor has one consumer.

    Returns:
        ``[{"a": node A, "act": activation node, "b": node B, "hi": float (inf for Relu)}]`` in graph order.
    """
    consts = _consts(model)
    consumers = Counter(x for n in model.graph.node for x in n.input)
    graph_out = {o.name for o in model.graph.output}
    by_input: dict[str, list] = {}
    for n in model.graph.node:
        for x in n.input:
            by_input.setdefault(x, []).append(n)
    inits = {i.name: i for i in model.graph.initializer}
    pairs = []
    for a in model.graph.node:
        if a.op_type != "Conv" or a.input[1] not in inits or a.output[0] in graph_out:
            continue
        if consumers[a.output[0]] != 1:
            continue
        act = by_input[a.output[0]][0]
        if act.op_type == "Clip":
            lo = float(consts[act.input[1]]) if len(act.input) > 1 and act.input[1] in consts else None
            hi = float(consts[act.input[2]]) if len(act.input) > 2 and act.input[2] in consts else None
            if lo != 0.0 or hi is None:
                continue
        elif act.op_type == "Relu":
            hi = math.inf
        else:
            continue
        if consumers[act.output[0]] != 1 or act.output[0] in graph_out:
            continue
        b = by_input[act.output[0]][0]
        if b.op_type != "Conv" or b.input[1] not in inits:
            continue
        wb = inits[b.input[1]]
        group = node_attr(b, "group", 1)
        if group == 1 or wb.dims[1] != 1 or group != wb.dims[0]:
            continue  # not depthwise (one input channel per group, one output per channel)
        pairs.append({"a": a, "act": act, "b": b, "hi": hi})
    return pairs


def cross_layer_equalize(
    model,
    *,
    act_max: dict[str, np.ndarray] | None = None,
    max_scale: float = 16.0,
    headroom: float = 1.0,
) -> tuple[object, dict]:
    """Equalize every :func:`equalization_pairs` pair; returns a new model (the input is not modified).

    Channel ``c`` of A's output is divided by ``s_c`` and B's channel ``c`` weights multiplied by ``s_c``;
    the activation between becomes ``Min(Relu(x), hi / s_c)`` (per-channel bound) so that
    ``B'(f'(A'x)) == B(f(Ax))`` exactly in real arithmetic.

    Args:
        model: fp32 ``onnx.ModelProto``.
        act_max: per activation tensor (the Clip output name) the per-channel max observed on
            calibration data, shape (C,): scales ``s_c = max_c / max(max)`` stretch every channel to the
            tensor's range (Meller et al. 2019). None: data-free weight ranges (Nagel et al. 2019,
            eq. 9: ``s_c = sqrt(r1_c r2_c) / r2_c``, ``r`` = max |w| of the channel).
        max_scale: ``1 / s_c`` and ``s_c`` are clipped to [1 / max_scale, max_scale].
        headroom: with ``act_max``, ``s_c = min(1, headroom * max_c / max(max))``: a channel may exceed
            its calibrated max by this factor before the tensor's int8 range clips it.
    Returns:
        (equalized model, record ``{"pairs", "mode", "scale_min", "scale_max"}``).
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    pairs = equalization_pairs(model)
    smin, smax = math.inf, 0.0
    new_nodes = {}
    for p in pairs:
        a, act, b = p["a"], p["act"], p["b"]
        wa, wb = inits[a.input[1]].astype(np.float64), inits[b.input[1]].astype(np.float64)
        r1 = np.abs(wa).reshape(wa.shape[0], -1).max(1)
        r2 = np.abs(wb).reshape(wb.shape[0], -1).max(1)
        if act_max is not None and act.output[0] in act_max:
            m = np.asarray(act_max[act.output[0]], np.float64)
            s = np.where(m > 0, np.minimum(headroom * m / max(m.max(), 1e-30), 1.0), 1.0)
        else:
            s = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 * r2) / np.maximum(r2, 1e-30), 1.0)
        s = np.clip(s, 1.0 / max_scale, max_scale)
        smin, smax = min(smin, float(s.min())), max(smax, float(s.max()))
        shape_a = (-1,) + (1,) * (wa.ndim - 1)
        set_initializer(model, a.input[1], wa / s.reshape(shape_a))
        if len(a.input) > 2 and a.input[2]:
            set_initializer(model, a.input[2], inits[a.input[2]].astype(np.float64) / s)
        set_initializer(model, b.input[1], wb * s.reshape((-1,) + (1,) * (wb.ndim - 1)))
        # activation: Relu then per-channel Min (hi / s); Relu alone when unbounded
        relu_out = f"{act.output[0]}_eq_relu"
        nodes = [onnx.helper.make_node("Relu", [act.input[0]], [relu_out if math.isfinite(p["hi"]) else act.output[0]],
                                       name=f"{act.name}_eq_relu")]
        if math.isfinite(p["hi"]):
            bound = f"{act.output[0]}_eq_bound"
            model.graph.initializer.append(numpy_helper.from_array(
                (p["hi"] / s).astype(np.float32).reshape(1, -1, 1, 1), bound))
            nodes.append(onnx.helper.make_node("Min", [relu_out, bound], [act.output[0]], name=f"{act.name}_eq_min"))
        new_nodes[id(act)] = nodes
    out = []
    for n in model.graph.node:
        out.extend(new_nodes.get(id(n), [n]))
    del model.graph.node[:]
    model.graph.node.extend(out)
    _drop_unused_constants(model)
    mode = "activations" if act_max is not None else "weights"
    return model, {"pairs": len(pairs), "mode": mode, "scale_min": smin if pairs else None,
                   "scale_max": smax if pairs else None, "max_scale": max_scale,
                   "headroom": headroom if act_max is not None else None}


def _drop_unused_constants(model) -> None:
    used = {x for n in model.graph.node for x in n.input} | {o.name for o in model.graph.output}
    keep = [n for n in model.graph.node if n.op_type != "Constant" or n.output[0] in used]
    del model.graph.node[:]
    model.graph.node.extend(keep)
    inits = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)


def activation_channel_max(model, x: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel max (C,) of each equalization pair's activation output over calibration inputs ``x``."""
    names = [p["act"].output[0] for p in equalization_pairs(model)]
    t = run_tensors(model, names, x)
    return {nm: np.max([v.max(axis=(0, 2, 3)) for v in vs], axis=0) for nm, vs in t.items()}


# ----------------------------------------------------------------------------------------------
# bias correction
# ----------------------------------------------------------------------------------------------


def _dq_input_of(qmodel) -> dict[str, str]:
    """int8 QDQ model: fp32 tensor name -> the DequantizeLinear output that replaces it as a Conv/Gemm input."""
    q_in = {n.output[0]: n.input[0] for n in qmodel.graph.node if n.op_type == "QuantizeLinear"}
    dq = {n.output[0]: n.input[0] for n in qmodel.graph.node if n.op_type == "DequantizeLinear"}
    out = {}
    for n in qmodel.graph.node:
        if n.op_type in ("Conv", "Gemm") and n.input[0] in dq and dq[n.input[0]] in q_in:
            out[q_in[dq[n.input[0]]]] = n.input[0]
    return out


def _dq_params(qmodel) -> dict[str, tuple[float, int, int, int]]:
    """DequantizeLinear output -> (scale, zero point, qmin, qmax) for per-tensor activations."""
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in qmodel.graph.initializer}
    out = {}
    for n in qmodel.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[1] in inits and inits[n.input[1]].size == 1:
            zp = inits[n.input[2]] if len(n.input) > 2 and n.input[2] in inits else np.zeros((), np.uint8)
            info = np.iinfo(zp.dtype)
            out[n.output[0]] = (float(inits[n.input[1]]), int(zp), int(info.min), int(info.max))
    return out


def _fake_quant(v: np.ndarray, scale: float, zp: int, qmin: int, qmax: int) -> np.ndarray:
    return (np.clip(np.round(v / scale) + zp, qmin, qmax) - zp) * scale


def bias_correct(fp32_model, int8_model, x: np.ndarray, *, local: bool = False) -> tuple[object, dict]:
    """Empirical bias correction (Nagel et al. 2019, sec. 4.2): ``b += W E[x - x_q]`` for each Conv/Gemm.

    ``x`` is the input of the layer in ``fp32_model`` and ``x_q`` the dequantized input of the same layer
    in ``int8_model`` (QDQ, quantized from ``fp32_model``); expectations over the calibration images
    ``x`` (N, 3, H, W) float32 and, per input channel, over pixels (border effects of padding ignored).
    All layers are corrected at once from one pass (the paper corrects layer by layer), so with
    ``local=False`` the accumulated upstream error is corrected again at every layer; ``local=True``
    uses only the error of the layer's own input quantizer (``x_q = fake_quant(x)`` with the int8
    model's scale and zero point), which one pass corrects consistently.

    Returns:
        (new fp32 model with corrected biases, record ``{"layers", "max_abs_shift"}``). Quantize it with
        the same calibration ranges to get the corrected int8 model.
    """
    import onnx
    from onnx import numpy_helper

    dq_of = _dq_input_of(int8_model)
    layers = [(n, name, axis) for n, name, axis in weight_nodes(fp32_model) if n.input[0] in dq_of and len(n.input) > 2]
    if not layers:
        return fp32_model, {"layers": 0, "max_abs_shift": 0.0}
    fx = run_tensors(fp32_model, [n.input[0] for n, _, _ in layers], x)
    if local:
        qp = _dq_params(int8_model)
        qx = {dq_of[n.input[0]]: [_fake_quant(v, *qp[dq_of[n.input[0]]]) for v in fx[n.input[0]]] for n, _, _ in layers}
    else:
        qx = run_tensors(int8_model, [dq_of[n.input[0]] for n, _, _ in layers], x)
    model = onnx.ModelProto.FromString(fp32_model.SerializeToString())
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    worst = 0.0
    for n, wname, _axis in layers:
        f = np.concatenate(fx[n.input[0]]).astype(np.float64)
        q = np.concatenate(qx[dq_of[n.input[0]]]).astype(np.float64)
        d = f - q
        e = d.mean(axis=(0, 2, 3)) if d.ndim == 4 else d.mean(axis=0)  # (C_in,)
        w = inits[wname].astype(np.float64)
        if n.op_type == "Gemm":
            shift = (w @ e) if node_attr(n, "transB", 0) else (e @ w)
        else:
            group = node_attr(n, "group", 1)
            wsum = w.sum(axis=(2, 3))  # (C_out, C_in / group)
            if group == 1:
                shift = wsum @ e
            else:
                cin_g, cout_g = w.shape[1], w.shape[0] // group
                eg = e.reshape(group, cin_g)
                shift = np.einsum("goi,gi->go", wsum.reshape(group, cout_g, cin_g), eg).reshape(-1)
        set_initializer(model, n.input[2], inits[n.input[2]].astype(np.float64) + shift)
        worst = max(worst, float(np.abs(shift).max()))
    return model, {"layers": len(layers), "max_abs_shift": worst}


__all__ = ["activation_channel_max", "bias_correct", "cross_layer_equalize", "equalization_pairs"]
