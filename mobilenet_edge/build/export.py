"""The public entry of the ONNX export: :class:`ExportOptions` and :func:`export_bundle`, plus the stages
callers use on their own. The work is done in :mod:`.bundle_builder` (the bundle), :mod:`.onnx_export`
(torch -> ONNX -> onnxsim), :mod:`.parity` (the parity checks) and :mod:`.memory` (the memory check)."""

from __future__ import annotations

from .bundle_builder import BuiltModel, ExportOptions, build_model, export_bundle
from .memory import check_memory
from .onnx_export import (
    DEFAULT_OPSET,
    INPUT_NAME,
    MAX_OPSET,
    MIN_OPSET,
    ORT_FOR_OPSET,
    OUTPUT_NAME,
    check_opset,
    export_onnx,
)
from .parity import check_parity

__all__ = [
    "DEFAULT_OPSET", "INPUT_NAME", "MAX_OPSET", "MIN_OPSET", "ORT_FOR_OPSET", "OUTPUT_NAME", "BuiltModel",
    "ExportOptions", "build_model", "check_memory", "check_opset", "check_parity", "export_bundle", "export_onnx",
]
