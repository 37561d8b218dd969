"""Bias correction of the weight rounding error for the int8 .tflite (build.tflite.pt2e.weight_bias_correct).

Nagel et al. 2019 (arXiv:1906.04721, sec. 4.2): after ``b += (W - W_q) E[x]``, a layer with rounded weights
``W_q`` has the same mean output as the float layer on the calibration data. Checked here independently
of the code under test: the test folds each BatchNorm into its conv itself, rounds the folded weights
itself, feeds every conv and the classifier the inputs it captured from the float model, and compares
per-channel mean outputs. Needs torch only.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs torch (export extra)")
F = torch.nn.functional

from mobilenet_edge.build.model import random_model  # noqa: E402
from mobilenet_edge.build.tflite_export import NHWCInput, weight_bias_correct  # noqa: E402
from mobilenet_edge.quantize.weight_grid import grid_channel_rmax  # noqa: E402

pytestmark = pytest.mark.export

RES = 64
RES_DW = 224  # large maps for the depthwise check: padding borders are a small share of the pixels


def _model_on_grids(seed: int = 3):
    """A model whose BN-folded conv weights (and FC weights) lie on per-layer grids, with non-trivial
    BatchNorms (gamma 0.5-2, var 0.3-3, random means). About half the channels span 255-400 steps, more
    than int8's 127, so they cannot stay exact (their scale is then max|w| / 127, whose roundings have
    no exact .5 ties: float32 and float64 arithmetic round them alike); the others stay exact."""

    def limits(n: int, shape) -> torch.Tensor:
        lo, hi = torch.randint(20, 128, (n,), generator=g), torch.randint(255, 401, (n,), generator=g)
        return torch.where(torch.rand(n, generator=g) < 0.5, lo, hi).view(shape)

    m = random_model({"alpha": 0.25, "num_classes": 10}, RES, seed=0)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for blk in m.conv_layers():
            conv, bn = blk[0], blk[1]
            c = conv.weight.shape[0]
            bn.weight.uniform_(0.5, 2.0, generator=g)
            bn.running_var.uniform_(0.3, 3.0, generator=g)
            bn.running_mean.uniform_(-0.2, 0.2, generator=g)
            bn.bias.uniform_(-0.1, 0.1, generator=g)
            fold = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            step = float(torch.empty(1).uniform_(1e-3, 2e-2, generator=g))
            lim = limits(c, (c, 1, 1, 1))
            k = torch.round((torch.rand(conv.weight.shape, generator=g) * 2 - 1) * lim)
            conv.weight.copy_(k * step / fold.view(-1, 1, 1, 1))
        fc = m.classifier
        lim = limits(fc.weight.shape[0], (-1, 1))
        fc.weight.copy_(torch.round((torch.rand(fc.weight.shape, generator=g) * 2 - 1) * lim) * 0.01)
    return m.eval()


def _folded(blk) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of conv + BN folded into one conv by torch's own ``fuse_conv_bn_weights`` (the
    function PT2E's BN folding calls), float32."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    conv, bn = blk[0], blk[1]
    with torch.no_grad():
        w, b = fuse_conv_bn_weights(conv.weight, None, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
    return w.detach(), b.detach()


def _rounded(w: torch.Tensor) -> torch.Tensor:
    """Symmetric per-output-channel int8 rounding of float32 ``w`` by torch's reference op (the one PT2E's
    convert inserts), with the grid-aligned scales of quantize.weight_grid.grid_channel_rmax as float32 (as the
    observer hands them over). Ties (weights exactly between two levels, common on grids) are decided
    by that float32 arithmetic, so only the op itself reproduces the file's rounding."""
    import torch.ao.quantization.fx._decomposed  # noqa: F401 - registers quantized_decomposed ops

    rmax, _ = grid_channel_rmax(w.double().numpy(), 0, qmax=127)
    s = torch.from_numpy(rmax / 127).to(torch.float32)
    zp = torch.zeros(len(s), dtype=torch.int64)
    qd = torch.ops.quantized_decomposed
    q = qd.quantize_per_channel(w.float(), s, zp, 0, -127, 127, torch.int8)
    return qd.dequantize_per_channel(q, s, zp, 0, -127, 127, torch.int8).double()


def _inputs(m, x) -> dict:
    """The float model's input of every conv block and of the classifier, float64."""
    seen = {}
    mods = [*m.conv_layers(), m.classifier]
    hooks = [mod.register_forward_pre_hook(lambda mod, a: seen.__setitem__(mod, a[0].detach().double())) for mod in mods]
    with torch.no_grad():
        m(x)
    for h in hooks:
        h.remove()
    return seen


def _mean_out(blk, w, b, x) -> torch.Tensor:
    """Per-channel mean of the layer's pre-activation output over images and pixels."""
    if isinstance(blk, torch.nn.Linear):
        return (x @ w.T + b).mean(dim=0)
    conv = blk[0]
    y = F.conv2d(x, w, b, stride=conv.stride, padding=conv.padding, groups=conv.groups)
    return y.mean(dim=(0, 2, 3))


def test_corrected_layers_keep_the_float_mean_output():
    m = _model_on_grids()
    x = torch.rand(8, 3, RES_DW, RES_DW, generator=torch.Generator().manual_seed(0)) * 2 - 1
    xin = _inputs(m, x)
    corrected = copy.deepcopy(m)
    rec = weight_bias_correct(NHWCInput(corrected, nhwc=False), [x.numpy()])
    assert rec["layers"] == 28 and rec["max_abs_shift"] > 0  # every conv and the classifier lie on a grid

    before, after = {"1x1": [], "dw": []}, {"1x1": [], "dw": []}
    pairs = list(zip(m.conv_layers(), corrected.conv_layers())) + [(m.classifier, corrected.classifier)]
    for o, c in pairs:
        if isinstance(o, torch.nn.Linear):
            kind, (w, b), bc = "1x1", (o.weight.detach(), o.bias.detach()), c.bias.detach()
        elif o.kernel == 1:
            kind = "1x1"
        elif o[0].groups > 1 and xin[o].shape[-1] >= 56:
            kind = "dw"
        else:
            continue  # the stem (input mean near 0) and depthwise convs on small maps (borders dominate)
        if not isinstance(o, torch.nn.Linear):
            (w, b), (_, bc) = _folded(o), _folded(c)
        w, b, bc = w.double(), b.double(), bc.double()
        with torch.no_grad():
            want = _mean_out(o, w, b, xin[o])
            wq = _rounded(w.float())
            before[kind].append(float((_mean_out(o, wq, b, xin[o]) - want).abs().max()))
            after[kind].append(float((_mean_out(o, wq, bc, xin[o]) - want).abs().max()))
    # 1x1 convs and the classifier see no padding: the correction is exact (to float32 storage)
    assert max(after["1x1"]) < 1e-4, max(after["1x1"])
    assert max(before["1x1"]) > 1e-2  # the rounding does move the means: the check can fail
    # depthwise 3x3 convs: padding borders see zeros that E[x] ignores, so the correction is approximate;
    # on maps of 56 x 56 and more it must still remove at least 90% of each layer's mean error
    assert len(after["dw"]) >= 3
    assert all(a < 0.1 * b for a, b in zip(after["dw"], before["dw"])), list(zip(after["dw"], before["dw"]))


def test_exact_weights_get_no_shift_and_float_convs_are_skipped():
    """Weights within 127 steps are exact on int8: nothing to correct. The first N convs stay float."""
    m = _model_on_grids()
    with torch.no_grad():
        for blk in m.conv_layers():
            blk[1].weight.fill_(1.0)
            blk[1].running_var.fill_(1.0 - blk[1].eps)  # identity scale: the fold leaves weights as they are
        for mod in m.modules():
            if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
                w = mod.weight
                mod.weight.copy_(torch.round(w / w.abs().max() * 100) * 0.01)  # integers in [-100, 100]
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    x = np.random.default_rng(0).uniform(-1, 1, (4, 3, RES, RES)).astype(np.float32)
    rec = weight_bias_correct(NHWCInput(m, nhwc=False), [x], skip_convs=2)
    assert rec["layers"] == 26  # 27 convs - 2 float + classifier
    assert rec["max_abs_shift"] < 1e-5  # float32 storage of k * 0.01 only
    for n, p in m.named_parameters():
        if n.startswith("stem.") or n.startswith("blocks.0.depthwise."):
            assert torch.equal(p, before[n]), n  # float convs: untouched
