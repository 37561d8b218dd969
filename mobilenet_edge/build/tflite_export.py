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
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core import bundle
from ..core.errors import MobilenetEdgeError, ParityError, UsageError
from ..core.versions import TFLITE_TOOLS, versions
from ..quantize.fidelity import sqnr_db
from ..quantize.recipes import get_recipe

PARITY_TOLERANCE = 1e-4  # max |logit diff| fp32 .tflite vs PyTorch (issue #9)
N_RANDOM = 3  # seeded random inputs added to every parity check (uniform in [-1, 1], the input range)
EXPORTER = "litert-torch"


# ----------------------------------------------------------------------------------------------- helpers


def _import_litert_torch():
    import logging

    # torchao (imported by litert-torch) logs "Failed to load .../_C_cutlass_90a.abi3.so" for its CUDA
    # kernels on every CPU-only machine: harmless, and not ours to show.
    tao = logging.getLogger("torchao")
    level = tao.level
    tao.setLevel(logging.ERROR)
    try:
        import litert_torch
    except ImportError as e:
        raise MobilenetEdgeError(
            f"TFLite export needs litert-torch ({e}); install it with "
            "`pip install 'mobilenet-edge[tflite-export]' torch==2.13.0`"
        ) from None
    finally:
        tao.setLevel(level)
    return litert_torch


@contextmanager
def _quiet_litert_torch() -> Iterator[None]:
    """litert-torch prints its progress on *stdout* (rich console); switch it off during a call so the
    CLI's stdout stays results-only. Restores the environment variable it uses afterwards."""
    key = "LITERT_TORCH_SHOW_PROGRESS"
    old = os.environ.get(key)
    os.environ[key] = "n"
    try:
        with warnings.catch_warnings():  # torch.export's internal FutureWarnings (LeafSpec, pytree): not ours
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


@contextmanager
def _nhwc_constant_pads() -> Iterator[bool]:
    """Teach litert-torch's layout pass (``optimize_layout_transposes_pass``) that a constant pad can run
    channels-last, for the duration of one conversion.

    litert-torch 0.10 has NHWC rewriters for reflection/replication pads but not for constant pads, so
    each TF-'SAME' pad is run in NCHW between two TRANSPOSE ops. In fp32 the converter folds those
    away, in int8 it does not (measured on 0.5/160: 26 TRANSPOSE + 13 PAD ops). The rewrite permutes
    the pad list from NCHW order (W, H, C, N pairs) to NHWC order (C, W, H, N pairs). Yields False and
    changes nothing if the private registries are not where 0.10 keeps them.
    """
    try:
        from litert_torch._convert.fx_passes.optimize_layout_transposes_pass import layout_check, layout_rewrite
    except ImportError:
        yield False
        return
    rewriters = getattr(layout_rewrite, "rewriters", None)
    checkers = getattr(layout_check, "nhwcable_node_checkers", None)
    nhwcable = getattr(layout_check, "NHWCable", None)
    if rewriters is None or checkers is None or nhwcable is None:
        yield False
        return
    aten = torch.ops.aten
    ops = (aten.constant_pad_nd.default, aten.pad.default)

    def checker(node: torch.fx.Node):
        mode = "constant"
        if node.target == aten.pad.default:
            mode = node.kwargs.get("mode", node.args[2] if len(node.args) > 2 else "constant")
        ok = (
            mode == "constant"
            and layout_check.is_4d(node)
            and layout_check.is_4d(node.args[0])
            and len(node.args[1]) <= 8
        )
        return nhwcable(can_be=ok, must_be=False)

    def rewriter(node: torch.fx.Node) -> None:
        op = node.target

        def pad_nhwc(x, pad, *args, **kwargs):
            p = list(pad) + [0] * (8 - len(pad))  # NCHW pairs: W, H, C, N
            return op(x, p[4:6] + p[0:2] + p[2:4] + p[6:8], *args, **kwargs)  # NHWC pairs: C, W, H, N

        node.target = pad_nhwc

    saved = [(reg, op, reg.get(op)) for reg in (rewriters, checkers) for op in ops]
    for op in ops:
        rewriters[op] = rewriter
        checkers[op] = checker
    try:
        yield True
    finally:
        for reg, op, old in saved:
            if old is None:
                reg.pop(op, None)
            else:
                reg[op] = old


class NHWCInput(nn.Module):
    """Wrap an NCHW classifier so its input is NHWC: ``(N, H, W, 3) -> permute -> model``.

    Calls ``forward_features`` then ``forward_head`` with ``pre_logits`` and the classifier, skipping the
    dropout module (an identity in eval mode), so the quantizer sees no dropout op between the pool and
    the classifier. Output (N, num_classes) float32 logits, equal to ``model(x.permute(0, 3, 1, 2))`` in
    eval mode.
    """

    def __init__(self, model: nn.Module, *, nhwc: bool = True) -> None:
        super().__init__()
        self.model = model
        self.nhwc = nhwc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.nhwc:
            x = x.permute(0, 3, 1, 2)  # (N, H, W, 3) -> (N, 3, H, W)
        m = self.model
        if hasattr(m, "forward_features") and hasattr(m, "classifier"):
            return m.classifier(m.forward_head(m.forward_features(x), pre_logits=True))
        return m(x)


def to_layout(x: np.ndarray, *, res: int, nhwc: bool, what: str = "input") -> np.ndarray:
    """One preprocessed array (3 or 4 dims, NCHW or NHWC) -> (N, res, res, 3) if ``nhwc`` else
    (N, 3, res, res), float32 contiguous.

    Raises:
        UsageError: not a (N,)3,res,res / (N,)res,res,3 float array.
    """
    a = np.asarray(x)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or not np.issubdtype(a.dtype, np.floating):
        raise UsageError(f"{what} must be a float array (N,3,{res},{res}) or (N,{res},{res},3), got {a.dtype} {a.shape}")
    if a.shape[1:] == (3, res, res):
        is_nhwc = False
    elif a.shape[1:] == (res, res, 3):
        is_nhwc = True
    else:
        raise UsageError(f"{what} must be (N,3,{res},{res}) or (N,{res},{res},3) for res {res}, got {a.shape}")
    if is_nhwc != nhwc:
        a = a.transpose(0, 2, 3, 1) if nhwc else a.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(a, dtype=np.float32)


def _batches(arrays: Iterable[np.ndarray] | None, *, res: int, nhwc: bool, what: str) -> list[np.ndarray]:
    """Materialise an iterable of arrays as a list of (1, ...) arrays in the graph layout."""
    out: list[np.ndarray] = []
    for x in arrays or ():
        a = to_layout(x, res=res, nhwc=nhwc, what=what)
        out += [a[i : i + 1] for i in range(a.shape[0])]
    return out


def random_inputs(n: int, *, res: int, nhwc: bool, seed: int = 0) -> list[np.ndarray]:
    """``n`` seeded (1, res, res, 3) / (1, 3, res, res) float32 arrays, uniform in [-1, 1]."""
    rng = np.random.default_rng(seed)
    shape = (1, res, res, 3) if nhwc else (1, 3, res, res)
    return [rng.uniform(-1.0, 1.0, shape).astype(np.float32) for _ in range(n)]


class TfliteModel:
    """A ``.tflite`` classifier on the LiteRT interpreter (``ai_edge_litert``), quantized I/O handled.

    ``model(x)`` takes float32 preprocessed input (in the graph's own layout, batch 1 per invoke; a
    batch is run image by image), quantizes it with the input tensor's (scale, zero point) when the
    input is integer, and returns float32 (N, classes) outputs, dequantized when the output is integer.
    Works for Google's reference files too (uint8 in/out; their output is softmax probabilities).

    Args:
        path: ``.tflite`` file.
        num_threads: interpreter threads (1 for latency comparisons).
    Raises:
        MobilenetEdgeError: the file cannot be loaded.
    """

    def __init__(self, path: str | Path, *, num_threads: int = 1) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as e:  # pragma: no cover - ai-edge-litert is a dependency of litert-torch
            raise MobilenetEdgeError(f"running .tflite needs ai-edge-litert ({e}): pip install ai-edge-litert") from None
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise MobilenetEdgeError(f"cannot load {path}: {e}") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """float32 -> the input dtype (round, add zero point, saturate) using the input's scale."""
        dt = self.input["dtype"]
        if np.issubdtype(dt, np.floating):
            return x.astype(dt)
        scale, zp = self.input["quantization"]
        info = np.iinfo(dt)
        return np.clip(np.round(x / scale) + zp, info.min, info.max).astype(dt)

    def run_raw(self, xq: np.ndarray) -> np.ndarray:
        """One invoke on an input already in the input dtype; returns the raw output tensor (copy)."""
        self.interpreter.set_tensor(self.input["index"], xq)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"]).copy()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        outs = []
        for i in range(x.shape[0]):
            y = self.run_raw(self.quantize_input(x[i : i + 1]))
            if not np.issubdtype(y.dtype, np.floating):
                scale, zp = self.output["quantization"]
                y = (y.astype(np.float32) - zp) * scale
            outs.append(y.astype(np.float32))
        return np.concatenate(outs)

    def op_counts(self) -> dict[str, int]:
        """Op name -> count in the (delegated) graph, e.g. ``{"CONV_2D": 14, ...}``."""
        counts: dict[str, int] = {}
        for op in self.interpreter._get_ops_details():  # no public API for the op list
            counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
        return counts


def _io_record(detail: dict, *, layout: str | None) -> dict:
    scale, zp = detail["quantization"]
    rec = {
        "name": detail["name"],
        "shape": [int(v) for v in detail["shape"]],
        "dtype": np.dtype(detail["dtype"]).name,
    }
    if layout:
        rec["layout"] = layout
    rec["quantization"] = {"scale": float(scale), "zero_point": int(zp)} if scale else None
    return rec


# ------------------------------------------------------------------------------------------ quantization


def _grid_observer_class():
    """A per-channel weight observer whose scales put weights that lie on a grid exactly on int8.

    Google's TF-slim .tflite weights are the dequantized values of one uint8 grid per tensor; PyTorch's
    ``max|w_c| / 127`` scale puts each channel on a different grid and re-rounds every weight. Scales from
    :func:`equalize.grid_channel_rmax` (``s / floor(127 / m_c)``) keep them exact; weights on no grid
    (random, float-trained) keep the stock scales. ``stats`` (a dict, shared) collects per-observer
    channel counts for the manifest.
    """
    from torchao.quantization.pt2e.observer import PerChannelMinMaxObserver

    from ..quantize.equalize import grid_channel_rmax

    class GridPerChannelObserver(PerChannelMinMaxObserver):
        def __init__(self, *args, stats: dict | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            self._stats = stats
            self._w: torch.Tensor | None = None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self._w = x.detach()
            return super().forward(x)

        def calculate_qparams(self):
            scale, zero_point = super().calculate_qparams()
            if self._w is None:
                return scale, zero_point
            w = self._w.to(torch.float64).numpy()
            got = grid_channel_rmax(w, self.ch_axis, qmax=self.quant_max)
            exact = 0
            if got is not None:
                rmax, mask = got
                scale = torch.from_numpy(rmax / self.quant_max).to(scale.dtype)
                exact = int(mask.sum())
            if self._stats is not None:
                self._stats[id(self)] = (w.shape[self.ch_axis], exact, w.size // w.shape[self.ch_axis])
            return scale, zero_point

    return GridPerChannelObserver


def grid_record(stats: dict) -> dict:
    """Summary of :func:`_grid_observer_class` stats: ``{"tensors", "channels", "channels_exact",
    "weights_exact_fraction"}``."""
    ch = sum(c for c, _, _ in stats.values())
    ex = sum(e for _, e, _ in stats.values())
    n = sum(c * k for c, _, k in stats.values())
    return {"tensors": len(stats), "channels": ch, "channels_exact": ex,
            "weights_exact_fraction": sum(e * k for _, e, k in stats.values()) / n if n else 0.0}


def weight_bias_correct(module: nn.Module, calib: list[np.ndarray], *, skip_convs: int = 0, qmax: int = 127) -> dict:
    """Bias correction of the int8 weight rounding error that grid alignment leaves (Nagel et al. 2019,
    "Data-Free Quantization Through Weight Equalization and Bias Correction", arXiv:1906.04721, sec. 4.2),
    in place on ``module``: ``b += (W - W_q) E[x]`` per output channel.

    The torch-side twin of :func:`equalize.weight_bias_correct` (the ONNX ``fidelity`` recipe). ``W`` is
    each conv's weight with its BatchNorm folded in as PT2E folds it (``w * gamma * rsqrt(var + eps)``,
    float32), ``W_q`` its symmetric per-channel int8 rounding with the grid-aligned scales of
    :func:`equalize.grid_channel_rmax`, in torch's float32 arithmetic (``round(w * (1 / scale))``, as
    ``quantize_per_channel``), so that it rounds exactly as the exported file does; ``E[x]`` the
    per-channel mean of each conv block's input (before any TF-'SAME' pad, as in the ONNX graph) over
    ``calib`` and pixels. The shift (:func:`equalize.rounding_shift`) goes into the BatchNorm's beta
    (the classifier: its bias). Only layers whose weights lie on a grid are corrected (elsewhere the
    quantizer's own scales are not known here); exact channels give no shift.

    Args:
        module: :class:`NHWCInput` around a :class:`~mobilenet_edge.build.model.MobileNetV1` (other models:
            nothing is done).
        calib: calibration arrays in ``module``'s input layout, float32.
        skip_convs: the first convs stay float (``float_first``): not corrected.
        qmax: max |integer| of the int8 weight grid (litert-torch's symmetric config: 127).
    Returns:
        ``{"layers": corrected layer count, "max_abs_shift": largest |shift|}``.
    """
    from ..quantize.equalize import grid_channel_rmax, rounding_shift

    m = getattr(module, "model", module)
    if not hasattr(m, "conv_layers") or not calib:
        return {"layers": 0, "max_abs_shift": 0.0}
    # (module whose input mean is taken, folded float32 weight, bias to shift, groups)
    layers: list[tuple[nn.Module, torch.Tensor, nn.Parameter, int]] = []
    for blk in m.conv_layers()[skip_convs:]:
        conv, bn = blk[0], blk[1]
        fold = (bn.weight * torch.rsqrt(bn.running_var + bn.eps)).detach()
        layers.append((blk, (conv.weight.detach() * fold.reshape(-1, 1, 1, 1)).float(), bn.bias, conv.groups))
    layers.append((m.classifier, m.classifier.weight.detach().float(), m.classifier.bias, 1))
    sums: dict[int, torch.Tensor] = {}

    def hook(mod, args):
        x = args[0].detach().to(torch.float64)
        mean = x.mean(dim=(2, 3)) if x.ndim == 4 else x
        sums[id(mod)] = sums.get(id(mod), 0) + mean.sum(dim=0)

    handles = [mod.register_forward_pre_hook(hook) for mod, *_ in layers]
    n = 0
    try:
        with torch.no_grad():
            for x in calib:
                module(torch.from_numpy(x))
                n += x.shape[0]
    finally:
        for h in handles:
            h.remove()
    done, worst = 0, 0.0
    with torch.no_grad():
        for mod, w, bias, groups in layers:
            got = grid_channel_rmax(w.to(torch.float64).numpy(), 0, qmax=qmax)
            if got is None or bias is None:
                continue
            scale = torch.from_numpy(got[0] / qmax).to(torch.float32).reshape((-1,) + (1,) * (w.dim() - 1))
            wq = torch.clamp(torch.round(w * (1.0 / scale)), -qmax, qmax) * scale
            err = (w.to(torch.float64) - wq.to(torch.float64)).numpy()
            shift = rounding_shift(err, (sums[id(mod)] / n).numpy(), groups=groups)
            bias.add_(torch.from_numpy(shift).to(bias.dtype))
            done += 1
            worst = max(worst, float(np.abs(shift).max()))
    return {"layers": done, "max_abs_shift": worst}


def make_quantizer(
    *,
    per_channel: bool = True,
    weight_grid: bool = True,
    grid_stats: dict | None = None,
    float_first: int = 0,
):
    """litert-torch's ``PT2EQuantizer`` with its symmetric int8 config, plus two annotations it lacks.

    - conv -> ReLU6: the stock annotator fuses conv with ReLU only; for ReLU6 (``aten.hardtanh``) it
      observes the conv output *before* the clamp and lets the ReLU6 share that range, so each int8
      activation spends its levels on pre-activation values (negative, or above 6) that ReLU6 then
      discards. Here conv + ReLU6 form one pattern as conv + ReLU does: only the clamped output is
      observed (range within [0, 6]) and the converter fuses RELU6 into the CONV_2D.
    - pads: ``aten.pad`` is left unannotated, so each explicit TF-'SAME' pad would get its own
      dequantize/quantize pair and a QUANTIZE (requantize) op in the .tflite. Here a pad shares the
      quantization parameters of its input, as litert-torch already does for pooling and reshapes.

    Weights: int8 symmetric, per output channel (axis 0) when ``per_channel``; activations: int8
    per-tensor affine, ``HistogramObserver`` ranges (litert-torch's defaults). With ``per_channel`` and
    ``weight_grid`` (default), weights on a grid (Google's) get grid-aligned scales and stay exact (the
    same alignment as the ONNX ``fidelity`` recipe; docs/fidelity.md). Measured on 0.5/160 with Google's
    weights, 2-fold over imagenet-calib: logits SQNR 20.8 -> 27.5 dB, top-1 agreement with PyTorch fp32
    95% -> 97% (recipes ``plain`` -> ``grid`` in benchmarks/tflite_recipes.md). ``float_first``: the first
    N convs (graph order) stay float. (MinMax activation ranges instead of Histogram, in a side run not
    kept in a data file: no gain.)
    """
    import dataclasses

    from litert_torch.quantize import pt2e_quantizer as pq
    from litert_torch.quantize import pt2e_quantizer_utils as qu
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    aten = torch.ops.aten
    pads = (aten.pad.default, aten.constant_pad_nd.default)
    convs = (aten.conv1d.default, aten.conv2d.default, aten.convolution.default)
    relu6s = (aten.hardtanh.default, aten.hardtanh_.default)

    class _Quantizer(pq.PT2EQuantizer):
        def _annotate_conv_relu6(self, model: torch.fx.GraphModule) -> None:
            config = self.global_config
            for n in model.graph.nodes:
                if n.op != "call_function" or n.target not in relu6s:
                    continue
                lo, hi = (list(n.args[1:3]) + [-1.0, 1.0])[:2]
                conv = n.args[0]
                if (lo, hi) != (0.0, 6.0) or not isinstance(conv, torch.fx.Node) or conv.target not in convs:
                    continue
                if len(conv.users) != 1:
                    continue
                qspec = {conv.args[0]: qu.get_input_act_qspec(config), conv.args[1]: qu.get_weight_qspec(config)}
                partition = [n, conv, conv.args[1]]
                bias = conv.args[2] if len(conv.args) > 2 else None
                if isinstance(bias, torch.fx.Node):
                    qspec[bias] = qu.get_bias_qspec(config)
                    partition.append(bias)
                if qu._is_annotated(partition):
                    continue
                conv.meta["quantization_annotation"] = QuantizationAnnotation(input_qspec_map=qspec, _annotated=True)
                n.meta["quantization_annotation"] = QuantizationAnnotation(
                    output_qspec=qu.get_output_act_qspec(config), _annotated=True
                )
                qu._mark_nodes_as_annotated(partition)

        def _keep_float(self, model: torch.fx.GraphModule) -> None:
            """Mark the first ``float_first`` convs (with their ReLU6) as annotated without any spec, so the
            annotators skip them: they stay float, and the converter puts a QUANTIZE after them."""
            empty = QuantizationAnnotation(_annotated=True)
            conv_nodes = [n for n in model.graph.nodes if n.op == "call_function" and n.target in convs]
            keep = conv_nodes[:float_first]
            for conv in conv_nodes[:float_first]:
                keep += [u for u in conv.users if u.target in relu6s]
            for n in keep:
                n.meta["quantization_annotation"] = empty

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            self._keep_float(model)
            if self.global_config is not None and self.global_config.input_activation is not None:
                self._annotate_conv_relu6(model)  # static only; before the stock conv annotator
            model = super().annotate(model)
            for n in model.graph.nodes:
                if n.op != "call_function" or n.target not in pads:
                    continue
                prev = n.args[0]
                ann = prev.meta.get("quantization_annotation") if isinstance(prev, torch.fx.Node) else None
                if ann is None or ann.output_qspec is None:
                    continue  # e.g. the graph input: the following conv's input observer covers it
                shared = SharedQuantizationSpec(prev)
                n.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={prev: shared}, output_qspec=shared, _annotated=True
                )
            return model

    config = pq.get_symmetric_quantization_config(is_per_channel=per_channel)
    if per_channel and weight_grid:
        ctr = _grid_observer_class().with_args(eps=2**-12, stats=grid_stats)
        config = dataclasses.replace(config, weight=dataclasses.replace(config.weight, observer_or_fake_quant_ctr=ctr))
    return _Quantizer().set_global(config)


def quantize_pt2e(
    module: nn.Module,
    sample: torch.Tensor,
    calib: list[np.ndarray],
    *,
    per_channel: bool = True,
    weight_grid: bool = True,
    grid_stats: dict | None = None,
    float_first: int = 0,
):
    """Export ``module`` with ``torch.export``, insert observers, run the calibration arrays, convert to a
    Q/DQ graph. Returns ``(graph_module, quantizer)`` for ``litert_torch.convert(..., quant_config=...)``."""
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = make_quantizer(per_channel=per_channel, weight_grid=weight_grid, grid_stats=grid_stats,
                               float_first=float_first)
    exported = torch.export.export(module, (sample,)).module()
    prepared = prepare_pt2e(exported, quantizer)
    move_exported_model_to_eval(prepared)
    with torch.no_grad():
        for x in calib:
            prepared(torch.from_numpy(x))
    converted = convert_pt2e(prepared, fold_quantize=False)
    move_exported_model_to_eval(converted)
    for m in converted.modules():  # the graph already runs in eval form; say so, or litert-torch warns
        m.training = False  # that the model "is converted in training mode" (exported modules refuse .eval())
    return converted, quantizer


# ---------------------------------------------------------------------------------------------- export


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

    fp32: the file must match PyTorch on every ``check`` array plus ``N_RANDOM`` seeded random inputs:
    max |logit difference| <= ``tolerance`` and the same top-1, else :class:`ParityError` and no file.

    int8 (``int8=True``): static post-training quantization (PT2E, litert-torch's ``PT2EQuantizer``):
    int8 weights, symmetric, per output channel; int8 activations per tensor with ranges observed on
    ``calib``. The ``recipe`` names mean what they mean for ONNX (:mod:`mobilenet_edge.quantize.recipes`,
    docs/fidelity.md): ``plain`` = the quantizer's own scales; ``grid`` = grid-aligned weight scales
    (:func:`make_quantizer`); ``fidelity`` (default) = ``grid`` + bias correction of the weight rounding
    left (:func:`weight_bias_correct`) + the first ``float_first`` convs (2) in float, so the input is
    float32. With 0 float convs the file is full integer (int8 input and output, as accelerators need).
    The recipes' float logits have no .tflite form (the int8 FULLY_CONNECTED has no float output; a
    float classifier would store its weights in float32, doubling the file): the output is int8.
    The fidelity against the PyTorch fp32 model (top-1 agreement, logits SQNR in dB, max |diff|) is
    measured on ``check`` when given, else on ``calib``.

    Args:
        model: an NCHW classifier (``MobileNetV1``) taking (N, 3, res, res) float32. An eval-mode copy
            is converted; ``model`` itself is not modified.
        dst: output file; written atomically (a temp file beside it, renamed when all checks pass). An
            existing ``dst`` is left untouched on any failure.
        res: input side in pixels (the graph is static: batch 1, res x res).
        int8: quantize (needs ``calib``).
        calib: calibration arrays, preprocessed as the module docstring says (NCHW or NHWC, (3,res,res)
            or (N,3,res,res) float32 in [-1, 1]); real images, e.g. ``images.iter_batches`` over
            ../shared/data/imagenet-calib. Consumed once.
        nhwc: graph input (res, res, 3) channels-last (default) instead of (3, res, res).
        check: arrays for the parity/fidelity check (same format as ``calib``), e.g. real photos.
        tolerance: fp32 parity tolerance on logits (default 1e-4, issue #9).
        per_channel: per-output-channel weight scales (default) instead of per-tensor.
        recipe: ``plain`` | ``grid`` | ``fidelity``. Grid alignment (Google's weights: exact int8
            weights, +6.5 dB logits SQNR at 0.5/160) needs ``per_channel``. Measured with Google's weights
            (benchmarks/tflite_recipes.md, 2-fold, mean over images): ``fidelity`` adds +2.6 to +4.1 dB logits
            SQNR over ``grid``.
        float_first: convs kept in float, overriding the recipe's (``fidelity``: 2, else 0).

    Returns:
        A record for ``manifest.json["files"][name]``: file, format, precision, sha256, size, input and
        output (name, shape, dtype, layout, quantization {scale, zero_point} or None), exporter,
        tool_versions, seconds, op_counts, then ``parity`` (fp32) or ``quantization`` (int8).

    Raises:
        UsageError: bad arguments (int8 without calib, arrays of the wrong shape, litert-torch missing).
        ParityError: fp32 output differs from PyTorch beyond ``tolerance`` or in top-1.
        MobilenetEdgeError: the converter failed (message carries the converter's error).
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
    weight_grid = rcp.weight_grid and per_channel
    if tolerance < 0:
        raise UsageError(f"tolerance must be >= 0, got {tolerance}")
    calib_list = _batches(calib, res=res, nhwc=nhwc, what="calibration array")
    if int8 and not calib_list:
        raise UsageError("int8 export needs calibration images (calib), none given")
    check_list = _batches(check, res=res, nhwc=nhwc, what="check array")
    litert_torch = _import_litert_torch()
    dst = Path(dst)
    t0 = time.perf_counter()

    module = NHWCInput(copy.deepcopy(model).eval(), nhwc=nhwc).eval()
    sample = torch.from_numpy((calib_list or check_list or random_inputs(1, res=res, nhwc=nhwc))[0])
    quant_record = None
    with _quiet_litert_torch(), _nhwc_constant_pads():
        try:
            if int8:
                grid_stats: dict = {}
                qsrc = copy.deepcopy(module)
                bias_rec = (weight_bias_correct(qsrc, calib_list, skip_convs=n_float)
                            if rcp.weight_bias_correction and weight_grid else None)
                if bias_rec is not None and not bias_rec["layers"]:
                    bias_rec = None  # weights on no grid (random, float-trained): nothing was corrected
                qmodule, quantizer = quantize_pt2e(
                    qsrc, sample, calib_list, per_channel=per_channel, weight_grid=weight_grid, grid_stats=grid_stats,
                    float_first=n_float,
                )
                from litert_torch.quantize.quant_config import QuantConfig

                edge = litert_torch.convert(qmodule, (sample,), quant_config=QuantConfig(pt2e_quantizer=quantizer))
            else:
                edge = litert_torch.convert(module, (sample,))
        except (RuntimeError, ValueError, TypeError, NotImplementedError, AssertionError) as e:
            raise MobilenetEdgeError(f"litert-torch conversion failed: {type(e).__name__}: {e}") from e

    with bundle.atomic_path(dst) as tmp:
        with _quiet_litert_torch():
            edge.export(str(tmp))
        runner = TfliteModel(tmp, num_threads=1)
        inputs = check_list + random_inputs(N_RANDOM, res=res, nhwc=nhwc)
        if int8:
            data = check_list if check_list else calib_list
            quant_record = _fidelity_record(module, runner, data, per_channel=per_channel, float_first=n_float)
            quant_record["calibration"] = {"n_images": len(calib_list), "observer": "HistogramObserver"}
            quant_record["recipe"] = {**rcp.to_dict(), "weight_grid": weight_grid, "float_first": n_float,
                                      "float_logits": False, "weight_bias_correction": bias_rec is not None}
            quant_record["weight_grid"] = {"enabled": weight_grid, **(grid_record(grid_stats) if weight_grid else {})}
            if bias_rec is not None:
                quant_record["bias_correction"] = bias_rec
            quant_record["fidelity"]["data"] = "check" if check_list else "calibration"
            parity = None
        else:
            parity = _parity(module, runner, inputs, tolerance=tolerance, n_images=len(check_list))
        layout = "NHWC" if nhwc else "NCHW"
        rec = {
            "file": dst.name,
            "format": "tflite",
            "precision": "int8" if int8 else "fp32",
            **bundle.file_record(tmp),
            "input": _io_record(runner.input, layout=layout),
            "output": _io_record(runner.output, layout=None),
            "exporter": EXPORTER,
            "tool_versions": versions(TFLITE_TOOLS),
            "op_counts": runner.op_counts(),
        }
        del runner
    if parity is not None:
        rec["parity"] = parity
    if quant_record is not None:
        rec["quantization"] = quant_record
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    return rec


def _torch_logits(module: nn.Module, xs: list[np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([module(torch.from_numpy(x)).numpy() for x in xs])


def _parity(module: nn.Module, runner: TfliteModel, xs: list[np.ndarray], *, tolerance: float, n_images: int) -> dict:
    ref = _torch_logits(module, xs)
    out = runner(np.concatenate(xs))
    diff = float(np.abs(ref - out).max())
    top1_equal = bool((ref.argmax(1) == out.argmax(1)).all())
    if not (diff <= tolerance and top1_equal):
        raise ParityError(
            f"fp32 .tflite differs from PyTorch: max |logit diff| {diff:.3g} (tolerance {tolerance:g}), "
            f"top-1 equal: {top1_equal} on {len(xs)} inputs; no file written"
        )
    return {
        "max_abs_diff": diff,
        "tolerance": tolerance,
        "top1_equal": top1_equal,
        "n_random": len(xs) - n_images,
        "n_images": n_images,
    }


def _fidelity_record(module: nn.Module, runner: TfliteModel, xs: list[np.ndarray], *, per_channel: bool,
                     float_first: int) -> dict:
    ref = _torch_logits(module, xs)
    out = runner(np.concatenate(xs))
    kept = f"first {float_first} convs float" if float_first else "full integer"
    return {
        "method": f"static post-training quantization, PT2E (litert-torch PT2EQuantizer), {kept}",
        "per_channel": per_channel,
        "weight_type": "int8 symmetric" + (" per-channel (axis 0)" if per_channel else " per-tensor"),
        "activation_type": "int8 per-tensor affine",
        "io_type": f"{np.dtype(runner.input['dtype']).name} in, {np.dtype(runner.output['dtype']).name} out",
        "fidelity": {
            "reference": "PyTorch fp32",
            "n_images": len(xs),
            "top1_agreement": float((ref.argmax(1) == out.argmax(1)).mean()),
            "sqnr_db": sqnr_db(ref, out),
            "max_abs_diff": float(np.abs(ref - out).max()),
        },
    }
