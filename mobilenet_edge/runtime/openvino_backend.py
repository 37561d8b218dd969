"""OpenVINO as a backend of :class:`~.runner.Runner` for ``.onnx`` files (optional: ``[openvino]`` extra).

The compile settings (precision hint f32, threads, latency hint) are :mod:`mobilenet_edge.core.openvino_session`'s;
this module adds what the Runner needs: the I/O facts of the compiled model (names, shapes with None for
dynamic dimensions, numpy dtypes), the ONNX metadata_props (read with ``onnx``: OpenVINO does not carry
them), and one inference call.

Batch: a file with a dynamic batch dimension is compiled with the batch fixed to 1 and run image by
image. Measured on the 2-core Xeon of benchmarks/runtimes.md (0.5/160 int8, 1 thread, p50): 0.89 ms per
image at a static batch of 1, 2.6 ms with the batch left dynamic, 4.2-4.9 ms per image in batches of 8.

Compiled-model cache: the Runner (predict, eval) passes ``CACHE_DIR`` = :func:`cache_dir`
(``$MOBILENET_EDGE_OPENVINO_CACHE``, default ``~/.cache/mobilenet-edge/openvino``; set it to an empty
string to disable): on the same machine compile time fell from 1.4 s to 0.4-0.5 s (0.5/160 int8) from
the second run on. bench never uses it (its ``init_ms`` is a cold compile).
"""

from __future__ import annotations

import os
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
        """Raw output for the batch ``x`` (already of the model's dtype and layout); a copy. A model
        compiled at batch 1 runs the batch image by image."""
        compiled_batch = self.compiled.inputs[0].get_partial_shape()[0]
        step = compiled_batch.get_length() if compiled_batch.is_static else x.shape[0]
        outs = []
        for i in range(0, x.shape[0], step):
            self._request.infer({0: np.ascontiguousarray(x[i : i + step])})
            outs.append(np.array(self._request.get_output_tensor(0).data))
        return np.concatenate(outs)


def cache_dir() -> str | None:
    """The compiled-model cache folder of predict/eval (see the module docstring); None when disabled."""
    env = os.environ.get("MOBILENET_EDGE_OPENVINO_CACHE")
    if env is not None:
        return env or None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mobilenet-edge", "openvino")


def open_openvino(path: Path, *, threads: int, batch: int | None = 1, cache: str | None = None) -> OpenVinoModel:
    """Compile ``path`` (an ``.onnx``) with OpenVINO on the CPU; see :class:`OpenVinoModel`.

    ``batch``: a dynamic batch dimension is fixed to this before compiling (None keeps it dynamic);
    ``in_shape`` still reports the file's own (None), so callers feed any batch. ``cache``: CACHE_DIR.

    Raises:
        MobilenetEdgeError: openvino is not installed, or the model does not load (one line).
    """
    if not openvino_available():
        raise MobilenetEdgeError(MISSING)
    try:
        compiled = ov_compiled_model(path, threads=threads, batch=batch, cache_dir=cache)
    except Exception as e:  # noqa: BLE001 (OpenVINO raises RuntimeError / GeneralFailure / ...)
        raise MobilenetEdgeError(f"cannot load ONNX model {path} with OpenVINO: {one_line(e)}") from None
    if len(compiled.inputs) != 1:
        raise MobilenetEdgeError(f"{path} has {len(compiled.inputs)} inputs; an image classifier has one")
    i, o = compiled.inputs[0], compiled.outputs[0]
    metadata, file_batch = _onnx_facts(path)
    in_shape, out_shape = _shape(i), _shape(o)
    if file_batch is None and in_shape and out_shape:  # compiled at a fixed batch; the file takes any
        in_shape[0] = out_shape[0] = None
    return OpenVinoModel(
        compiled, ov_version(), ov_execution(compiled),
        i.get_any_name(), in_shape, np.dtype(i.get_element_type().to_dtype()),
        o.get_any_name(), out_shape, np.dtype(o.get_element_type().to_dtype()), metadata,
    )


def _shape(port) -> list:
    ps = port.get_partial_shape()
    return [d.get_length() if d.is_static else None for d in ps] if ps.rank.is_static else []


def _onnx_facts(path: Path) -> tuple[dict, int | None]:
    """(metadata_props, the first input's batch size or None when dynamic) of the ONNX file; ({}, None)
    when unreadable (OpenVINO loaded it: these are extras)."""
    try:
        import onnx

        m = onnx.load(str(path), load_external_data=False)
        dims = m.graph.input[0].type.tensor_type.shape.dim
        batch = dims[0].dim_value if len(dims) and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None
        return {p.key: p.value for p in m.metadata_props}, batch
    except Exception:  # noqa: BLE001
        return {}, None
