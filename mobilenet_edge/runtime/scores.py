"""Score numerics shared by every backend (numpy only): softmax, top-k, and the int8/uint8 tensor
(de)quantization of TFLite's affine scheme ``real = (q - zero_point) * scale``."""

from __future__ import annotations

import numpy as np

from ..core.errors import UsageError


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax; (N, C) float -> (N, C) float32 summing to 1 along ``axis``."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best classes per row, best first (ties: lower index first).

    Args:
        scores: (N, C) or (C,) scores of any numeric dtype (compared as float64, so a raw uint8
            array cannot wrap around).
        k: 1 <= k <= C.
    Returns:
        (indices (N, k) int64, values (N, k) float32); 1-D input gives 1-D outputs.
    Raises:
        UsageError: k out of range (quoting k and C).
    """
    s = np.asarray(scores)
    one = s.ndim == 1
    s2 = s.reshape(1, -1) if one else s
    n_classes = s2.shape[-1]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n_classes:
        raise UsageError(f"top-k must be between 1 and the class count {n_classes}, got {k}")
    f = s2.astype(np.float64)
    idx = np.argsort(-f, axis=-1, kind="stable")[:, :k]
    vals = np.take_along_axis(f, idx, axis=-1).astype(np.float32)
    return (idx[0], vals[0]) if one else (idx, vals)


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    """float -> integer tensor: ``clip(round(x / scale) + zero_point)`` in ``dtype``'s range."""
    info = np.iinfo(dtype)
    q = np.rint(np.asarray(x, np.float64) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """integer tensor -> float32 ``(q - zero_point) * scale`` (widened first: no uint8 wrap-around)."""
    return ((np.asarray(q).astype(np.float64) - zero_point) * scale).astype(np.float32)
