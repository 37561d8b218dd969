"""Small ONNX / ONNX Runtime helpers shared by quantize and fidelity (numpy + onnx; no torch)."""

from __future__ import annotations

import contextlib
import math
import os
import sys
from pathlib import Path

import numpy as np

from .errors import UsageError


def import_ort_tools_without_torch() -> None:
    """Import ``onnxruntime.tools`` (used by ``quant_pre_process``'s symbolic shape inference) without
    torch: its ``__init__`` imports a PyTorch export helper whenever ``find_spec("torch")`` finds torch
    (onnxruntime 1.32, tools/__init__.py), which would break the runtime side's no-torch rule and cost
    seconds. ``sys.modules["torch"] = None`` makes ``find_spec`` return None for that one import."""
    if "onnxruntime.tools" in sys.modules or "torch" in sys.modules:
        return
    sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        import onnxruntime.tools  # noqa: F401
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]


def model_io(path: str | Path) -> dict:
    """Input/output names, shapes (ints or symbolic names) and dtypes of an ONNX file.

    Raises:
        UsageError: not a loadable ONNX file, or not one float input (N, 3, H, W) and one output.
    """
    import onnx

    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001  (protobuf decode errors have many types)
        raise UsageError(f"{path} is not a readable ONNX model: {e}") from None
    inits = {i.name for i in m.graph.initializer}
    inputs = [i for i in m.graph.input if i.name not in inits]

    def shape(vi) -> list:
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]

    if len(inputs) != 1 or len(m.graph.output) < 1:
        raise UsageError(f"{path}: expected one image input, found {len(inputs)} inputs")
    i = inputs[0]
    s = shape(i)
    dt = onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type) if i.type.tensor_type.elem_type else None
    if dt != np.float32 or len(s) != 4 or s[1] != 3:
        raise UsageError(f"{path}: input {i.name!r} must be (N,3,H,W) float32, got {s} {dt}")
    o = m.graph.output[0]
    meta = {p.key: p.value for p in m.metadata_props}
    opset = next((x.version for x in m.opset_import if x.domain in ("", "ai.onnx")), None)
    return {"input": {"name": i.name, "shape": s, "dtype": "float32"},
            "output": {"name": o.name, "shape": shape(o)}, "metadata": meta, "opset": opset,
            "ir_version": m.ir_version}


def constants(model) -> dict[str, np.ndarray]:
    """Tensor name -> value for every initializer and every Constant node's output."""
    from onnx import numpy_helper

    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)
    return consts


def activation_bounds(model) -> dict[str, tuple[float, float]]:
    """Output tensor -> (lo, hi) for Clip nodes with constant bounds and Relu nodes."""
    consts = constants(model)
    out = {}
    for n in model.graph.node:
        if n.op_type == "Relu":
            out[n.output[0]] = (0.0, math.inf)
        elif n.op_type == "Clip":
            lo, hi = -math.inf, math.inf
            attrs = {a.name: a.f for a in n.attribute}
            if "min" in attrs or "max" in attrs:  # opset < 11
                lo, hi = attrs.get("min", lo), attrs.get("max", hi)
            else:
                if len(n.input) > 1 and n.input[1]:
                    if n.input[1] not in consts:
                        continue
                    lo = float(consts[n.input[1]])
                if len(n.input) > 2 and n.input[2]:
                    if n.input[2] not in consts:
                        continue
                    hi = float(consts[n.input[2]])
            out[n.output[0]] = (lo, hi)
    return out


@contextlib.contextmanager
def stdout_to_stderr():
    """ORT's calibrators print progress to stdout; keep stdout for results (--json)."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def quiet_ort_logging():
    import logging

    return contextlib.ExitStack() if os.environ.get("MOBILENET_EDGE_DEBUG") == "1" else _LogLevel(logging.getLogger(), logging.ERROR)


class _LogLevel:
    def __init__(self, logger, level) -> None:
        self.logger, self.level = logger, level

    def __enter__(self):
        self.old = self.logger.level
        self.logger.setLevel(self.level)

    def __exit__(self, *exc):
        self.logger.setLevel(self.old)
