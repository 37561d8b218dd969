"""An in-memory ``torch.nn.Module`` that is a MobileNet V1 -> :class:`~.load.LoadedWeights`.

Ours (:class:`~mobilenet_edge.build.model.MobileNetV1`) is taken as it is (a copy in eval mode). Any other
module goes through the state-dict mapping of :mod:`.foreign`, with what a state dict cannot say read from
the module itself:

- the forward order of its convs, batch norms and linear layers (forward hooks on one pass of a
  (1, 3, 224, 224) zero image): a block called several times (shared weights) is unrolled as often as
  it runs;
- the batch-norm eps (its ``BatchNorm2d`` modules);
- the activation and padding: each candidate (ReLU / ReLU6 x symmetric / TF 'SAME') is run against the
  module on the same random (2, 3, 96, 96) input, and the one that reproduces its logits is kept. None does
  -> :class:`~mobilenet_edge.core.errors.WeightsError` (the module computes something else).
"""

from __future__ import annotations

import copy
import itertools

from ...core.errors import UsageError, WeightsError
from .foreign import map_state_dict
from .load import LoadedWeights, model_from_arrays

#: max abs logit difference between the module and the mapped model for a candidate to be taken
TOLERANCE = 1e-4


def _forward_order(module, res: int = 224) -> list[str] | None:
    """Names of the Conv2d / BatchNorm2d / Linear submodules in the order one forward pass calls them."""
    import torch
    from torch import nn

    calls: list[str] = []
    handles = []
    for name, m in module.named_modules():
        if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
            handles.append(m.register_forward_hook(lambda mod, inp, out, name=name: calls.append(name)))
    try:
        with torch.no_grad():
            module(torch.zeros(1, 3, res, res))
    except Exception:  # noqa: BLE001 - a module that needs another input size: fall back to the registration order
        return None
    finally:
        for h in handles:
            h.remove()
    return calls


def _ordered_state_dict(module, order: list[str] | None) -> dict:
    """The module's tensors in forward order, a module run n times appearing n times (as ``name@k``)."""
    sd = module.state_dict()
    if order is None:
        return sd
    out, seen = {}, {}
    for name in order:
        k = seen[name] = seen.get(name, 0) + 1
        prefix = name if k == 1 else f"{name}@{k}"
        for key, v in sd.items():
            head, _, param = key.rpartition(".")
            if head == name:
                out[f"{prefix}.{param}"] = v
    return out


def _bn_eps(module) -> float | None:
    from torch import nn

    eps = {m.eps for m in module.modules() if isinstance(m, nn.BatchNorm2d)}
    if len(eps) > 1:
        raise WeightsError(f"the module's batch norms use several eps values {sorted(eps)}; MobileNetV1 has one")
    return eps.pop() if eps else None


def load_module(module, *, alpha: float | None = None, activation: str | None = None, padding: str | None = None,
                bn_eps: float | None = None) -> LoadedWeights:
    """A MobileNet V1 ``torch.nn.Module`` (ours, or other code's) as :class:`~.load.LoadedWeights`.

    Args:
        module: the model (left unchanged; eval mode is used for the comparison).
        alpha: expected width multiplier (None: inferred); another alpha raises UsageError.
        activation, padding, bn_eps: the module's conventions when known (None: found as the module docstring says).
    Returns:
        :class:`~.load.LoadedWeights` with ``source="module"``, ``file`` the class name, ``sha256`` of the
        mapped tensors, ``mapping`` the record (None for ours).
    Raises:
        WeightsError: not a MobileNet V1 (first tensor that does not fit named), or no candidate
            reproduces the module's logits.
        UsageError: an alpha or convention that does not fit.
    """
    import torch

    from ..model import MobileNetV1

    name = type(module).__name__
    if isinstance(module, MobileNetV1):
        model = copy.deepcopy(module).eval()
        if alpha is not None and abs(model.alpha - alpha) > 1e-9:
            raise UsageError(f"--alpha {alpha:g} does not match the module (alpha {model.alpha:g})")
        return LoadedWeights(model, model.config(), "module", name, _state_sha256(model))
    was_training = module.training
    module.eval()
    try:
        sd = _ordered_state_dict(module, _forward_order(module))
        eps = bn_eps if bn_eps is not None else _bn_eps(module)
        x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            want = module(x)
        best = None
        for act, pad in itertools.product([activation] if activation else ["relu", "relu6"],
                                          [padding] if padding else ["symmetric", "tf_same"]):
            mapped = map_state_dict(sd, name=name, alpha=alpha, activation=act, padding=pad, bn_eps=eps, repeats={})
            try:
                model = model_from_arrays(mapped.state_dict, mapped.config)
            except ValueError as e:
                raise UsageError(str(e)) from None
            with torch.no_grad():
                diff = float((model(x) - want).abs().max())
            if best is None or diff < best[0]:
                best = (diff, model, mapped)
    finally:
        module.train(was_training)
    diff, model, mapped = best
    if not diff <= TOLERANCE:
        raise WeightsError(
            f"{name}: no mapping onto MobileNetV1 reproduces the module's logits (best: {mapped.config['activation']}, "
            f"{mapped.config['padding']} padding, max abs diff {diff:.2e} > {TOLERANCE:g}); pass activation=, "
            "padding=, bn_eps= if the module uses other conventions")
    record = {**mapped.record, "layout": "module (forward order)", "max_abs_diff": diff,
              "sources": {k: ("given" if v is not None else "found by running the module")
                          for k, v in (("activation", activation), ("padding", padding))}
              | {"bn_eps": "given" if bn_eps is not None else "the module's BatchNorm2d"}}
    return LoadedWeights(model, model.config(), "module", name, _state_sha256(model), mapping=record)


def _state_sha256(model) -> str:
    """sha256 of the model's tensors (name, then raw bytes, in state-dict order): the weights' identity."""
    import hashlib

    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
