"""The one parity rule: an exported file must give PyTorch's logits (max |difference| <= tolerance and
the same top-1 on every input), else :class:`~mobilenet_edge.core.errors.ParityError` and no file.

:func:`check_parity` checks ``model.onnx`` on ONNX Runtime, :func:`check_tflite_parity` an fp32
``.tflite`` on LiteRT (through :class:`mobilenet_edge.runtime.runner.Runner`); both compare with
:func:`compare_logits` and fail through :func:`require_parity`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.errors import ParityError
from ..core.images import Preprocessing, load
from ..core.sessions import ort_session
from .onnx_export import INPUT_NAME, OUTPUT_NAME


def compare_logits(ref: np.ndarray, got: np.ndarray) -> tuple[float, bool]:
    """(max |ref - got|, every row's argmax equal) for two (N, classes) float32 logit arrays."""
    return float(np.max(np.abs(ref - got))), bool(np.array_equal(ref.argmax(1), got.argmax(1)))


def require_parity(diff: float, top1_equal: bool, tolerance: float, message: str) -> None:
    """Raises ParityError(message) unless ``diff <= tolerance`` and ``top1_equal`` (a NaN diff fails)."""
    if not (diff <= tolerance and top1_equal):
        raise ParityError(message)


def torch_logits(module, xs: list[np.ndarray]) -> np.ndarray:
    """``module`` (eval, no grad) on each array of ``xs``, concatenated: (sum of N, classes) float32."""
    import torch

    with torch.no_grad():
        return np.concatenate([module(torch.from_numpy(x)).numpy() for x in xs])


def check_parity(
    model, onnx_path: str | Path, *, res: int, prep: Preprocessing, images: list[Path] | None = None,
    tolerance: float = 1e-4, seed: int = 0,
) -> dict:
    """ONNX Runtime vs PyTorch logits on a seeded random batch of 3 and on real images.

    Random inputs are uniform in [-1, 1] (the preprocessed range). Images are preprocessed with
    ``prep``. Returns ``{"max_abs_diff", "max_abs_diff_random", "max_abs_diff_images", "tolerance",
    "top1_equal", "n_random", "n_images"}``.

    Raises:
        ParityError: max abs logit difference > tolerance, or a different top-1 on any input.
    """
    rng = np.random.default_rng(seed)
    batches = [("random", rng.uniform(-1, 1, size=(3, 3, res, res)).astype(np.float32))]
    if images:
        batches.append(("images", np.stack([load(p, prep) for p in images])))
    sess = ort_session(onnx_path)
    result = {"tolerance": tolerance, "top1_equal": True, "n_random": 3, "n_images": len(images or [])}
    worst = 0.0
    for kind, x in batches:
        ref = torch_logits(model.eval(), [x])
        got = sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        diff, top1_equal = compare_logits(ref, got)
        result[f"max_abs_diff_{kind}"] = diff
        worst = max(worst, diff)
        result["top1_equal"] = result["top1_equal"] and top1_equal
    result["max_abs_diff"] = worst
    require_parity(worst, result["top1_equal"], tolerance, (
        f"ONNX Runtime disagrees with PyTorch: max abs logit difference {worst:.3g} "
        f"(tolerance {tolerance:g}), top-1 {'identical' if result['top1_equal'] else 'differs'}"
    ))
    return result


def check_tflite_parity(module, runner, xs: list[np.ndarray], *, tolerance: float, n_images: int) -> dict:
    """An fp32 ``.tflite`` vs PyTorch on ``xs`` (real images first, then seeded random inputs).

    Args:
        module: the PyTorch module the file was converted from (same input layout as the file).
        runner: :class:`~mobilenet_edge.runtime.runner.Runner` on the ``.tflite``.
        xs: (1, ...) float32 arrays in the graph's layout.
        tolerance: max |logit difference| allowed.
        n_images: how many of ``xs`` are real images (the rest are random).
    Returns:
        ``{"max_abs_diff", "tolerance", "top1_equal", "n_random", "n_images"}``.
    Raises:
        ParityError: beyond ``tolerance`` or a different top-1 on any input.
    """
    ref = torch_logits(module, xs)
    diff, top1_equal = compare_logits(ref, runner.run(np.concatenate(xs)))
    require_parity(diff, top1_equal, tolerance, (
        f"fp32 .tflite differs from PyTorch: max |logit diff| {diff:.3g} (tolerance {tolerance:g}), "
        f"top-1 equal: {top1_equal} on {len(xs)} inputs; no file written"
    ))
    return {
        "max_abs_diff": diff,
        "tolerance": tolerance,
        "top1_equal": top1_equal,
        "n_random": len(xs) - n_images,
        "n_images": n_images,
    }
