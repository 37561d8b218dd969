"""Load any supported weights file (``.tflite``, ``.h5``, ``.safetensors``, ``.pt``/``.pth``): the path check,
the suffix dispatch, and :class:`LoadedWeights` (a model plus what its weights need)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ...core.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from ..model import MobileNetV1

SUFFIXES = (".tflite", ".safetensors", ".pt", ".pth", ".h5")


@dataclass
class LoadedWeights:
    """A model with weights loaded plus what its weights need.

    Attributes:
        model: ``MobileNetV1`` in eval mode.
        config: ``model.config()`` (alpha, num_classes, activation, padding, dropout, bn_eps).
        source: ``"tflite"``, ``"safetensors"`` or ``"torch"`` (the file actually read).
        file: basename of that file.
        sha256: hex sha256 of that file.
        preprocessing: :class:`~mobilenet_edge.core.images.Preprocessing` fields without ``res``, or None.
        labels: one name per output index (1001 with ``"background"`` first for TF-slim) or None.
        origin: for checkpoints, the source recorded when they were saved (e.g. the ``.tflite`` they
            were imported from: ``{"source", "file", "sha256"}``), else None.
        mapping: for state dicts of other MobileNet V1 code (:mod:`.foreign`), how they were mapped (layout,
            activation, padding, BN eps and where each came from, shared blocks, folded conv biases), else None.
    """

    model: MobileNetV1
    config: dict
    source: str
    file: str
    sha256: str
    preprocessing: dict | None = None
    labels: list[str] | None = None
    origin: dict | None = field(default=None)
    mapping: dict | None = None

    def source_info(self) -> dict:
        """``{"source", "file", "sha256"}`` of the file read, plus ``"origin"`` and ``"mapping"`` when known."""
        d = {"source": self.source, "file": self.file, "sha256": self.sha256}
        if self.origin:
            d["origin"] = self.origin
        if self.mapping:
            d["mapping"] = self.mapping
        return d



def check_weights_path(path: str | Path) -> Path:
    """Check that ``path`` names an existing weights file with a known suffix.

    Raises:
        UsageError: missing file, a folder, or an unknown suffix.
    """
    p = Path(path)
    if not p.exists():
        raise UsageError(f"weights file not found: {p}")
    if not p.is_file():
        raise UsageError(f"weights path is not a file: {p}")
    if p.suffix.lower() not in SUFFIXES:
        raise UsageError(f"unsupported weights file {p.name}: expected one of {', '.join(SUFFIXES)}")
    return p


def load_weights(path: str | Path, *, alpha: float | None = None, **conventions) -> LoadedWeights:
    """Load any supported weights file, dispatching on its suffix.

    Args:
        path: ``.tflite`` (TF-slim MobileNet V1), ``.h5`` (Keras applications MobileNet), ``.safetensors``
            (own checkpoint) or ``.pt``/``.pth``.
        alpha: expected width multiplier; a file of another alpha raises UsageError.
        conventions: ``activation``, ``padding``, ``bn_eps`` for state dicts of other MobileNet V1 code
            (:func:`~.foreign.map_state_dict`; None values: the known layout's or PyTorch's defaults).
    Raises:
        UsageError: missing file, unknown suffix, alpha mismatch.
        WeightsError: truncated/corrupt file, not a MobileNet V1, bad tensors.
    """
    from .checkpoint import load_checkpoint
    from .tfslim import import_tflite

    p = check_weights_path(path)
    given = [k for k, v in conventions.items() if v is not None]
    if given and p.suffix.lower() in (".tflite", ".h5"):
        raise UsageError(f"--{given[0].replace('_', '-')} applies to PyTorch state dicts of other MobileNet V1 code; "
                         f"{p.name} carries its own conventions")
    if p.suffix.lower() == ".tflite":
        return import_tflite(p, alpha=alpha)
    if p.suffix.lower() == ".h5":
        from .keras import import_keras_h5

        return import_keras_h5(p, alpha=alpha)
    return load_checkpoint(p, alpha=alpha, **conventions)


def model_from_arrays(state_dict: dict, config: dict):
    """A :class:`~mobilenet_edge.build.model.MobileNetV1` in eval mode from a mapped state dict of numpy
    arrays (every key must fit: ``strict=True``) and its config (:func:`~mobilenet_edge.build.model.build`)."""
    import torch

    from ..model import build

    model = build(config)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()}, strict=True)
    return model.eval()


def passthrough_bn(bias, eps: float) -> dict:
    """``BatchNorm2d`` tensors (``weight``, ``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked``;
    float32 numpy) that add ``bias`` (C,) and nothing else in eval mode, for weights whose BN is folded into the
    conv: ``running_mean = 0``, ``running_var = 1``, ``weight = sqrt(1 + eps)``, so
    ``BN(x) = x / sqrt(1 + eps) * sqrt(1 + eps) + bias = x + bias`` within float32 rounding (one ulp)."""
    import math

    import numpy as np

    c = len(bias)
    return {"weight": np.full(c, math.sqrt(1.0 + eps), np.float32), "bias": np.asarray(bias, np.float32),
            "running_mean": np.zeros(c, np.float32), "running_var": np.ones(c, np.float32),
            "num_batches_tracked": np.zeros((), np.int64)}
