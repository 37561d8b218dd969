"""Manifest records of a ``.tflite``: its input/output tensors, op counts, and the int8 fidelity against
the PyTorch fp32 model (measured on :class:`mobilenet_edge.runtime.runner.Runner`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...quantize.fidelity import sqnr_db
from ...runtime.runner import Runner
from ...runtime.tflite_backend import make_interpreter
from ..parity import torch_logits


def io_record(runner: Runner, *, output: bool = False, layout: str | None = None) -> dict:
    """``{"name", "shape", "dtype", ["layout"], "quantization": {"scale", "zero_point"} or None}`` of the
    runner's input (or, with ``output``, its output: (batch, classes), as our converted graphs have) tensor."""
    if output:
        shape = (runner.fixed_batch, runner.num_classes)
        name, dtype, quant = runner.output_name, runner.output_dtype, runner.output_quant
    else:
        name, shape, dtype, quant = runner.input_name, runner.input_shape, runner.input_dtype, runner.input_quant
    rec = {"name": name, "shape": [int(v) for v in shape], "dtype": np.dtype(dtype).name}
    if layout:
        rec["layout"] = layout
    rec["quantization"] = {"scale": float(quant[0]), "zero_point": int(quant[1])} if quant else None
    return rec


def interpreter(path: str | Path, *, threads: int = 1):
    """A LiteRT (or tflite-runtime) interpreter on ``path``, tensors allocated, made as ``Runner`` makes its
    own: for what ``Runner`` does not expose (the op list, timed raw invokes in the benchmarks)."""
    return make_interpreter(path, threads=threads)[0]


def raw_invoke(it, xq: np.ndarray) -> np.ndarray:
    """One invoke of :func:`interpreter` ``it`` on an input already in its dtype (no (de)quantization);
    returns a copy of the raw output tensor."""
    it.set_tensor(it.get_input_details()[0]["index"], xq)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]).copy()


def op_counts(path: str | Path) -> dict[str, int]:
    """Op name -> count in the graph LiteRT runs (1 thread, tensors allocated, so delegated as ``Runner``
    runs it), e.g. ``{"CONV_2D": 14, ...}``."""
    counts: dict[str, int] = {}
    for op in interpreter(path)._get_ops_details():  # no public API for the op list
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return counts


def fidelity_record(module, runner: Runner, xs: list[np.ndarray], *, per_channel: bool, float_first: int) -> dict:
    """How the int8 file was quantized and how close it stays to PyTorch fp32 on ``xs``.

    Args:
        module: the fp32 PyTorch module (same input layout as the file).
        runner: :class:`~mobilenet_edge.runtime.runner.Runner` on the int8 ``.tflite``.
        xs: (1, ...) float32 arrays in the graph's layout.
        per_channel: per-output-channel weight scales were used.
        float_first: leading convs kept float.
    Returns:
        ``{"method", "per_channel", "weight_type", "activation_type", "io_type", "fidelity": {"reference",
        "n_images", "top1_agreement" (fraction), "sqnr_db" (logits SQNR, dB), "max_abs_diff"}}``.
    """
    ref = torch_logits(module, xs)
    out = runner.run(np.concatenate(xs))
    kept = f"first {float_first} convs float" if float_first else "full integer"
    return {
        "method": f"static post-training quantization, PT2E (litert-torch PT2EQuantizer), {kept}",
        "per_channel": per_channel,
        "weight_type": "int8 symmetric" + (" per-channel (axis 0)" if per_channel else " per-tensor"),
        "activation_type": "int8 per-tensor affine",
        "io_type": f"{np.dtype(runner.input_dtype).name} in, {np.dtype(runner.output_dtype).name} out",
        "fidelity": {
            "reference": "PyTorch fp32",
            "n_images": len(xs),
            "top1_agreement": float((ref.argmax(1) == out.argmax(1)).mean()),
            "sqnr_db": sqnr_db(ref, out),
            "max_abs_diff": float(np.abs(ref - out).max()),
        },
    }
