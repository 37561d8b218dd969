"""OpenVINO as a backend of :class:`~.runner.Runner` for ``.onnx`` files (optional: ``[openvino]`` extra).

The compile settings (precision hint f32, threads, latency hint) are :mod:`mobilenet_edge.core.openvino_session`'s;
this module adds what the Runner needs: the I/O facts of the compiled model (names, shapes with None for
dynamic dimensions, numpy dtypes), the ONNX metadata_props (read with ``onnx``: OpenVINO does not carry
them), and one inference call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import MobilenetEdgeError
from ..core.openvino_session import openvino_available, ov_compiled_model, ov_execution, ov_version
from .tflite_backend import one_line

#: the one line a user sees when ``--runtime openvino`` is asked for without the package
MISSING = "OpenVINO is not installed: pip install 'mobilenet-edge[openvino]'"


@dataclass
class OpenVinoModel:
    """A compiled ``.onnx`` with its I/O facts.

    Attributes:
        version: OpenVINO's version ("2026.4.1"); execution: :func:`~mobilenet_edge.core.openvino_session.ov_execution`
        (inference precision, threads, compute-layer precisions); input_name/output_name; in_shape/out_shape
        (lists, None = dynamic); input_dtype/output_dtype (numpy); metadata (ONNX metadata_props).
    """

    compiled: object
    version: str
    execution: dict
    input_name: str
    in_shape: list
    input_dtype: np.dtype
    output_name: str
    out_shape: list
    output_dtype: np.dtype
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._request = self.compiled.create_infer_request()

    def run(self, x: np.ndarray) -> np.ndarray:
        """Raw output for the batch ``x`` (already of the model's dtype and layout); a copy."""
        self._request.infer({0: np.ascontiguousarray(x)})
        return np.array(self._request.get_output_tensor(0).data)


def open_openvino(path: Path, *, threads: int, batch: int | None = None) -> OpenVinoModel:
    """Compile ``path`` (an ``.onnx``) with OpenVINO on the CPU; see :class:`OpenVinoModel`.

    Raises:
        MobilenetEdgeError: openvino is not installed, or the model does not load (one line).
    """
    if not openvino_available():
        raise MobilenetEdgeError(MISSING)
    try:
        compiled = ov_compiled_model(path, threads=threads, batch=batch)
    except Exception as e:  # noqa: BLE001 (OpenVINO raises RuntimeError / GeneralFailure / ...)
        raise MobilenetEdgeError(f"cannot load ONNX model {path} with OpenVINO: {one_line(e)}") from None
    if len(compiled.inputs) != 1:
        raise MobilenetEdgeError(f"{path} has {len(compiled.inputs)} inputs; an image classifier has one")
    i, o = compiled.inputs[0], compiled.outputs[0]
    return OpenVinoModel(
        compiled, ov_version(), ov_execution(compiled),
        i.get_any_name(), _shape(i), np.dtype(i.get_element_type().to_dtype()),
        o.get_any_name(), _shape(o), np.dtype(o.get_element_type().to_dtype()), _onnx_metadata(path),
    )


def _shape(port) -> list:
    ps = port.get_partial_shape()
    return [d.get_length() if d.is_static else None for d in ps] if ps.rank.is_static else []


def _onnx_metadata(path: Path) -> dict:
    """The file's ONNX metadata_props ({} when unreadable: OpenVINO loaded it, metadata is a bonus)."""
    try:
        import onnx

        return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    except Exception:  # noqa: BLE001
        return {}
