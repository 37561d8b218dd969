"""Open and read a ``.tflite`` flatbuffer: identifier and appended-zip checks, the LiteRT interpreter,
and the weight/bias tensors of a TF-slim MobileNet V1 (no op is run).

- Tensors are read with the LiteRT interpreter (``ai_edge_litert``; ``tflite_runtime`` as a
  fallback), ``get_tensor_details()`` / ``get_tensor()``.
- Converter-mangled names such as
  ``MobilenetV1/MobilenetV1/Conv2d_0/Conv2D_Fold;MobilenetV1/MobilenetV1/Conv2d_0/weights_quant/FakeQuantWithMinMaxVars``
  are split at ``;`` and matched on the layer name that precedes ``/weights_quant``, ``/weights``,
  ``/depthwise_weights`` (4-D weight tensors) or ``/BatchNorm_Fold/bias``, ``/biases``,
  ``/Conv2D_bias``, ``/depthwise_bias`` (1-D bias tensors). Activation tensors carry the same layer
  names but are never 1-D, and their weight-like segments are not of those forms.
- Quantized tensors are dequantized as ``scale * (q - zero_point)`` (uint8/int8 weights, int32
  biases whose scale is input scale x weight scale; per-channel scales along
  ``quantized_dimension`` too). Float tensors (float32/float16, no quantization) are used as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...core.errors import MobilenetEdgeError, WeightsError
from ...core.variants import BLOCKS

#: TF-slim layer names in network order (stem, 13 x depthwise/pointwise, logits).
TFLITE_LAYERS: tuple[str, ...] = (
    ("Conv2d_0",)
    + tuple(f"Conv2d_{i}_{kind}" for i in range(1, len(BLOCKS) + 1) for kind in ("depthwise", "pointwise"))
    + ("Conv2d_1c_1x1",)
)

_LAYER = r"(Conv2d_\d+(?:_depthwise|_pointwise)?|Conv2d_1c_1x1)"
_WEIGHT_RE = re.compile(_LAYER + r"/(?:weights_quant/FakeQuant\w*|weights|depthwise_weights)$")
_BIAS_RE = re.compile(
    _LAYER + r"/(?:BatchNorm_Fold/bias|biases|bias|Conv2D_bias|depthwise_bias|Conv2D_Fold_bias|depthwise_Fold_bias)$"
)



@dataclass
class RawTensor:
    """One tensor as stored in a ``.tflite`` file (before dequantization)."""

    name: str
    data: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray
    quantized_dimension: int = 0

    def dequantize(self) -> np.ndarray:
        """float32 values: the data itself for float tensors, ``scale * (q - zero_point)`` otherwise
        (per-tensor, or per-channel along ``quantized_dimension``).

        Raises:
            WeightsError: an integer tensor without quantization parameters.
        """
        a = self.data
        if a.dtype.kind == "f":
            return a.astype(np.float32)
        scales = np.asarray(self.scales, np.float64).reshape(-1)
        zps = np.asarray(self.zero_points, np.float64).reshape(-1)
        if scales.size == 0:
            raise WeightsError(f"tensor {self.name!r} is {a.dtype} without quantization parameters")
        if zps.size == 0:
            zps = np.zeros_like(scales)
        q = a.astype(np.float64)
        if scales.size == 1:
            return ((q - zps[0]) * scales[0]).astype(np.float32)
        shape = [1] * a.ndim
        shape[self.quantized_dimension] = -1
        return ((q - zps.reshape(shape)) * scales.reshape(shape)).astype(np.float32)


def open_tflite(path: str | Path, **kwargs):
    """LiteRT ``Interpreter`` for a ``.tflite`` file, with one-line errors for bad files.

    Raises:
        WeightsError: not a TFLite flatbuffer (wrong identifier), truncated or corrupt file.
    """
    p = Path(path)
    with open(p, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[4:8] != b"TFL3":
        found = head[4:8] if len(head) >= 8 else head
        raise WeightsError(
            f"{p.name} is not a TFLite flatbuffer: expected file identifier b'TFL3' at byte 4, found {found!r}"
        )
    check_appended_zip(p)
    from ...runtime.tflite_backend import TfliteLoadError, make_interpreter

    try:
        return make_interpreter(p, allocate=False, **kwargs)[0]
    except TfliteLoadError as e:
        if e.needs_newer_runtime:  # predict's words: the file is fine, the runtime is too old
            raise WeightsError(str(e)) from None
        raise WeightsError(f"{p.name} is truncated or corrupt ({p.stat().st_size} bytes): {e.reason}") from None
    except MobilenetEdgeError:
        raise WeightsError(
            "reading .tflite files needs a TFLite runtime: pip install ai-edge-litert (or tflite-runtime)"
        ) from None


def check_appended_zip(p: Path) -> None:
    """TFLite files with metadata carry their associated files (e.g. the labels) as a zip appended
    after the flatbuffer. A file cut inside that zip still holds a valid flatbuffer, so check that a
    zip which starts in the file also ends in it (its end-of-central-directory record is present).

    Raises:
        WeightsError: a zip local-file header is present but the zip's end record is missing.
    """
    import struct
    import zipfile

    data = p.read_bytes()
    start = data.find(b"PK\x03\x04")
    while start != -1:
        head = data[start : start + 30]
        if len(head) == 30:
            _, _, _, method, _, _, _, _, _, name_len, _ = struct.unpack("<4sHHHHHIIIHH", head)
            name = data[start + 30 : start + 30 + name_len]
            plausible = method in (0, 8) and 0 < name_len < 256 and len(name) == name_len
            if plausible and all(32 <= c < 127 for c in name):
                if not zipfile.is_zipfile(p):
                    raise WeightsError(
                        f"{p.name} is truncated or corrupt ({len(data)} bytes): its appended metadata zip "
                        f"(from byte {start}, first file {name.decode()!r}) has no end record"
                    )
                return
        start = data.find(b"PK\x03\x04", start + 1)


def read_tflite_tensors(path: str | Path) -> dict[tuple[str, str], RawTensor]:
    """Weight and bias tensors of a TF-slim MobileNet V1 ``.tflite``, keyed ``(layer, "weights"|"bias")``.

    ``layer`` is a TF-slim name from :data:`TFLITE_LAYERS`. Weights are 4-D, biases 1-D; see the
    module docstring for the name rules.

    Raises:
        WeightsError: bad file, or two different tensors claiming the same layer and role.
    """
    interp = open_tflite(path)
    found: dict[tuple[str, str], RawTensor] = {}
    for d in interp.get_tensor_details():
        name, shape = d["name"], tuple(int(s) for s in d["shape"])
        role = layer = None
        for seg in name.split(";"):
            if len(shape) == 4 and (m := _WEIGHT_RE.search(seg)):
                role, layer = "weights", m.group(1)
                break
            if len(shape) == 1 and (m := _BIAS_RE.search(seg)):
                role, layer = "bias", m.group(1)
                break
        if role is None:
            continue
        try:
            data = np.array(interp.get_tensor(d["index"]))
        except ValueError:  # a tensor without data (not a constant): not a weight
            continue
        qp = d.get("quantization_parameters") or {}
        scales = np.asarray(qp.get("scales", []), np.float64)
        zps = np.asarray(qp.get("zero_points", []), np.int64)
        if scales.size == 0 and d.get("quantization", (0.0, 0))[0]:
            scales = np.asarray([d["quantization"][0]], np.float64)
            zps = np.asarray([d["quantization"][1]], np.int64)
        raw = RawTensor(name, data, scales, zps, int(qp.get("quantized_dimension", 0)))
        key = (layer, role)
        if key in found:
            other = found[key]
            if other.data.shape != data.shape or not np.array_equal(other.data, data):
                raise WeightsError(
                    f"{Path(path).name}: two different {role} tensors for layer {layer}: "
                    f"{other.name!r} {other.data.shape} and {name!r} {data.shape}"
                )
            continue
        found[key] = raw
    return found




def default_res(tflite_path: str | Path) -> int:
    """The input resolution stored in a ``.tflite`` file (its input tensor's height, pixels).

    Raises:
        WeightsError: not a TFLite flatbuffer, truncated or corrupt.
    """
    interp = open_tflite(tflite_path)
    return int(interp.get_input_details()[0]["shape"][1])


def read_activation_ranges(path: str | Path):
    """The activation quantization parameters of a TF-slim MobileNet V1 QAT ``.tflite``, in network order.

    Read from the interpreter's tensor details (no op is run): the model input; for each layer of
    :data:`TFLITE_LAYERS` but the logits, the fused Conv+ReLU6 output (first name segment
    ``.../<layer>/Relu6``); the average pool (``.../AvgPool_1a/AvgPool``); the logits before the squeeze
    (``.../Conv2d_1c_1x1/BiasAdd``, 4-D).

    Returns:
        :class:`mobilenet_edge.quantize.qat_ranges.QatRanges`, or None when the file's activations are
        not quantized (a float ``.tflite``: no ranges to take).
    Raises:
        WeightsError: bad file, or a quantized file where a layer's activation tensor is missing (named).
    """
    from ...core.bundle import sha256_file
    from ...quantize.qat_ranges import QatRanges, SourceRange

    p = Path(path)
    interp = open_tflite(p)
    details = interp.get_tensor_details()
    inp = interp.get_input_details()[0]
    if not inp.get("quantization", (0.0, 0))[0]:
        return None
    found: dict[str, dict] = {"input": inp}
    pool = re.compile(r"/AvgPool_1a/AvgPool$")
    for d in details:
        first = d["name"].split(";")[0]
        if len(d["shape"]) != 4:
            continue
        if (m := re.search(_LAYER + r"/Relu6$", first)) or (m := re.search(r"(Conv2d_1c_1x1)/BiasAdd$", first)):
            found.setdefault(m.group(1), d)
        elif pool.search(first):
            found.setdefault("pool", d)
    roles = [("input", "input")] + [("conv", layer) for layer in TFLITE_LAYERS[:-1]]
    roles += [("pool", "pool"), ("logits", TFLITE_LAYERS[-1])]
    out = []
    for role, layer in roles:
        d = found.get(layer)
        if d is None:
            raise WeightsError(f"{p.name}: quantized input but no quantized activation tensor for {layer}")
        scale, zp = d["quantization"]
        dtype = np.dtype(d["dtype"]).name
        if not scale or dtype not in ("uint8", "int8"):
            raise WeightsError(f"{p.name}: the activation tensor {d['name']!r} is {dtype} without a scale")
        out.append(SourceRange(role, layer if role in ("conv", "logits") else role, d["name"], float(scale), int(zp),
                               dtype, int(d["shape"][-1])))
    return QatRanges(p.name, sha256_file(p), tuple(out))
