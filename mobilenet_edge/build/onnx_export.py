"""torch model -> ONNX (TorchScript exporter) -> onnxsim -> checked, atomically written ``model.onnx``."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
import warnings
from pathlib import Path

from .. import __version__
from ..core.bundle import atomic_path
from ..core.errors import MobilenetEdgeError, UsageError

#: Lowest opset the pipeline needs: per-channel QDQ (QuantizeLinear/DequantizeLinear with ``axis``)
#: arrived in opset 13.
MIN_OPSET = 13
DEFAULT_OPSET = MIN_OPSET
#: Highest opset the TorchScript exporter emits.
MAX_OPSET = 20

#: First onnxruntime release implementing each opset (ORT docs/Versioning.md "version matrix").
ORT_FOR_OPSET = {13: "1.6", 14: "1.8", 15: "1.9", 16: "1.11", 17: "1.12", 18: "1.14", 19: "1.15", 20: "1.17",
                 21: "1.18", 22: "1.20"}

INPUT_NAME = "input"
OUTPUT_NAME = "logits"

@contextlib.contextmanager
def _quiet():
    """Silence chatty library prints (onnxsim's 'Checking 0/1...' on stdout) and export warnings; with
    --debug (MOBILENET_EDGE_DEBUG=1) the prints go to stderr instead."""
    sink = sys.stderr if os.environ.get("MOBILENET_EDGE_DEBUG") == "1" else io.StringIO()
    with contextlib.redirect_stdout(sink), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def check_opset(opset: int) -> int:
    """Raises UsageError for an opset the pipeline cannot use, naming the minimum."""
    if opset < MIN_OPSET:
        raise UsageError(
            f"--opset {opset} is too low: the pipeline needs opset >= {MIN_OPSET} (per-channel QDQ quantization)"
        )
    if opset > MAX_OPSET:
        raise UsageError(f"--opset {opset} is not supported by the exporter (max {MAX_OPSET})")
    return opset


def export_onnx(model, dst: str | Path, *, res: int, opset: int = DEFAULT_OPSET, metadata: dict | None = None) -> dict:
    """torch model -> simplified, checked ONNX file at ``dst`` (written atomically).

    The graph has input ``input`` (N, 3, res, res) float32 and output ``logits`` (N, classes) float32,
    N dynamic. Returns ``{"exporter", "opset", "ir_version", "nodes_before", "nodes_after",
    "min_onnxruntime", "seconds"}``.

    Exporter: the TorchScript exporter (``dynamo=False``). Measured on torch 2.13 for 0.5/160 tf_same:
    it emits opset 13 directly (the dynamo exporter needs >= 18, i.e. onnxruntime >= 1.14 on the Pi),
    takes ~1 s versus ~10 s, is byte-for-byte deterministic, and after onnxsim gives the same
    27 Conv + 27 Clip graph (59 nodes) as dynamo's 57. It is deprecated upstream; if a future torch
    drops it we fall back to dynamo at opset >= 18.

    Raises:
        UsageError: unsupported opset.
        MobilenetEdgeError: onnxsim's own check or onnx.checker fails.
    """
    import onnx
    import onnxsim
    import torch

    check_opset(opset)
    t0 = time.perf_counter()
    model = model.eval()
    example = torch.zeros(2, 3, res, res)
    buf = io.BytesIO()
    exporter = "torchscript"
    with _quiet(), torch.no_grad():
        try:
            torch.onnx.export(
                model, (example,), buf, dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}}, do_constant_folding=True,
            )
        except (TypeError, RuntimeError, AttributeError) as e:  # pragma: no cover - future torch
            if "dynamo" not in str(e).lower() and "torchscript" not in str(e).lower():
                raise
            exporter, opset = "dynamo", max(opset, 18)
            buf = io.BytesIO()
            prog = torch.onnx.export(
                model, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_shapes={"x": {0: torch.export.Dim("N")}},
            )
            prog.save(buf)
    raw = onnx.load_from_string(buf.getvalue())
    nodes_before = len(raw.graph.node)
    with _quiet():
        simplified, ok = onnxsim.simplify(raw, check_n=1, test_input_shapes={INPUT_NAME: [1, 3, res, res]})
    if not ok:
        raise MobilenetEdgeError("onnxsim's check of the simplified model against the original failed")
    # the oldest IR version that carries this opset, so older runtimes (on a Pi) load the file
    simplified.ir_version = onnx.helper.find_min_ir_version_for(list(simplified.opset_import))
    simplified.producer_name = "mobilenet-edge"
    simplified.producer_version = __version__
    del simplified.metadata_props[:]
    for k, v in (metadata or {}).items():
        simplified.metadata_props.add(key=str(k), value=v if isinstance(v, str) else json.dumps(v))
    onnx.checker.check_model(simplified, full_check=True)
    with atomic_path(dst) as tmp:
        onnx.save(simplified, str(tmp))
    return {
        "exporter": exporter,
        "opset": opset,
        "ir_version": simplified.ir_version,
        "nodes_before": nodes_before,
        "nodes_after": len(simplified.graph.node),
        "min_onnxruntime": ORT_FOR_OPSET.get(opset, "unknown"),
        "seconds": round(time.perf_counter() - t0, 3),
    }
