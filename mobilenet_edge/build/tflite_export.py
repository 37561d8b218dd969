"""The public entry of the ``.tflite`` export (needs torch and litert-torch): :func:`export_tflite` and
the pieces callers use. The work is done in :mod:`mobilenet_edge.build.tflite` (one module per job);
see :mod:`mobilenet_edge.build.tflite.export` for what the export does and checks."""

from __future__ import annotations

from .tflite.export import EXPORTER, N_RANDOM, PARITY_TOLERANCE, export_tflite
from .tflite.layout import NHWCInput, random_inputs, to_layout
from .tflite.litert import import_litert_torch
from .tflite.pt2e import grid_record, make_quantizer, quantize_pt2e, weight_bias_correct

__all__ = [
    "EXPORTER", "N_RANDOM", "PARITY_TOLERANCE", "NHWCInput", "export_tflite", "grid_record", "import_litert_torch",
    "make_quantizer", "quantize_pt2e", "random_inputs", "to_layout", "weight_bias_correct",
]
