"""Reference MobileNet V1 in PyTorch (Howard et al. 2017, arXiv:1704.04861, Table 1).

The layer table lives in :mod:`mobilenet_edge.core.variants` (``BLOCKS``) so that the analytic counts and
the module are built from the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.variants import BLOCKS, STEM_CHANNELS, check_alpha, check_num_classes, make_channels

ACTIVATIONS = ("relu6", "relu")
PADDINGS = ("symmetric", "tf_same")


def tf_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) for one spatial side.

    TF pads ``total = max((ceil(size/stride) - 1) * stride + kernel - size, 0)`` with the extra pixel
    at the end, so a stride-2 3x3 conv on an even side pads only bottom/right.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class ConvBNAct(nn.Sequential):
    """k x k conv (no bias) -> BatchNorm -> ReLU6/ReLU, as torchvision's ``Conv2dNormActivation``.

    ``padding="symmetric"`` pads (k-1)//2 on every side (PyTorch style); ``"tf_same"`` pads like
    TensorFlow 'SAME', computed from the input size at run time (bottom/right heavy for stride 2).
    Input (N, in_ch, H, W) float32 -> (N, out_ch, ceil(H/stride), ceil(W/stride)).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        kernel: int,
        stride: int,
        groups: int = 1,
        activation: str = "relu6",
        padding: str = "symmetric",
        bn_eps: float = 1e-3,
    ) -> None:
        pad = (kernel - 1) // 2 if padding == "symmetric" else 0
        act = nn.ReLU6(inplace=True) if activation == "relu6" else nn.ReLU(inplace=True)
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, stride, pad, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch, eps=bn_eps),
            act,
        )
        self.kernel = kernel
        self.stride = stride
        self.tf_same = padding == "tf_same"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tf_same and self.kernel > 1:
            # int(): the spatial size is static in every export (only the batch is dynamic), so the
            # pads become constants that onnxsim folds into the Conv (ONNX Conv has asymmetric pads).
            top, bottom = tf_same_pads(int(x.shape[-2]), self.kernel, self.stride)
            left, right = tf_same_pads(int(x.shape[-1]), self.kernel, self.stride)
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise ConvBNAct (stride s) then 1x1 pointwise ConvBNAct: one row pair of Table 1."""

    def __init__(self, in_ch: int, out_ch: int, *, stride: int, **kw) -> None:
        super().__init__()
        self.depthwise = ConvBNAct(in_ch, in_ch, kernel=3, stride=stride, groups=in_ch, **kw)
        self.pointwise = ConvBNAct(in_ch, out_ch, kernel=1, stride=1, **kw)


class MobileNetV1(nn.Module):
    """MobileNet V1.

    Args:
        alpha: width multiplier (> 0); channels ``max(int(c * alpha), 8)`` as TF-slim.
        num_classes: 1000, or 1001 for Google's checkpoints (index 0 = background).
        activation: ``relu6`` (every released MobileNet V1) or ``relu`` (the paper's text).
        padding: ``symmetric`` (PyTorch padding=1) or ``tf_same`` (TensorFlow 'SAME'; needed for
            exact parity with Google's weights).
        dropout: dropout probability before the classifier (TF-slim keeps 0.999, i.e. 0.001).
        bn_eps: batch-norm epsilon (TF-slim uses 1e-3).

    Input (N, 3, H, W) float32 with H, W >= 32; output logits (N, num_classes) float32. The final
    feature map is (N, C, ceil(H/32), ceil(W/32)).

    Raises:
        ValueError: on an invalid argument, quoting the value received.
    """

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        num_classes: int = 1000,
        activation: str = "relu6",
        padding: str = "symmetric",
        dropout: float = 0.001,
        bn_eps: float = 1e-3,
    ) -> None:
        super().__init__()
        alpha = check_alpha(alpha)
        check_num_classes(num_classes)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.alpha = alpha
        self.activation = activation
        self.padding = padding
        kw = {"activation": activation, "padding": padding, "bn_eps": bn_eps}

        c_in = make_channels(STEM_CHANNELS, alpha)
        self.stem = ConvBNAct(3, c_in, kernel=3, stride=2, **kw)  # 224x224x3 -> 112x112x32
        blocks: list[nn.Module] = []
        for base, stride in BLOCKS:  # paper Table 1, 13 distinct blocks (no weight sharing)
            c_out = make_channels(base, alpha)
            blocks.append(DepthwiseSeparable(c_in, c_out, stride=stride, **kw))
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.num_features = c_in
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c_in, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    @property
    def num_classes(self) -> int:
        """The classifier's outputs: follows a replaced head (fine-tuning's
        ``model.classifier = nn.Linear(model.num_features, 5)``)."""
        return self.classifier.out_features

    def config(self) -> dict:
        """Constructor arguments (JSON-ready), stored with checkpoints and bundles."""
        return {
            "alpha": self.alpha,
            "num_classes": self.num_classes,
            "activation": self.activation,
            "padding": self.padding,
            "dropout": self.dropout.p,
            "bn_eps": self.stem[1].eps,
        }

    def conv_layers(self) -> list[ConvBNAct]:
        """Stem and each depthwise/pointwise ConvBNAct, in order (27 entries)."""
        out = [self.stem]
        for block in self.blocks:
            out += [block.depthwise, block.pointwise]
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, C, ceil(H/32), ceil(W/32)) feature map."""
        return self.blocks(self.stem(x))

    def forward_head(self, x: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> (N, C) pooled features if ``pre_logits`` else (N, num_classes) logits."""
        x = torch.flatten(self.pool(x), 1)
        if pre_logits:
            return x
        return self.classifier(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def build(config: dict | None = None, **overrides) -> MobileNetV1:
    """Build from a config dict (as :meth:`MobileNetV1.config` returns) plus keyword overrides."""
    cfg = dict(config or {})
    cfg.update(overrides)
    known = {"alpha", "num_classes", "activation", "padding", "dropout", "bn_eps"}
    return MobileNetV1(**{k: v for k, v in cfg.items() if k in known})


def calibrate_bn(model: MobileNetV1, res: int, *, steps: int = 2, batch: int = 4, seed: int = 0) -> MobileNetV1:
    """Set BN running statistics of a randomly initialised model by forward passes on random data.

    Gives activations realistic ranges for export/quantization demos without real weights. Data are
    N(0, 0.5) images, clipped to [-1, 1] (the TF-slim input range). Returns the model in eval mode.
    """
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the steps
    with torch.no_grad():
        for _ in range(steps):
            x = (torch.randn(batch, 3, res, res, generator=gen) * 0.5).clamp(-1, 1)
            model(x)
    return model.eval()


def random_model(config: dict, res: int, *, seed: int = 0) -> MobileNetV1:
    """Seeded random init with BN statistics from :func:`calibrate_bn` (deterministic)."""
    torch.manual_seed(seed)
    return calibrate_bn(build(config), res, seed=seed)


def feature_shapes(model: MobileNetV1, res: int) -> Sequence[tuple[int, ...]]:
    """Shapes after the stem and after each block for a (1, 3, res, res) input."""
    shapes = []
    with torch.no_grad():
        x = model.stem(torch.zeros(1, 3, res, res))
        shapes.append(tuple(x.shape))
        for block in model.blocks:
            x = block(x)
            shapes.append(tuple(x.shape))
    return shapes
