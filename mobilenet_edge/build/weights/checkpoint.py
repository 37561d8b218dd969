"""Own ``.safetensors`` checkpoints and PyTorch ``.pt``/``.pth`` state dicts: save, read, validate, load.

Nothing here unpickles untrusted code: ``.safetensors`` is a plain tensor container, and a ``.pt``
whose unpickling would need anything beyond tensors and plain containers is refused
(``torch.load(weights_only=True)`` only).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...core.bundle import atomic_path, sha256_file
from ...core.errors import UsageError, WeightsError
from ...core.variants import BLOCKS
from .foreign import is_own_layout, map_state_dict
from .load import LoadedWeights, check_weights_path, model_from_arrays
from .tfslim import infer_alpha

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..model import MobileNetV1

CHECKPOINT_FORMAT = "mobilenet-edge-weights"
CHECKPOINT_FORMAT_VERSION = 1


def save_checkpoint(
    loaded_or_model: LoadedWeights | MobileNetV1,
    dst: str | Path,
    *,
    preprocessing: dict | None = None,
    labels: list[str] | None = None,
    source_info: dict | None = None,
) -> None:
    """Write a ``.safetensors`` checkpoint atomically (temp file + rename; nothing half-written).

    The model's state dict is stored as tensors; its config, the preprocessing (without ``res``),
    the labels and the source (``{"source", "file", "sha256"}`` of what it came from) are stored as
    JSON strings in the safetensors metadata, so the file alone is enough for export.

    Args:
        loaded_or_model: a :class:`LoadedWeights` (its fields are the defaults) or a ``MobileNetV1``.
        dst: destination path ending in ``.safetensors``.
        preprocessing, labels, source_info: override/supply the metadata.
    Raises:
        UsageError: ``dst`` does not end in ``.safetensors``.
    """
    from safetensors.torch import save_file

    dst = Path(dst)
    if dst.suffix.lower() != ".safetensors":
        raise UsageError(f"checkpoint must be a .safetensors file, got {dst.name}")
    if isinstance(loaded_or_model, LoadedWeights):
        lw = loaded_or_model
        model = lw.model
        preprocessing = preprocessing if preprocessing is not None else lw.preprocessing
        labels = labels if labels is not None else lw.labels
        if source_info is None:
            source_info = lw.origin or {"source": lw.source, "file": lw.file, "sha256": lw.sha256}
    else:
        model = loaded_or_model
    if preprocessing is not None:
        preprocessing = {k: v for k, v in preprocessing.items() if k != "res"}
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {
        "format": CHECKPOINT_FORMAT,
        "format_version": str(CHECKPOINT_FORMAT_VERSION),
        "config": json.dumps(model.config()),
    }
    if preprocessing is not None:
        meta["preprocessing"] = json.dumps(preprocessing)
    if labels is not None:
        meta["labels"] = json.dumps(list(labels))
    if source_info is not None:
        meta["source"] = json.dumps(source_info)
    with atomic_path(dst) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _read_safetensors(p: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as e:
        raise WeightsError(
            f"{p.name} is not a readable .safetensors file (truncated or corrupt, {p.stat().st_size} bytes): {e}"
        ) from None
    parsed: dict[str, Any] = {}
    for key in ("config", "preprocessing", "labels", "source"):
        if key in meta:
            try:
                parsed[key] = json.loads(meta[key])
            except ValueError:
                raise WeightsError(f"{p.name}: metadata {key!r} is not valid JSON") from None
    return tensors, parsed


def _read_torch(p: Path) -> tuple[dict[str, torch.Tensor], dict]:
    import pickle

    import torch

    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        import zipfile

        with open(p, "rb") as f:
            proto = f.read(1) == b"\x80"  # a pickle starts with the PROTO opcode (torch.save's zip holds one)
        if re.search(r"Unsupported operand|String is too long", str(e)) and not proto and not zipfile.is_zipfile(p):
            # text, JSON or noise: the unpickler trips on its first byte; not a refused checkpoint
            raise WeightsError(f"{p.name} is not a readable PyTorch checkpoint (truncated or corrupt)") from None
        m = re.search(r"(?:unsupported|Unsupported global:) GLOBAL ([\w.]+)", str(e))
        what = f"it would call {m.group(1)}" if m else "it needs more than tensors and plain containers"
        raise WeightsError(
            f"refusing to load {p.name}: unpickling it needs code execution ({what}), which "
            f"torch.load(weights_only=True) forbids; save a plain state dict or a .safetensors file"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{p.name} is not a readable PyTorch checkpoint (truncated or corrupt): {first}") from None
    except Exception:  # noqa: BLE001 - bytes that are neither a zip nor a pickle (e.g. text) make torch's
        # weights-only unpickler fail with KeyError, IndexError, struct.error, ... (torch 2.13)
        raise WeightsError(f"{p.name} is not a readable PyTorch checkpoint (truncated or corrupt)") from None
    meta: dict[str, Any] = {}
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("config", "preprocessing", "labels", "source"):
            if key in obj:
                meta[key] = obj[key]
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{p.name} holds no state dict (a dict of tensors), got {type(obj).__name__}")
    return dict(obj), meta


def _config_from_state_dict(sd: dict, p: Path) -> dict:
    """alpha and num_classes from tensor shapes, for checkpoints saved without a config."""
    try:
        stem_c = int(sd["stem.0.weight"].shape[0])
        last_c = int(sd[f"blocks.{len(BLOCKS) - 1}.pointwise.0.weight"].shape[0])
        num_classes = int(sd["classifier.weight"].shape[0])
    except KeyError as e:
        raise WeightsError(f"{p.name} is not a MobileNetV1 state dict: no tensor {e.args[0]!r}") from None
    channels = [stem_c] + [
        int(sd[f"blocks.{i}.pointwise.0.weight"].shape[0]) if f"blocks.{i}.pointwise.0.weight" in sd else -1
        for i in range(len(BLOCKS))
    ]
    alpha = infer_alpha(channels)
    if alpha is None:
        alpha = round(last_c / BLOCKS[-1][0], 4)
    return {"alpha": alpha, "num_classes": num_classes}


def _shape(t) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape)


def validate_state_dict(sd: dict, model: MobileNetV1, *, name: str, alpha: float | None = None) -> None:
    """Check keys, shapes and values of a state dict against ``model`` before loading it.

    Raises:
        UsageError: a shape mismatch when ``alpha`` was given by the user (wrong --alpha for the file).
        WeightsError: missing/unexpected tensors (first one named), a shape mismatch (first layer
            and both shapes), non-finite values, BN running_var with NaN or negative entries (layer named).
    """
    import torch

    want = model.state_dict()
    for k, v in want.items():
        if k not in sd:
            raise WeightsError(f"{name}: missing tensor {k} (shape {_shape(v)})")
        if _shape(sd[k]) != _shape(v):
            msg = (
                f"{name}: first mismatching layer {k}: checkpoint has shape {_shape(sd[k])}, "
                f"model with alpha {model.alpha:g} expects {_shape(v)}"
            )
            if alpha is not None:
                raise UsageError(f"--alpha {alpha:g} does not fit {msg}")
            raise WeightsError(msg)
    extra = [k for k in sd if k not in want]
    if extra:
        raise WeightsError(f"{name}: unexpected tensor {extra[0]} (shape {_shape(sd[extra[0]])})")
    for k, v in sd.items():
        if k.endswith("running_var"):
            layer = k[: -len(".running_var")]
            vv = v.double()
            if torch.isnan(vv).any():
                raise WeightsError(f"{name}: batch-norm layer {layer} has NaN in running_var")
            if (vv < 0).any():
                raise WeightsError(
                    f"{name}: batch-norm layer {layer} has negative running_var (min {vv.min().item():g})"
                )
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise WeightsError(f"{name}: tensor {k} has non-finite values (NaN or inf)")


def load_checkpoint(path: str | Path, *, alpha: float | None = None, activation: str | None = None,
                    padding: str | None = None, bn_eps: float | None = None) -> LoadedWeights:
    """Load a ``.safetensors`` checkpoint (as :func:`save_checkpoint` writes) or a ``.pt``/``.pth``
    state dict (``torch.load(weights_only=True)``; pickles needing code execution are refused).

    Config, preprocessing, labels and origin come from the metadata; a checkpoint without a config
    gets alpha and num_classes from its tensor shapes, ``activation``/``padding``/``bn_eps`` if given, and the
    model's other defaults (relu6, symmetric, 1e-3: a fine-tuned Google model needs ``padding="tf_same"``). A state dict of
    other MobileNet V1 code (keys not ours, no config) is mapped by layer order and shapes
    (:func:`~.foreign.map_state_dict`; ``activation``, ``padding``, ``bn_eps`` override its conventions).

    Args:
        path: the checkpoint.
        alpha: expected width multiplier; a checkpoint of another alpha raises UsageError naming the
            first mismatching layer and both shapes.
    Raises:
        UsageError: missing file, unknown suffix, alpha mismatch.
        WeightsError: truncated/corrupt file, refused pickle, bad tensors (see :func:`validate_state_dict`).
    """
    import torch

    from ..model import build

    p = check_weights_path(path)
    if p.suffix.lower() == ".safetensors":
        sd, meta = _read_safetensors(p)
        source = "safetensors"
    elif p.suffix.lower() in (".pt", ".pth"):
        sd, meta = _read_torch(p)
        source = "torch"
    else:
        raise UsageError(f"not a checkpoint file: {p.name} (expected .safetensors, .pt or .pth)")
    if not meta.get("config") and not is_own_layout(sd):
        return _load_foreign(p, sd, meta, source, alpha=alpha, activation=activation, padding=padding, bn_eps=bn_eps)
    given = {k: v for k, v in (("activation", activation), ("padding", padding), ("bn_eps", bn_eps)) if v is not None}
    if given and meta.get("config"):
        raise UsageError(f"--activation/--padding/--bn-eps apply to state dicts without a config; "
                         f"{p.name} carries its own config ({meta['config']})")
    config = dict(meta.get("config") or {**_config_from_state_dict(sd, p), **given})
    if alpha is not None:
        config["alpha"] = float(alpha)
    try:
        model = build(config)
    except ValueError as e:
        raise WeightsError(f"{p.name}: bad config in checkpoint: {e}") from None
    validate_state_dict(sd, model, name=p.name, alpha=alpha)
    if not meta.get("config") and padding is None:  # both paddings fit the same tensors: refuse to guess
        raise UsageError(f"{p.name} is a state dict of mobilenet-edge's MobileNetV1 without its config, which "
                         "does not record the padding: give --padding tf_same (me.create_model and Google's weights) "
                         "or --padding symmetric (MobileNetV1()'s default); `weights import` and build.weights.save_checkpoint (.safetensors) keep it")
    model.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in sd.items()})
    model.eval()
    origin = meta.get("source")
    return LoadedWeights(
        model=model,
        config=model.config(),
        source=source,
        file=p.name,
        sha256=sha256_file(p),
        preprocessing=meta.get("preprocessing"),
        labels=meta.get("labels"),
        origin=origin if isinstance(origin, dict) else None,
        mapping=None if meta.get("config") else _no_config_record(model.config(), given),
    )


def _no_config_record(config: dict, given: dict) -> dict:
    """The ``weights.mapping`` record of our own keys saved without a config (what was assumed)."""
    return {"layout": "mobilenet-edge keys without a config", "activation": config["activation"],
            "padding": config["padding"], "bn_eps": config["bn_eps"],
            "sources": {k: "given" if k in given else "MobileNetV1 default (assumed)"
                        for k in ("activation", "padding", "bn_eps")}}


def _load_foreign(p: Path, sd: dict, meta: dict, source: str, **kw) -> LoadedWeights:
    """A state dict of other MobileNet V1 code (:mod:`.foreign`), values checked as ours are."""
    mapped = map_state_dict(sd, name=p.name, **kw)
    try:
        model = model_from_arrays(mapped.state_dict, mapped.config)
    except ValueError as e:  # an activation / padding the model does not know
        raise UsageError(str(e)) from None
    validate_state_dict(model.state_dict(), model, name=p.name)  # NaN / negative running_var, non-finite
    labels = meta.get("labels")
    return LoadedWeights(model=model, config=model.config(), source=source, file=p.name, sha256=sha256_file(p),
                         preprocessing=meta.get("preprocessing"), labels=labels if isinstance(labels, list) else None,
                         mapping=mapped.record)
