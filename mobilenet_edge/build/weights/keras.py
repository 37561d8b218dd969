"""Keras applications MobileNet V1 ``.h5`` weights (``mobilenet_{1_0|7_5|5_0|2_5}_{res}_tf.h5``) ->
``MobileNetV1`` (:func:`import_keras_h5`).

The files use Keras' legacy HDF5 weights layout (``Model.save_weights`` in Keras 2): the root's
``layer_names`` attribute lists the layers; each layer's group has a ``weight_names`` attribute and one
dataset per weight. Read with ``h5py`` (plain arrays, nothing unpickled). Layers (keras
``applications/mobilenet.py``):

- ``conv1`` (kernel HWIO (3, 3, 3, C), no bias) + ``conv1_bn``;
- ``conv_dw_{i}`` (``depthwise_kernel`` (3, 3, C, 1); Keras 3 saves it as ``kernel``) + ``conv_dw_{i}_bn``, ``conv_pw_{i}`` (kernel
  (1, 1, C, C')) + ``conv_pw_{i}_bn`` for i = 1..13;
- ``conv_preds`` (kernel (1, 1, C, K), bias (K,)), K = 1000 (no background class).

Batch norm is not folded: gamma, beta, moving mean and variance go to the model's ``BatchNorm2d``
with Keras' epsilon 1e-3. Stride-2 layers pad bottom/right (Keras: ``padding="same"`` for ``conv1``,
``ZeroPadding2D(((0, 1), (0, 1)))`` + valid for the depthwise layers), which is ``padding="tf_same"``
at every resolution whose feature maps stay even (the grid's multiples of 32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...core.bundle import sha256_file
from ...core.errors import UsageError, WeightsError
from ...core.labels import imagenet_labels
from ...core.variants import BLOCKS
from .load import LoadedWeights, model_from_arrays
from .tfslim import infer_alpha, tflite_preprocessing

KERAS_BN_EPS = 1e-3
#: Keras layer name -> our module prefix, in network order (conv layers; BN is ``<name>_bn``)
KERAS_LAYERS: tuple[tuple[str, str], ...] = (("conv1", "stem"),) + tuple(
    pair for i in range(1, len(BLOCKS) + 1)
    for pair in ((f"conv_dw_{i}", f"blocks.{i - 1}.depthwise"), (f"conv_pw_{i}", f"blocks.{i - 1}.pointwise"))
)


def _not_keras(path: Path, what: str) -> WeightsError:
    return WeightsError(f"{path.name} is not a Keras MobileNet V1 .h5 weights file: {what}")


def read_h5_layers(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """``{layer: {weight short name: float32 array}}`` from a legacy Keras ``.h5`` weights file (a
    ``model_weights`` group, as whole-model saves have, is looked into too). Short names drop the
    layer prefix and ``:0``: ``kernel``, ``depthwise_kernel``, ``bias``, ``gamma``, ``beta``,
    ``moving_mean``, ``moving_variance``.

    Raises:
        WeightsError: not an HDF5 file, truncated, no ``layer_names``.
    """
    import h5py

    p = Path(path)
    try:
        with h5py.File(p, "r") as f:
            g = f["model_weights"] if "model_weights" in f and "layer_names" not in f.attrs else f
            if "layer_names" not in g.attrs:
                raise _not_keras(p, "no layer_names attribute (not Keras' HDF5 weights layout)")
            layers = {}
            for raw in g.attrs["layer_names"]:
                name = raw.decode() if isinstance(raw, bytes) else str(raw)
                grp = g[name]
                weights = {}
                for wraw in grp.attrs.get("weight_names", []):
                    wname = wraw.decode() if isinstance(wraw, bytes) else str(wraw)
                    short = wname.split("/")[-1].split(":")[0]
                    weights[short] = np.asarray(grp[wname], dtype=np.float32)
                layers[name] = weights
            return layers
    except (OSError, KeyError) as e:
        raise WeightsError(f"{p.name} is not a readable HDF5 weights file (truncated or corrupt?): {e}") from None


def keras_state_dict(layers: dict[str, dict[str, np.ndarray]], *, path: str | Path = "model.h5",
                     alpha: float | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Keras layers -> ``MobileNetV1`` state dict (float32 arrays) and config (BN eps 1e-3, tf_same, relu6).

    Raises:
        WeightsError: a missing layer or weight (named), a bad shape, channels that follow no alpha.
        UsageError: ``alpha`` given and the file is of another alpha.
    """
    path = Path(path)
    sd: dict[str, np.ndarray] = {}
    channels = []
    for kname, prefix in KERAS_LAYERS:
        conv, bn = layers.get(kname), layers.get(kname + "_bn")
        if conv is None or bn is None:
            raise _not_keras(path, f"no layer {kname if conv is None else kname + '_bn'}")
        if kname.startswith("conv_dw_"):
            k = conv.get("depthwise_kernel", conv.get("kernel"))  # Keras 3 names it "kernel"
            if k is None:
                raise _not_keras(path, f"layer {kname} has no depthwise kernel")
            # (3, 3, C, 1) -> (C, 1, 3, 3)
            if k.ndim != 4 or k.shape[3] != 1:
                raise _not_keras(path, f"layer {kname} has a depthwise kernel of shape {k.shape}")
            w = k.transpose(2, 3, 0, 1)
        elif "kernel" in conv:
            w = conv["kernel"].transpose(3, 2, 0, 1)  # HWIO -> OIHW
            channels.append(w.shape[0])
        else:
            raise _not_keras(path, f"layer {kname} has no kernel")
        sd[f"{prefix}.0.weight"] = np.ascontiguousarray(w, np.float32)
        for ours, theirs in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                             ("running_var", "moving_variance")):
            if theirs not in bn:
                raise _not_keras(path, f"layer {kname}_bn has no {theirs}")
            sd[f"{prefix}.1.{ours}"] = bn[theirs].astype(np.float32)
        sd[f"{prefix}.1.num_batches_tracked"] = np.zeros((), np.int64)
    preds = layers.get("conv_preds")
    if not preds or "kernel" not in preds or "bias" not in preds:
        raise _not_keras(path, "no conv_preds kernel and bias (a no-top file?)")
    k = preds["kernel"]
    sd["classifier.weight"] = np.ascontiguousarray(k.reshape(-1, k.shape[-1]).T, np.float32)
    sd["classifier.bias"] = preds["bias"].astype(np.float32)
    inferred = infer_alpha(channels)
    if alpha is not None and (inferred is None or abs(inferred - alpha) > 1e-9):
        raise UsageError(f"--alpha {alpha:g} does not match {path.name} (alpha "
                         f"{'unknown' if inferred is None else f'{inferred:g}'}: stem has {channels[0]} channels)")
    if inferred is None:
        raise _not_keras(path, f"output channels {channels} follow no width multiplier alpha")
    config = {"alpha": inferred, "num_classes": int(k.shape[-1]), "activation": "relu6", "padding": "tf_same",
              "dropout": 0.001, "bn_eps": KERAS_BN_EPS}
    return sd, config


def import_keras_h5(path: str | Path, *, alpha: float | None = None) -> LoadedWeights:
    """Import Keras' MobileNet V1 ``.h5`` weights into ``MobileNetV1`` (preprocessing ``x/127.5 - 1``,
    the TF-slim evaluation crop 0.875; 1000 ImageNet labels).

    Raises:
        UsageError: missing file, alpha mismatch.
        WeightsError: not a Keras MobileNet V1 weights file (the missing layer named), truncated file.
    """
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"weights file not found: {p}")
    sd, config = keras_state_dict(read_h5_layers(p), path=p, alpha=alpha)
    model = model_from_arrays(sd, config)
    n = config["num_classes"]
    return LoadedWeights(model=model, config=model.config(), source="keras-h5", file=p.name, sha256=sha256_file(p),
                         preprocessing=tflite_preprocessing(), labels=imagenet_labels(n) if n in (1000, 1001) else None)
