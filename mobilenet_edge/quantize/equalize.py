"""Training-free fp32 graph transforms that make int8 agree better with fp32 (numpy + onnx only).

All functions take and return ``onnx.ModelProto`` objects of the exported fp32 graph (Conv + Clip(0, 6) +
GlobalAveragePool + Flatten + Gemm, docs/bundle-format.md) and never import torch: they run on the quantize
side (a Raspberry Pi included). Issue #10 measured each of them; benchmarks/quant_fidelity.md has the table.

- :func:`weight_grid` / :func:`grid_weight_overrides`: weights imported from a quantization-aware trained
  TF-slim ``.tflite`` are the dequantized values of a per-tensor uint8 grid ``(q - zp) * s`` (data README).
  ORT's per-channel int8 scale ``max|w_c| / 127`` puts each channel on a different grid, so re-quantizing
  adds a rounding error as large as Google's own. Choosing each channel's scale as ``s / m`` with the
  integer ``m = floor(127 / max|q_c - zp|)`` makes every weight of that channel exact in symmetric int8
  (ORT ``TensorQuantOverrides`` rmin/rmax per channel). Channels whose integer range exceeds 127 keep
  the better (least squares) of ORT's scale and ``2 s``.
- :func:`cross_layer_equalize`: cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization
  Through Weight Equalization and Bias Correction", arXiv:1906.04721, sec. 4.1) of each
  ``Conv -> Clip(0, 6) -> depthwise Conv`` pair, with the scales from the weight ranges (the paper's
  ``s_i = sqrt(r1_i r2_i) / r2_i``) or from calibrated activation ranges (Meller et al. 2019, "Same, Same
  But Different: Recovering Neural Network Quantization Error Through Weight Factorization",
  arXiv:1902.01917). ReLU6 is not positively homogeneous (``relu6(x / s) != relu6(x) / s``), so the Clip
  of an equalized pair becomes ``Min(Relu(x), 6 / s)`` with a per-channel bound: the fp32 graph stays
  numerically equivalent (tests/test_equalize.py checks max |logit diff| <= 1e-4). Only pairs whose
  consumer is depthwise are equalized: scaling a depthwise channel keeps it on a per-channel grid.
- :func:`weight_bias_correct` (kept): the bias correction of Nagel et al. 2019 (sec. 4.2) for the weight
  rounding error that remains after grid alignment (channels whose integer range exceeds 127):
  ``b += (W - W_q) E[x]`` with ``E[x]`` the per-channel mean of the layer input on calibration images.
- :func:`bias_correct` (measured, not kept): empirical bias correction (Nagel et al. 2019, sec. 4.2, the data-driven
  variant): ``b += W E[x - x_q]`` per output channel, with ``x`` the fp32 input of each Conv/Gemm and
  ``x_q`` the int8 model's dequantized input, means over calibration images and pixels.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator

import numpy as np

from ..core.onnx_graph import constants as _consts
from ..core.sessions import ort_session

#: max |integer| of a symmetric int8 weight grid: ORT quantizes symmetric QInt8 weights to [-127, 127]
#: (scale ``max|w| / 127``), or to [-64, 64] with ``reduce_range`` (onnxruntime quant_utils.py,
#: ONNX_INT_TYPE_SYMMETRIC_RANGE / ONNX_INT_TYPE_REDUCED_RANGE).
QMAX = 127
QMAX_REDUCED = 64


# ----------------------------------------------------------------------------------------------
# graph helpers
# ----------------------------------------------------------------------------------------------


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            import onnx

            return onnx.helper.get_attribute_value(a)
    return default


def _set_init(model, name: str, value: np.ndarray) -> None:
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
            yield n, n.input[1], 0 if _attr(n, "transB", 0) else 1


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
        group = _attr(b, "group", 1)
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
        _set_init(model, a.input[1], wa / s.reshape(shape_a))
        if len(a.input) > 2 and a.input[2]:
            _set_init(model, a.input[2], inits[a.input[2]].astype(np.float64) / s)
        _set_init(model, b.input[1], wb * s.reshape((-1,) + (1,) * (wb.ndim - 1)))
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


# ----------------------------------------------------------------------------------------------
# running intermediate tensors (ORT)
# ----------------------------------------------------------------------------------------------


def run_tensors(model, names: list[str], x: np.ndarray, *, batch: int = 10) -> dict[str, list[np.ndarray]]:
    """Run ``model`` (ModelProto) on ``x`` (N, 3, H, W) float32 with ``names`` added as outputs.

    Returns:
        ``{name: [array per batch]}`` (float32).
    """
    import onnx

    m = onnx.ModelProto.FromString(model.SerializeToString())
    have = {o.name for o in m.graph.output}
    for nm in names:
        if nm not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(nm))
    s = ort_session(m.SerializeToString(), optimize=False)  # keep every named tensor
    iname = s.get_inputs()[0].name
    out: dict[str, list] = {nm: [] for nm in names}
    for i in range(0, len(x), batch):
        for nm, v in zip(names, s.run(names, {iname: np.ascontiguousarray(x[i:i + batch], np.float32)})):
            out[nm].append(v)
    return out


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
            shift = (w @ e) if _attr(n, "transB", 0) else (e @ w)
        else:
            group = _attr(n, "group", 1)
            wsum = w.sum(axis=(2, 3))  # (C_out, C_in / group)
            if group == 1:
                shift = wsum @ e
            else:
                cin_g, cout_g = w.shape[1], w.shape[0] // group
                eg = e.reshape(group, cin_g)
                shift = np.einsum("goi,gi->go", wsum.reshape(group, cout_g, cin_g), eg).reshape(-1)
        _set_init(model, n.input[2], inits[n.input[2]].astype(np.float64) + shift)
        worst = max(worst, float(np.abs(shift).max()))
    return model, {"layers": len(layers), "max_abs_shift": worst}


def input_channel_means(model, names: list[str], batches) -> dict[str, np.ndarray]:
    """Per-channel mean (C,) float64 of tensors ``names`` over images and pixels, streaming ``batches``
    ((n, 3, H, W) float32 arrays, or one array): memory is one batch of activations."""
    if isinstance(batches, np.ndarray):
        batches = [batches[i : i + 16] for i in range(0, len(batches), 16)]
    sums: dict[str, np.ndarray] = {}
    count = 0
    for b in batches:
        t = run_tensors(model, names, np.asarray(b, np.float32), batch=len(b))
        for nm, vs in t.items():
            v = vs[0].astype(np.float64)
            m = v.sum(axis=(0, 2, 3)) / (v.shape[2] * v.shape[3]) if v.ndim == 4 else v.sum(axis=0)
            sums[nm] = sums.get(nm, 0.0) + m
        count += len(b)
    if count == 0:
        raise ValueError("no calibration input for the channel means")
    return {nm: v / count for nm, v in sums.items()}


def rounding_shift(err: np.ndarray, mean: np.ndarray, *, groups: int = 1) -> np.ndarray:
    """Mean output shift ``(C_out,)`` of a conv / fully-connected layer whose weights are off by ``err``,
    given the per-channel mean ``mean`` ``(C_in,)`` of its input: ``sum_{i,k} err[o, i, k] E[x_i]``
    (padding borders ignored). ``err``: ``(C_out, C_in / groups, kh, kw)`` or ``(C_out, C_in)``. Shared by
    the ONNX recipe and the .tflite export (``tflite_export.weight_bias_correct``)."""
    if err.ndim == 2:
        return err @ mean
    cout_g, cin_g = err.shape[0] // groups, err.shape[1]
    esum = err.sum(axis=(2, 3)).reshape(groups, cout_g, cin_g)
    return np.einsum("goi,gi->go", esum, mean.reshape(groups, cin_g)).reshape(-1)


def weight_bias_correct(model, overrides: dict, x, *, reduce_range: bool = False) -> tuple[object, dict]:
    """Bias correction of the weight rounding error only (Nagel et al. 2019, sec. 4.2, with the expectation
    of the layer input measured on calibration data): ``b += (W - W_q) E[x]`` per output channel.

    ``W_q`` is what ORT makes of ``W`` with the per-channel symmetric ``overrides`` (scale ``rmax / qmax``,
    round, clip to [-qmax, qmax]); layers without overrides are left alone (their error is unknown here).
    ``E[x]``: per input channel mean over images and pixels of the layer's fp32 input (``x``: (N, 3, H, W)
    float32 calibration inputs, or an iterable of such batches: :func:`input_channel_means`). Exact
    weights (grid-aligned channels) give no correction. Layers kept in float must not be in
    ``overrides`` (their weights are not rounded). Measured: +0.6 to +2.7 dB logits SQNR on Google's
    weights with the grid-aligned scales (benchmarks/quant_fidelity.md).

    Returns:
        (new model, record ``{"layers", "max_abs_shift"}``).
    """
    import onnx
    from onnx import numpy_helper

    qmax = QMAX_REDUCED if reduce_range else QMAX
    layers = [(n, name, axis) for n, name, axis in weight_nodes(model) if name in overrides and len(n.input) > 2]
    if not layers:
        return model, {"layers": 0, "max_abs_shift": 0.0}
    means = input_channel_means(model, sorted({n.input[0] for n, _, _ in layers}), x)
    out = onnx.ModelProto.FromString(model.SerializeToString())
    inits = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}
    worst = 0.0
    for n, name, axis in layers:
        w = inits[name].astype(np.float64)
        rmax = np.array([abs(c["rmax"]) for c in overrides[name]], np.float64)
        scale = (rmax / qmax).reshape((-1,) + (1,) * (w.ndim - 1)) if axis == 0 else (rmax / qmax)[None, :]
        err = w - np.clip(np.round(w / scale), -qmax, qmax) * scale
        e = means[n.input[0]]
        if n.op_type == "Gemm":
            shift = rounding_shift(err if _attr(n, "transB", 0) else err.T, e)
        else:
            shift = rounding_shift(err, e, groups=_attr(n, "group", 1))
        _set_init(out, n.input[2], inits[n.input[2]].astype(np.float64) + shift)
        worst = max(worst, float(np.abs(shift).max()))
    return out, {"layers": len(layers), "max_abs_shift": worst}


__all__ = [
    "QMAX", "QMAX_REDUCED", "activation_channel_max", "bias_correct", "cross_layer_equalize", "equalization_pairs",
    "grid_weight_overrides", "input_channel_means", "rounding_shift", "run_tensors", "weight_bias_correct", "weight_grid", "weight_nodes",
]
