"""Activation ranges learned by quantization-aware training, mapped onto our ONNX graph (no calibration).

Google's TF-slim QAT ``.tflite`` files (``google-quant``) store every activation tensor as uint8 with the
scale and zero point learned during training. The ``build`` side reads them (in network order:
input, the 27 fused Conv+ReLU6 outputs, the average pool, the logits) into a :class:`QatRanges`; this
module maps them layer by layer onto the pre-processed fp32 ONNX graph that ORT quantizes
(:func:`map_ranges`) and turns the mapping into ORT's own inputs (:func:`ort_inputs`):

- ``TensorQuantOverrides`` ``{"scale", "zero_point"}`` for every activation tensor, so ORT's quantizer
  uses the file's numbers as they are (int8 activations: the same scale, zero point - 128);
- a ``TensorsData`` (MinMax) whose range of each tensor is the file's representable range
  ``[(qmin - zp) * scale, (qmax - zp) * scale]``, handed to ``quantize_static`` as its calibration
  cache. ORT 1.32 quantizes only tensors it has a range for, so the cache must list them; with an
  override for every one of them, the ranges themselves are never used. No calibration reader, no image.

Every tensor ORT's calibrator would collect (:func:`~.stages.calibrated_tensors`) gets a source, or
:func:`map_ranges` raises: the file's tensor of the same layer, or one of these stated rules:

- ``conv-before-relu6``: a Conv output whose only consumer is a Clip/Relu takes that activation's
  source (the file fuses Conv+ReLU6 into one tensor; ORT removes the Clip and its QDQ does the clipping);
- ``shape-op``: Flatten/Reshape/Squeeze outputs take their input's parameters (same values).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.errors import UsageError
from ..core.onnx_graph import import_ort_tools_without_torch

ROLES = ("input", "conv", "pool", "logits")
_SHAPE_OPS = ("Flatten", "Reshape", "Squeeze", "Unsqueeze")
_INT_RANGE = {"uint8": (0, 255), "int8": (-128, 127)}


@dataclass(frozen=True)
class SourceRange:
    """One quantized activation tensor of the source file.

    Attributes:
        role: ``input`` | ``conv`` (fused Conv+ReLU6 output) | ``pool`` | ``logits``.
        layer: TF-slim layer name (e.g. ``Conv2d_3_depthwise``) or the role for input/pool.
        tensor: the tensor's name in the file.
        scale: float scale (real = scale * (q - zero_point)).
        zero_point: integer zero point.
        dtype: ``uint8`` | ``int8`` (the file's type).
        channels: last dimension of the tensor (NHWC), checked against the ONNX graph.
    """

    role: str
    layer: str
    tensor: str
    scale: float
    zero_point: int
    dtype: str
    channels: int

    def real_range(self) -> tuple[float, float]:
        """(min, max) real values representable by the file's integer type."""
        lo, hi = _INT_RANGE[self.dtype]
        return (lo - self.zero_point) * self.scale, (hi - self.zero_point) * self.scale


@dataclass(frozen=True)
class QatRanges:
    """The activation ranges of one QAT ``.tflite`` file, in network order.

    Attributes:
        file: the file's name; ``sha256``: its hex sha256 (recorded in manifest.json).
        ranges: one input, then one ``conv`` per Conv node in graph order, one ``pool``, one ``logits``.
    """

    file: str
    sha256: str
    ranges: tuple[SourceRange, ...]

    def by_role(self, role: str) -> list[SourceRange]:
        return [r for r in self.ranges if r.role == role]

    def source_record(self) -> dict:
        return {"file": self.file, "sha256": self.sha256, "tensors": len(self.ranges)}


@dataclass(frozen=True)
class Mapped:
    """One ONNX activation tensor and where its quantization parameters come from."""

    tensor: str
    source: SourceRange
    rule: str  # "file" (the tensor itself), "conv-before-relu6", "shape-op"

    def record(self) -> dict:
        return {"tensor": self.tensor, "rule": self.rule, "file_tensor": self.source.tensor,
                "layer": self.source.layer, "scale": self.source.scale, "zero_point": self.source.zero_point}


def _one(qat: QatRanges, role: str) -> SourceRange:
    got = qat.by_role(role)
    if len(got) != 1:
        raise UsageError(f"{qat.file}: expected one {role} activation tensor, found {len(got)}")
    return got[0]


def _conv_channels(model, node) -> int | None:
    inits = {i.name: i for i in model.graph.initializer}
    w = inits.get(node.input[1]) if len(node.input) > 1 else None
    return int(w.dims[0]) if w is not None else None


def map_ranges(model, qat: QatRanges, tensors: set[str] | None = None) -> list[Mapped]:
    """Map the file's activation ranges onto ``model`` (the pre-processed fp32 ``onnx.ModelProto``).

    The graph input takes the file's input; the k-th Conv node in graph order takes the k-th ``conv``
    range (its output channels must match), and so does the Clip/Relu after it; GlobalAveragePool takes
    ``pool``; the node producing the graph output (Gemm or Conv) takes ``logits``; shape-only ops take
    their input's (module docstring).

    Args:
        tensors: the activation tensors ORT would quantize; each must get a source. None: no check.
    Returns:
        One :class:`Mapped` per tensor, in graph order.
    Raises:
        UsageError: layer counts or channels differ, or a tensor in ``tensors`` has no source.
    """
    convs_src = qat.by_role("conv")
    out_names = {o.name for o in model.graph.output}
    nodes = list(model.graph.node)
    consumers: dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    convs = [n for n in nodes if n.op_type == "Conv" and not any(o in out_names for o in n.output)]
    if len(convs) != len(convs_src):
        raise UsageError(f"{qat.file} has {len(convs_src)} conv activation tensors, the ONNX graph "
                         f"{len(convs)} Conv nodes before the classifier: not the same network")
    got: dict[str, Mapped] = {}
    for inp in model.graph.input:
        got[inp.name] = Mapped(inp.name, _one(qat, "input"), "file")
    for node, src in zip(convs, convs_src):
        c = _conv_channels(model, node)
        if c is not None and c != src.channels:
            raise UsageError(f"{qat.file}: layer {src.layer} has {src.channels} channels, ONNX node {node.name} {c}")
        act = consumers.get(node.output[0], [])
        if len(act) == 1 and act[0].op_type in ("Clip", "Relu"):
            got[node.output[0]] = Mapped(node.output[0], src, "conv-before-relu6")
            got[act[0].output[0]] = Mapped(act[0].output[0], src, "file")
        else:
            got[node.output[0]] = Mapped(node.output[0], src, "file")
    for n in nodes:
        if n.op_type == "GlobalAveragePool":
            got[n.output[0]] = Mapped(n.output[0], _one(qat, "pool"), "file")
        elif n.op_type in _SHAPE_OPS and n.input[0] in got:
            got[n.output[0]] = Mapped(n.output[0], got[n.input[0]].source, "shape-op")
        elif any(o in out_names for o in n.output):
            got[n.output[0]] = Mapped(n.output[0], _one(qat, "logits"), "file")
    missing = sorted(set(tensors or ()) - set(got))
    if missing:
        raise UsageError(f"{qat.file} gives no range for {len(missing)} ONNX tensor(s), e.g. {missing[0]}")
    order = {name: i for i, name in enumerate([i.name for i in model.graph.input]
                                               + [o for n in nodes for o in n.output])}
    return sorted(got.values(), key=lambda m: order.get(m.tensor, 1 << 30))


def ort_inputs(mapping: list[Mapped], activations: str, tensors: set[str] | None = None):
    """ORT's inputs for the mapped tensors: (``TensorsData`` for the calibration cache, ``TensorQuantOverrides``).

    Args:
        activations: ``uint8`` | ``int8``: the activation type ORT writes; the file's uint8 parameters
            are used as they are, or shifted by 128 (same scale) for int8.
        tensors: keep only these (the tensors ORT would calibrate); None keeps all.
    Raises:
        UsageError: an activation type other than uint8/int8.
    """
    import_ort_tools_without_torch()
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import TensorData, TensorsData

    if activations not in _INT_RANGE:
        raise UsageError(f"activations must be uint8 or int8, got {activations!r}")
    ranges, overrides = {}, {}
    for m in mapping:
        if tensors is not None and m.tensor not in tensors:
            continue
        s = m.source
        zp = s.zero_point + (_INT_RANGE[activations][0] - _INT_RANGE[s.dtype][0])
        lo, hi = _INT_RANGE[activations]
        ranges[m.tensor] = TensorData(lowest=np.float32((lo - zp) * s.scale), highest=np.float32((hi - zp) * s.scale))
        overrides[m.tensor] = [{"scale": np.array(s.scale, dtype=np.float32),
                                "zero_point": np.array(zp, dtype=np.uint8 if activations == "uint8" else np.int8)}]
    return TensorsData(CalibrationMethod.MinMax, ranges), overrides


def mapping_record(qat: QatRanges, mapping: list[Mapped]) -> dict:
    """JSON-ready record for manifest.json: the source file (name, sha256) and one row per ONNX tensor."""
    rules = {}
    for m in mapping:
        rules[m.rule] = rules.get(m.rule, 0) + 1
    return {"source": qat.source_record(), "tensors": len(mapping), "rules": rules,
            "mapping": [m.record() for m in mapping]}


__all__ = ["Mapped", "QatRanges", "ROLES", "SourceRange", "map_ranges", "mapping_record", "ort_inputs"]
