"""The one rule for "is this model int8" (numpy + onnx; no runtime needed).

A model file is int8 when any of these holds, first match wins:

1. its input or output tensor is integer-quantized (TFLite files with a scale and zero point);
2. its ONNX ``metadata_props`` say ``precision: int8`` (our quantize writes it);
3. its name says so: ``int8`` or ``quant`` as a word of the file name, between ``.``, ``_``, ``-`` or
   the ends (our ``model.int8.onnx``, Google's ``*_quant.tflite``; not ``unquantized.onnx``);
4. its ONNX graph holds quantization ops (:data:`QUANTIZED_OPS`: QDQ, or ORT's QOperator/integer forms).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

#: op types only a quantized ONNX model holds: QDQ first, then ORT's QOperator / integer forms
QUANTIZED_OPS = ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                 "MatMulInteger", "DynamicQuantizeLinear")


def quantized_ops(model) -> list[str]:
    """The :data:`QUANTIZED_OPS` present in an ``onnx.ModelProto``, in that tuple's order."""
    ops = {n.op_type for n in model.graph.node}
    return [op for op in QUANTIZED_OPS if op in ops]


_INT8_WORD = re.compile(r"(?:^|[._-])(?:int8|quant|quantized)(?:[._-]|$)")


def is_int8_name(name: str) -> bool:
    """Rule 3: ``int8``, ``quant`` or ``quantized`` as a word of a file name (case-insensitive)."""
    return _INT8_WORD.search(name.lower()) is not None


def file_precision(
    path: str | Path,
    *,
    quantized_io: bool | None = None,
    metadata: Mapping[str, str] | None = None,
) -> str:
    """``"int8"`` or ``"fp32"`` for a model file, by the rules of the module docstring.

    Args:
        path: ``.onnx`` or ``.tflite`` file.
        quantized_io: rule 1, as a loaded runner knows it (None: not known; not checked).
        metadata: rule 2's ONNX ``metadata_props`` when already read (None: read from an ``.onnx``
            file together with rule 4).
    Returns:
        ``"int8"`` or ``"fp32"``. An unreadable ``.onnx`` file counts as fp32 here (it fails later, where
        it is loaded, with a clear error).
    """
    path = Path(path)
    if quantized_io:
        return "int8"
    if metadata is not None and metadata.get("precision") == "int8":
        return "int8"
    if is_int8_name(path.name):
        return "int8"
    if path.suffix.lower() == ".onnx":
        try:
            import onnx

            m = onnx.load(str(path), load_external_data=False)
        except Exception:  # noqa: BLE001  (protobuf decode errors have many types)
            return "fp32"
        if metadata is None and any(p.key == "precision" and p.value == "int8" for p in m.metadata_props):
            return "int8"
        if quantized_ops(m):
            return "int8"
    return "fp32"
