"""An in-memory PyTorch model as a weights source: the Python API's ``mobilenet_edge.export(model)``.

The model is copied (detached, float32, CPU, eval mode), so exporting never changes the caller's
module (its train/eval mode, device or dtype). The manifest's ``weights`` record names the class and
a sha256 over the state dict (tensor names, shapes, dtypes and bytes, in key order), so two exports of
the same weights carry the same hash.
"""

from __future__ import annotations

import copy
import hashlib
from typing import TYPE_CHECKING, Any

from ...core.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from ..model import MobileNetV1

#: ``weights.source`` of a bundle exported from an in-memory model
SOURCE = "module"


def state_dict_sha256(model: Any) -> str:
    """Hex sha256 over ``model.state_dict()`` (float32 CPU tensors): each key, shape, dtype and raw bytes,
    in key order."""
    h = hashlib.sha256()
    for key, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{key}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def module_weights(model: Any) -> tuple[MobileNetV1, dict]:
    """An export-ready copy of an in-memory ``MobileNetV1`` and its manifest ``weights`` record.

    Args:
        model: a :class:`~mobilenet_edge.build.model.MobileNetV1` (any mode, device or dtype).
    Returns:
        (a float32 CPU copy in eval mode, ``{"source": "module", "class": "<module>.<qualname>",
        "state_dict_sha256": hex}``).
    Raises:
        UsageError: ``model`` is not a ``torch.nn.Module``, or a module that is not a MobileNetV1
            (naming its class).
    """
    import torch

    from ..model import MobileNetV1

    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"expected a torch.nn.Module, a weights file or a weights name, got {type(model).__name__}")
    cls = type(model)
    name = f"{cls.__module__}.{cls.__qualname__}"
    if not isinstance(model, MobileNetV1):
        raise UsageError(f"{cls.__name__} is not a MobileNet V1: export takes mobilenet_edge.build.model.MobileNetV1 "
                         f"(got {name})")
    copied = copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()
    return copied, {"source": SOURCE, "class": name, "state_dict_sha256": state_dict_sha256(copied)}
