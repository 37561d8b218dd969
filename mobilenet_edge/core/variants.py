"""MobileNet V1 variants and their analytic parameter / multiply-add counts (stdlib only).

The architecture is Table 1 of Howard et al. 2017 (arXiv:1704.04861) with its typo fixed: 13
distinct depthwise-separable blocks, the last depthwise conv having stride 1. This module does not
import torch so that ``summary`` and ``bench`` run on a Raspberry Pi; ``tests/test_variants.py``
checks every count against the torch model.

Counting rules (the paper's): MACs are the multiply-adds of conv and fully connected layers
(bias additions, batch norm, activations and pooling excluded). Params are every trainable value:
conv weights, BN gamma/beta, the classifier's weight and bias (BN running statistics excluded).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal

#: Paper Table 1 body, fixed: (out_channels at alpha=1, stride of the depthwise conv) per block.
#: The stem (3x3 conv, 32 channels, stride 2) comes before these.
STEM_CHANNELS = 32
BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1),  # 112x112x32 -> 112x112x64
    (128, 2),  # -> 56x56x128
    (128, 1),
    (256, 2),  # -> 28x28x256
    (256, 1),
    (512, 2),  # -> 14x14x512
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),  # five 512-channel blocks at stride 1, each with its own weights
    (1024, 2),  # -> 7x7x1024
    (1024, 1),  # the paper prints stride 2 here: a typo (the map stays 7x7)
)

#: The paper's grid (Tables 6 and 7) and Google's released checkpoints.
GRID_ALPHAS: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)
GRID_RES: tuple[int, ...] = (224, 192, 160, 128)

MIN_RES = 32


def make_channels(channels: int, alpha: float, *, min_channels: int = 8) -> int:
    """Channels after the width multiplier, TF-slim's rule ``max(int(c * alpha), 8)``.

    Args:
        channels: channel count at alpha = 1.
        alpha: width multiplier (> 0).
        min_channels: floor (TF-slim ``min_depth`` = 8).
    Raises:
        ValueError: alpha <= 0.
    """
    check_alpha(alpha)
    return max(int(channels * alpha), min_channels)


def check_alpha(alpha: float) -> float:
    """Validate a width multiplier; returns it as float. Raises ValueError quoting the value."""
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha must be a number > 0, got {alpha!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha}")
    if value <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    return value


def check_res(res: int) -> int:
    """Validate an input resolution (square side, pixels); raises ValueError quoting the value."""
    if isinstance(res, bool) or not isinstance(res, int):
        raise ValueError(f"res must be an integer >= {MIN_RES}, got {res!r}")
    if res < MIN_RES:
        raise ValueError(f"res must be >= {MIN_RES}, got {res}")
    return res


def check_num_classes(num_classes: int) -> int:
    """Validate a class count; raises ValueError quoting the value."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    return num_classes


def conv_out(size: int, stride: int) -> int:
    """Output side of a 3x3 conv with 'SAME'-style padding: ceil(size / stride)."""
    return -(-size // stride)


@dataclass(frozen=True)
class Layer:
    """One row of the paper's Table 1 (plus counts).

    ``kind`` is one of ``conv`` (full 3x3 conv), ``dw`` (3x3 depthwise), ``pw`` (1x1 pointwise),
    ``pool`` (global average pool), ``fc`` (classifier). Shapes are (H, W, C) as in the paper.
    """

    name: str
    kind: str
    stride: int
    filter_shape: tuple[int, ...]
    input_shape: tuple[int, int, int]
    output_shape: tuple[int, int, int]
    weights: int  # conv/FC weight values (paper Table 2 counts these)
    params: int  # weights + BN gamma/beta or FC bias
    macs: int

    @property
    def type_stride(self) -> str:
        label = {"conv": "Conv", "dw": "Conv dw", "pw": "Conv", "pool": "Avg Pool", "fc": "FC"}[self.kind]
        return f"{label} / s{self.stride}" if self.kind in ("conv", "dw", "pw") else label


@dataclass(frozen=True)
class Variant:
    """A MobileNet V1 variant: width multiplier ``alpha``, input side ``res``, class count.

    Raises:
        ValueError: alpha <= 0, res < 32 or not an int, num_classes < 1.
    """

    alpha: float = 1.0
    res: int = 224
    num_classes: int = 1000

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", check_alpha(self.alpha))
        check_res(self.res)
        check_num_classes(self.num_classes)

    @property
    def name(self) -> str:
        """Canonical name, e.g. ``mobilenet_v1_0.50_160``."""
        return variant_name(self.alpha, self.res)

    @property
    def channels(self) -> list[int]:
        """Stem channels then the output channels of the 13 blocks, after alpha."""
        return [make_channels(STEM_CHANNELS, self.alpha)] + [make_channels(c, self.alpha) for c, _ in BLOCKS]

    def layers(self) -> list[Layer]:
        """Per-layer rows (stem, 13 x (depthwise, pointwise), pool, FC) with params and MACs."""
        rows: list[Layer] = []
        h = self.res
        c_in = 3
        c_out = make_channels(STEM_CHANNELS, self.alpha)
        h_out = conv_out(h, 2)
        w = 3 * 3 * c_in * c_out
        rows.append(
            Layer("Conv2d_0", "conv", 2, (3, 3, c_in, c_out), (h, h, c_in), (h_out, h_out, c_out),
                  w, w + 2 * c_out, w * h_out * h_out)
        )
        h, c_in = h_out, c_out
        for i, (base, stride) in enumerate(BLOCKS, start=1):
            h_out = conv_out(h, stride)
            w = 3 * 3 * c_in
            rows.append(
                Layer(f"Conv2d_{i}_depthwise", "dw", stride, (3, 3, c_in), (h, h, c_in), (h_out, h_out, c_in),
                      w, w + 2 * c_in, w * h_out * h_out)
            )
            c_out = make_channels(base, self.alpha)
            w = c_in * c_out
            rows.append(
                Layer(f"Conv2d_{i}_pointwise", "pw", 1, (1, 1, c_in, c_out), (h_out, h_out, c_in),
                      (h_out, h_out, c_out), w, w + 2 * c_out, w * h_out * h_out)
            )
            h, c_in = h_out, c_out
        rows.append(Layer("AvgPool", "pool", 1, (h, h), (h, h, c_in), (1, 1, c_in), 0, 0, 0))
        w = c_in * self.num_classes
        rows.append(
            Layer("Logits", "fc", 1, (c_in, self.num_classes), (1, 1, c_in), (1, 1, self.num_classes),
                  w, w + self.num_classes, w)
        )
        return rows

    @property
    def params(self) -> int:
        """Trainable parameters (conv weights, BN gamma/beta, FC weight + bias)."""
        return sum(layer.params for layer in self.layers())

    @property
    def macs(self) -> int:
        """Multiply-adds of conv and FC layers at ``res`` (paper's Mult-Adds), batch 1."""
        return sum(layer.macs for layer in self.layers())

    def shares(self) -> dict[str, dict[str, float]]:
        """Share of MACs and of weights per layer type in percent, as paper Table 2 counts them
        (conv and FC weights only, no biases or BN). Keys: ``1x1 conv``, ``3x3 depthwise``,
        ``3x3 conv``, ``fc``."""
        names = {"pw": "1x1 conv", "dw": "3x3 depthwise", "conv": "3x3 conv", "fc": "fc"}
        rows = [r for r in self.layers() if r.kind in names]
        total_macs = sum(r.macs for r in rows)
        total_w = sum(r.weights for r in rows)
        out: dict[str, dict[str, float]] = {}
        for kind, label in names.items():
            macs = sum(r.macs for r in rows if r.kind == kind)
            weights = sum(r.weights for r in rows if r.kind == kind)
            out[label] = {"macs_pct": 100.0 * macs / total_macs, "params_pct": 100.0 * weights / total_w}
        return out

    def to_dict(self) -> dict:
        """JSON-ready summary: ``{"variant", "alpha", "res", "num_classes", "params", "macs", "layers"}``."""
        layers = self.layers()
        return {
            "variant": self.name,
            "alpha": self.alpha,
            "res": self.res,
            "num_classes": self.num_classes,
            "params": sum(r.params for r in layers),
            "macs": sum(r.macs for r in layers),
            "layers": [
                {
                    "name": r.name,
                    "type": r.kind,
                    "type_stride": r.type_stride,
                    "stride": r.stride,
                    "filter_shape": list(r.filter_shape),
                    "input_shape": list(r.input_shape),
                    "output_shape": list(r.output_shape),
                    "params": r.params,
                    "macs": r.macs,
                }
                for r in layers
            ],
            "shares": self.shares(),
        }


def variant_name(alpha: float, res: int) -> str:
    """Canonical name ``mobilenet_v1_{alpha}_{res}``, e.g. ``mobilenet_v1_0.50_160``.

    ``alpha`` is written with two decimals (the paper's grid: ``1.00``, ``0.75``, ``0.50``, ``0.25``) or,
    when two decimals would not give it back exactly, with as many as it needs (``0.504`` ->
    ``mobilenet_v1_0.504_160``, ``0.496`` -> ``mobilenet_v1_0.496_160``): two different alphas never share
    a name (issue #20), and :func:`parse_name` reads back the very alpha.
    """
    return f"mobilenet_v1_{alpha_text(alpha)}_{check_res(res)}"


def alpha_text(alpha: float) -> str:
    """``alpha`` in positional notation with at least two decimals, exact: ``float(text) == alpha``.

    ``0.5`` -> ``"0.50"``, ``0.504`` -> ``"0.504"``, ``1e-05`` -> ``"0.00001"``, ``1/3`` ->
    ``"0.3333333333333333"`` (Python's shortest round-trip digits, never an exponent).
    """
    value = check_alpha(alpha)
    text = f"{value:.2f}"
    if float(text) != value:
        text = format(Decimal(repr(value)), "f")  # shortest digits that give the float back, no exponent
    return text


_NAME_RE = re.compile(r"mobilenet_v1_(\d+(?:\.\d+)?)_(\d+)")


def parse_name(name: str) -> tuple[float, int] | None:
    """(alpha, res) from a name such as ``mobilenet_v1_0.5_160_quant.tflite``; None if absent."""
    m = _NAME_RE.search(name)
    if not m:
        return None
    return float(m.group(1)), int(m.group(2))


def grid() -> list[Variant]:
    """The paper's 16 grid points, alpha descending then res descending."""
    return [Variant(a, r) for a in GRID_ALPHAS for r in GRID_RES]
