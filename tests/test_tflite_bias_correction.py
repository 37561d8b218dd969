"""Bias correction of the weight rounding error for the int8 .tflite (tflite_export.weight_bias_correct).

Nagel et al. 2019 (arXiv:1906.04721, sec. 4.2): after ``b += (W - W_q) E[x]``, a layer with rounded weights
``W_q`` has the same mean output as the float layer on the calibration data. Checked here independently
of the code under test: the test rounds the weights itself, feeds each 1x1 conv and the classifier the
inputs it captured from the float model, and compares per-channel means. Needs torch only.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs torch (export extra)")

from mobilenet_edge.equalize import grid_channel_rmax  # noqa: E402
from mobilenet_edge.model import random_model  # noqa: E402
from mobilenet_edge.tflite_export import NHWCInput, weight_bias_correct  # noqa: E402

pytestmark = pytest.mark.export

RES = 64


def _model_on_grids(seed: int = 3):
    """Every conv/FC weight on a per-layer grid; some channels span up to 250 steps, more than int8's 127,
    so they cannot stay exact. BatchNorm is an exact identity (folding leaves the weights as they are)."""
    m = random_model({"alpha": 0.25, "num_classes": 10}, RES, seed=0)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
                step = float(torch.empty(1).uniform_(1e-3, 2e-2, generator=g))
                lim = torch.randint(20, 250, (mod.weight.shape[0],), generator=g).view(-1, *[1] * (mod.weight.dim() - 1))
                mod.weight.copy_(torch.round((torch.rand(mod.weight.shape, generator=g) * 2 - 1) * lim) * step)
            elif isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.fill_(1.0)
                mod.bias.uniform_(-0.1, 0.1, generator=g)
                mod.running_mean.zero_()
                mod.running_var.fill_(1.0 - mod.eps)
    return m.eval()


def _rounded(w: torch.Tensor) -> torch.Tensor:
    """Symmetric per-output-channel int8 rounding with the grid-aligned scales the quantizer uses."""
    w64 = w.detach().double().numpy()
    rmax, _ = grid_channel_rmax(w64, 0, qmax=127)
    s = (rmax / 127).reshape((-1,) + (1,) * (w64.ndim - 1))
    return torch.from_numpy(np.clip(np.round(w64 / s), -127, 127) * s)


def _layer_inputs(m, x):
    """Inputs of every 1x1 conv and of the classifier in the float model, float64."""
    layers = [blk.pointwise[0] for blk in m.blocks] + [m.classifier]
    seen = {}
    hooks = [mod.register_forward_pre_hook(lambda mod, a: seen.__setitem__(mod, a[0].detach().double())) for mod in layers]
    with torch.no_grad():
        m(x)
    for h in hooks:
        h.remove()
    return layers, seen


def _mean_out(mod, bias, w, x):
    """Per-channel mean of the layer's output (1x1 conv: over images and pixels), weights ``w``."""
    if x.ndim == 4:
        y = torch.nn.functional.conv2d(x, w.double()) + bias.double().view(1, -1, 1, 1)
        return y.mean(dim=(0, 2, 3))
    return (x @ w.double().T + bias.double()).mean(dim=0)


def test_corrected_layers_keep_the_float_mean_output():
    m = _model_on_grids()
    x = torch.rand(8, 3, RES, RES, generator=torch.Generator().manual_seed(0)) * 2 - 1
    layers, xin = _layer_inputs(m, x)

    corrected = copy.deepcopy(m)
    rec = weight_bias_correct(NHWCInput(corrected, nhwc=False), [x.numpy()])
    assert rec["layers"] == 28 and rec["max_abs_shift"] > 0  # every conv and the classifier lie on a grid

    c_layers = [blk.pointwise for blk in corrected.blocks] + [corrected.classifier]
    o_layers = [blk.pointwise for blk in m.blocks] + [m.classifier]
    worst_before = worst_after = 0.0
    for mod, c, o in zip(layers, c_layers, o_layers):
        bias_o = o[1].bias if isinstance(o, torch.nn.Sequential) else o.bias
        bias_c = c[1].bias if isinstance(c, torch.nn.Sequential) else c.bias
        want = _mean_out(mod, bias_o.detach(), mod.weight.detach(), xin[mod])
        wq = _rounded(mod.weight)
        worst_before = max(worst_before, float((_mean_out(mod, bias_o.detach(), wq, xin[mod]) - want).abs().max()))
        worst_after = max(worst_after, float((_mean_out(mod, bias_c.detach(), wq, xin[mod]) - want).abs().max()))
    assert worst_after < 1e-5, worst_after
    assert worst_before > 1e-3, worst_before  # the rounding does move the means: the check can fail


def test_exact_weights_get_no_shift_and_float_convs_are_skipped():
    """Weights within 127 steps are exact on int8: nothing to correct. The first N convs stay float."""
    m = _model_on_grids()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
                w = mod.weight
                k = torch.round(w / w.abs().max() * 100)  # integers within [-100, 100], one step per layer
                mod.weight.copy_(k * 0.01)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    x = np.random.default_rng(0).uniform(-1, 1, (4, 3, RES, RES)).astype(np.float32)
    rec = weight_bias_correct(NHWCInput(m, nhwc=False), [x], skip_convs=2)
    assert rec["layers"] == 26  # 27 convs - 2 float + classifier
    assert rec["max_abs_shift"] < 1e-5  # float32 storage of k * 0.01 only
    for n, p in m.named_parameters():
        if n.startswith("stem.") or n.startswith("blocks.0.depthwise."):
            assert torch.equal(p, before[n]), n  # float convs: untouched
