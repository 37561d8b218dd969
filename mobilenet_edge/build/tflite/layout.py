"""The graph's input layout: an NHWC wrapper around the NCHW model, and preprocessed arrays brought to
the graph's layout (NCHW or NHWC, batch 1 each), plus seeded random inputs for the parity check."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from ...core.errors import UsageError


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


def batches(arrays: Iterable[np.ndarray] | None, *, res: int, nhwc: bool, what: str) -> list[np.ndarray]:
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

