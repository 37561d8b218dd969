"""State dicts of other PyTorch MobileNet V1 code -> :class:`~mobilenet_edge.build.model.MobileNetV1`.

The mapping goes by layer order and tensor shapes, not by key names: the tensors are grouped into
layers by their module prefix (``conv1.weight`` + ``conv1.bias`` is one conv; a prefix holding
``running_mean``/``running_var`` is a batch norm; a 2-D ``weight`` is a linear layer), taken in the order
the state dict holds them (the order the modules were registered, which is the forward order of every
sequential MobileNet V1 we know; a lone linear layer registered before the features is still the
classifier), and laid onto the paper's Table 1 slots: the stem conv (C, 3, 3, 3),
13 depthwise (C, 1, 3, 3) / pointwise (C', C, 1, 1) pairs, then the classifier (a Linear (K, C) or a 1x1
conv (K, C, 1, 1)). Every shape is checked against the model of the inferred (or given) alpha; the first
tensor that does not fit is named with both shapes.

- A conv followed by a batch norm keeps that batch norm; a conv bias is folded into it exactly:
  ``BN(Wx + b) = gamma * (Wx - (mean - b)) / sqrt(var + eps) + beta``, so ``running_mean -= b``.
- A conv without a batch norm (BN already folded into the conv) gets a pass-through batch norm that adds
  its bias (:func:`~.load.passthrough_bn`).
- What a state dict cannot say (activation, padding, BN eps, and a block whose weights are applied
  several times) comes from a known layout (:data:`LAYOUTS`, recognised by its keys) or from the caller,
  else from PyTorch's defaults (ReLU, symmetric padding, eps 1e-5). The result records each choice and
  where it came from (the manifest's ``weights.mapping``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...core.errors import UsageError, WeightsError
from ...core.variants import BLOCKS
from .load import passthrough_bn
from .tfslim import expected_channels, infer_alpha

#: PyTorch's defaults (nn.ReLU as most PyTorch MobileNet V1 code and the paper's text, Conv2d padding=1,
#: nn.BatchNorm2d eps=1e-5), used where neither a known layout nor the caller says otherwise
PYTORCH_DEFAULTS = {"activation": "relu", "padding": "symmetric", "bn_eps": 1e-5}


@dataclass(frozen=True)
class Layout:
    """A known layout of other MobileNet V1 code: how to recognise it and what its state dict cannot say.

    Attributes:
        name: short name recorded in the manifest.
        keys: tensor names that all occur in its state dicts (recognition).
        repeats: module prefix -> how many times the forward pass applies that block (shared weights).
        activation, padding, bn_eps: its conventions (:class:`~mobilenet_edge.build.model.MobileNetV1` args).
        source: where the facts come from.
    """

    name: str
    keys: tuple[str, ...]
    repeats: dict = field(default_factory=dict)
    activation: str = "relu"
    padding: str = "symmetric"
    bn_eps: float = 1e-5
    source: str = ""


#: Known layouts. The blog layout: ../shared/data/checkpoints/README.md (stem conv1/bn1, blocks dw_s1 ...
#: dw_s8 of Sequential(dw conv, BN, ReLU, pw conv, BN, ReLU) with conv biases, one block dw_x5 applied five
#: times for the five 512 -> 512 layers, ReLU, padding 1 on every side, BN eps 1e-5, fc).
LAYOUTS: tuple[Layout, ...] = (
    Layout("blog-dw_x5", keys=("dw_x5.depthwise_layer.0.weight", "dw_x5.depthwise_layer.3.weight"),
           repeats={"dw_x5": 5}, source="blog implementation (dw_s1..dw_s8 + dw_x5 shared by the 512-channel layers)"),
)


@dataclass
class _Layer:
    kind: str  # "conv" | "bn" | "linear"
    prefix: str
    tensors: dict[str, np.ndarray]

    def key(self, param: str = "weight") -> str:
        return f"{self.prefix}.{param}" if self.prefix else param

    @property
    def shape(self) -> tuple[int, ...]:
        w = self.tensors.get("weight", self.tensors.get("running_mean"))
        return tuple(int(s) for s in w.shape)


@dataclass
class Mapped:
    """A foreign state dict mapped onto ``MobileNetV1``.

    Attributes:
        state_dict: ``MobileNetV1`` keys -> float32 numpy arrays (every key of the model).
        config: :func:`~mobilenet_edge.build.model.build` arguments (alpha, num_classes, activation, padding, bn_eps).
        record: the manifest's ``weights.mapping`` (layout, conventions and their source, what was folded).
    """

    state_dict: dict[str, np.ndarray]
    config: dict
    record: dict


def _array(v) -> np.ndarray:
    """A torch tensor (any float dtype, bfloat16 included) or array -> numpy."""
    if hasattr(v, "detach"):
        v = v.detach().cpu()
        return (v.float() if v.is_floating_point() else v).numpy()
    return np.asarray(v)


def known_layout(keys) -> Layout | None:
    """The :data:`LAYOUTS` entry whose keys all occur in ``keys``, else None."""
    ks = set(keys)
    return next((lay for lay in LAYOUTS if set(lay.keys) <= ks), None)


def _group(sd: dict[str, np.ndarray], name: str) -> list[_Layer]:
    """Tensors -> layers by module prefix, in the state dict's order."""
    groups: dict[str, dict[str, np.ndarray]] = {}
    for k, v in sd.items():
        prefix, _, param = k.rpartition(".")
        groups.setdefault(prefix, {})[param] = v
    layers = []
    for prefix, t in groups.items():
        if "running_mean" in t or "running_var" in t:
            for p in ("running_mean", "running_var"):
                if p not in t:
                    raise WeightsError(f"{name}: batch norm {prefix} has no {p}")
            layers.append(_Layer("bn", prefix, t))
        elif "weight" in t and t["weight"].ndim == 4:
            layers.append(_Layer("conv", prefix, t))
        elif "weight" in t and t["weight"].ndim == 2:
            layers.append(_Layer("linear", prefix, t))
        else:
            k = f"{prefix}.{next(iter(t))}" if prefix else next(iter(t))
            shape = tuple(int(s) for s in next(iter(t.values())).shape)
            raise WeightsError(f"{name} is not a MobileNet V1 state dict: tensor {k} {shape} is neither a conv, "
                               "a batch norm nor a linear layer")
    return layers


def _unroll(layers: list[_Layer], repeats: dict) -> list[_Layer]:
    """Repeat the layers of each shared block (prefix ``P`` or ``P.*``) ``repeats[P]`` times in place."""
    out: list[_Layer] = []
    i = 0
    while i < len(layers):
        block = next((p for p in repeats if layers[i].prefix == p or layers[i].prefix.startswith(p + ".")), None)
        if block is None:
            out.append(layers[i])
            i += 1
            continue
        j = i
        while j < len(layers) and (layers[j].prefix == block or layers[j].prefix.startswith(block + ".")):
            j += 1
        out += layers[i:j] * int(repeats[block])
        i = j
    return out


def _pair(layers: list[_Layer]) -> tuple[list[tuple[_Layer, _Layer | None]], list[_Layer]]:
    """(conv, its batch norm or None) in order, then the layers after the last conv-or-BN run."""
    convs: list[tuple[_Layer, _Layer | None]] = []
    i = 0
    while i < len(layers) and layers[i].kind == "conv":
        bn = layers[i + 1] if i + 1 < len(layers) and layers[i + 1].kind == "bn" else None
        convs.append((layers[i], bn))
        i += 2 if bn is not None else 1
    return convs, layers[i:]


def _slots(alpha: float) -> list[tuple[str, str, tuple[int, ...]]]:
    """(our key prefix, what, expected weight shape) of the 27 convs of paper Table 1 at ``alpha``."""
    ch = expected_channels(alpha)
    slots = [("stem", "the stem conv", (ch[0], 3, 3, 3))]
    for b in range(len(BLOCKS)):
        slots.append((f"blocks.{b}.depthwise", f"the depthwise conv of block {b + 1}", (ch[b], 1, 3, 3)))
        slots.append((f"blocks.{b}.pointwise", f"the pointwise conv of block {b + 1}", (ch[b + 1], ch[b], 1, 1)))
    return slots


def _alpha(convs, name: str, alpha: float | None) -> tuple[float, bool]:
    """(alpha, inferred?) from the convs' output channels (every layer checked), else a best guess for
    the error message (the first layers decide)."""
    first = convs[0][0] if convs else None
    if first is None or first.shape[1:] != (3, 3, 3):
        what = f"found {first.key()} {first.shape}" if first is not None else "found no conv"
        raise WeightsError(f"{name} is not a MobileNet V1 state dict: expected the stem conv (C, 3, 3, 3) first, {what}")
    if alpha is not None:
        return float(alpha), False
    channels = [convs[0][0].shape[0]] + [c.shape[0] for c, _ in convs[2::2]]
    if len(channels) == len(BLOCKS) + 1:
        a = infer_alpha(channels)
        if a is not None:
            return a, True
    guess = round(channels[1] / BLOCKS[0][0], 2) if len(channels) > 1 and channels[1] > 8 else channels[0] / 32
    return guess, True


def _check(convs, rest, name: str, alpha: float, inferred: bool) -> _Layer:
    """Shapes of the 27 convs and the classifier; returns the classifier layer."""
    def fail(msg: str):
        if not inferred:
            raise UsageError(f"--alpha {alpha:g} does not fit {msg}")
        raise WeightsError(msg)

    slots = _slots(alpha)
    for k, (_, what, shape) in enumerate(slots):
        if k >= len(convs):
            found = rest[0] if rest else None
            got = f"{found.key()} {found.shape}" if found else "nothing"
            fail(f"{name}: a layer is missing: expected {what} {shape} (alpha {alpha:g}), found {got}")
        conv, bn = convs[k]
        if conv.shape != shape:
            fail(f"{name}: {conv.key()} has shape {conv.shape}, {what} of MobileNet V1 alpha {alpha:g} is {shape}")
        if bn is not None and bn.shape != (shape[0],):
            fail(f"{name}: batch norm {bn.key('running_mean')} has {bn.shape[0]} channels, {what} has {shape[0]}")
    extra = convs[len(slots):]
    cls = None
    if extra and extra[0][1] is None and extra[0][0].shape[2:] == (1, 1) and not rest:  # a 1x1 conv classifier
        cls, extra = extra[0][0], extra[1:]
    elif rest and rest[0].kind == "linear":
        cls, rest = rest[0], rest[1:]
    if extra or (cls is None and rest):
        x = extra[0][0] if extra else rest[0]
        fail(f"{name}: an extra layer: {x.key()} {x.shape} after the 13 depthwise/pointwise blocks of MobileNet V1 "
             "(expected the classifier)")
    if cls is None:
        raise WeightsError(f"{name}: no classifier after the 13 blocks (expected a Linear (K, {slots[-1][2][0]}))")
    want = slots[-1][2][0]
    if cls.shape[1] != want:
        fail(f"{name}: classifier {cls.key()} takes {cls.shape[1]} features, the last pointwise conv of "
             f"MobileNet V1 alpha {alpha:g} gives {want}")
    if len(rest) > 0:
        raise WeightsError(f"{name}: an extra layer after the classifier: {rest[0].key()} {rest[0].shape}")
    return cls


def _conv_bn(conv: _Layer, bn: _Layer | None, eps: float) -> dict[str, np.ndarray]:
    """Our ``.0`` (conv) and ``.1`` (BN) tensors of one ConvBNAct, the conv bias folded into the BN."""
    w = conv.tensors["weight"].astype(np.float32)
    c = w.shape[0]
    b = conv.tensors.get("bias")
    b = np.zeros(c, np.float32) if b is None else b.astype(np.float64)
    if bn is None:
        return {"0.weight": w, **{f"1.{k}": v for k, v in passthrough_bn(b, eps).items()}}
    t = bn.tensors
    return {
        "0.weight": w,
        "1.weight": t.get("weight", np.ones(c)).astype(np.float32),
        "1.bias": t.get("bias", np.zeros(c)).astype(np.float32),
        "1.running_mean": (t["running_mean"].astype(np.float64) - b).astype(np.float32),
        "1.running_var": t["running_var"].astype(np.float32),
        "1.num_batches_tracked": np.asarray(t.get("num_batches_tracked", 0), np.int64).reshape(()),
    }


def map_state_dict(sd: dict, *, name: str = "checkpoint", alpha: float | None = None, activation: str | None = None,
                   padding: str | None = None, bn_eps: float | None = None, repeats: dict | None = None) -> Mapped:
    """Map a state dict of other MobileNet V1 code onto ``MobileNetV1`` (see the module docstring).

    Args:
        sd: key -> tensor (torch tensors or numpy arrays), in the order the code registered its modules.
        name: the file name for messages.
        alpha: expected width multiplier (None: inferred from the channels); a mismatch raises UsageError.
        activation, padding, bn_eps: the code's conventions (None: the known layout's, else PyTorch's defaults).
        repeats: module prefix -> times the forward pass applies it (shared blocks; None: the known layout's).
    Returns:
        :class:`Mapped` (state dict of float32 arrays, config, manifest record).
    Raises:
        WeightsError: not a MobileNet V1 (another architecture, a missing or extra layer, a classifier whose input
            width does not fit the channels): one line naming the first tensor that does not fit and what was expected.
        UsageError: ``alpha`` given and the file is of another alpha.
    """
    arrays = {k: _array(v) for k, v in sd.items()}
    layout = known_layout(arrays)
    chosen = {"activation": activation, "padding": padding, "bn_eps": bn_eps}
    conventions, sources = {}, {}
    for k, v in chosen.items():
        if v is not None:
            conventions[k], sources[k] = v, "given"
        elif layout is not None:
            conventions[k], sources[k] = getattr(layout, k), f"layout {layout.name}"
        else:
            conventions[k], sources[k] = PYTORCH_DEFAULTS[k], "PyTorch default (assumed)"
    reps = dict(repeats if repeats is not None else (layout.repeats if layout else {}))
    layers = _unroll(_group(arrays, name), reps)
    linears = [layer for layer in layers if layer.kind == "linear"]
    if len(linears) == 1 and layers[-1] is not linears[0]:  # a classifier registered before the features
        layers = [layer for layer in layers if layer is not linears[0]] + linears
    convs, rest = _pair(layers)
    a, inferred = _alpha(convs, name, alpha)
    cls = _check(convs, rest, name, a, inferred)
    eps = float(conventions["bn_eps"])
    out: dict[str, np.ndarray] = {}
    for (prefix, _, _), (conv, bn) in zip(_slots(a), convs):
        out.update({f"{prefix}.{k}": v for k, v in _conv_bn(conv, bn, eps).items()})
    w = cls.tensors["weight"]
    out["classifier.weight"] = np.ascontiguousarray(w.reshape(w.shape[0], -1), np.float32)
    out["classifier.bias"] = cls.tensors.get("bias", np.zeros(w.shape[0])).astype(np.float32)
    n_bias = sum("bias" in c.tensors for c, _ in convs[:27])
    n_bn = sum(bn is not None for _, bn in convs[:27])
    config = {"alpha": a, "num_classes": int(w.shape[0]), **conventions}
    record = {
        "layout": layout.name if layout else "generic (layer order and shapes)",
        **conventions,
        "sources": sources,
        "shared_blocks": reps,
        "conv_bias_folded": n_bias,
        "batch_norm": "from the checkpoint" if n_bn == 27 else "folded in the convs (pass-through BN)"
        if n_bn == 0 else f"{n_bn} of 27 from the checkpoint, the others folded",
        "tensors": len(arrays),
        "classifier": cls.key(),
    }
    return Mapped(out, config, record)


def is_own_layout(keys) -> bool:
    """True for our own ``MobileNetV1`` keys (``stem.0.weight``, ``blocks.N...``, ``classifier.weight``)."""
    ks = set(keys)
    return "stem.0.weight" in ks and "classifier.weight" in ks
