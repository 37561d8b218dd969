"""The one OpenVINO compile helper (CPU plugin), used by the runner, bench and the int8 fidelity report.

It lives in ``core`` (next to :mod:`.sessions`, ONNX Runtime's factory) because both ``runtime`` and
``quantize`` run models through it and neither may import the other. ``openvino`` is an optional
dependency (``pip install 'mobilenet-edge[openvino]'``), imported only inside these functions.

OpenVINO reads ``.onnx`` directly (fp32 and ONNX Runtime's QDQ int8: its CPU plugin turns each
QuantizeLinear/DequantizeLinear pair into a FakeQuantize and runs the convolutions in u8/i8), so no IR
conversion step is needed. Settings spelled out here once:

* ``INFERENCE_PRECISION_HINT`` = ``f32`` by default. Without it, a CPU with bf16 support (AVX512_BF16,
  AMX) runs "fp32" models in bf16: measured here on a Xeon with AMX, the default compiled to bf16.
  The hint applies to floating-point layers only; quantized layers stay u8/i8.
* ``INFERENCE_NUM_THREADS`` = ``threads`` when given (else OpenVINO's default: all cores).
* ``PERFORMANCE_HINT`` = ``LATENCY`` (one stream: batch-1 latency, the number bench reports).
* ``CACHE_DIR`` only when ``cache_dir`` is given (compiled blobs; speeds up the next compile).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

#: the pip distribution, module and runtime name
OPENVINO = "openvino"
#: OpenVINO's CPU layer types that carry the model's arithmetic (what "ran in which precision" counts)
COMPUTE_LAYERS = ("Convolution", "GroupConvolution", "FullyConnected", "MatMul", "Deconvolution")


def openvino_available() -> bool:
    """True when ``import openvino`` would succeed (without importing it)."""
    from importlib.util import find_spec

    return find_spec(OPENVINO) is not None


def ov_compiled_model(
    model: str | Path,
    *,
    threads: int | None = None,
    precision: str = "f32",
    batch: int | None = None,
    cache_dir: str | Path | None = None,
):
    """An ``openvino.CompiledModel`` of an ``.onnx`` file on the CPU.

    Args:
        model: ``.onnx`` path (read directly by OpenVINO's ONNX frontend).
        threads: ``INFERENCE_NUM_THREADS`` (>= 1); None keeps OpenVINO's default.
        precision: ``INFERENCE_PRECISION_HINT`` for floating-point layers: "f32" (default), "bf16" or
            "f16" where the CPU supports them.
        batch: fix a dynamic batch dimension to this size before compiling (bench: 1); None keeps it.
        cache_dir: ``CACHE_DIR`` for compiled blobs; None: no cache.
    Returns:
        ``openvino.CompiledModel`` (``create_infer_request()`` runs it).
    Raises:
        ImportError: openvino is not installed.
        Whatever OpenVINO raises for an unreadable or unsupported model (callers make it one line).
    """
    import openvino as ov

    core = ov.Core()
    m = core.read_model(str(model))
    if batch is not None and len(m.inputs) == 1:
        shape = m.inputs[0].get_partial_shape()
        if shape.rank.is_static and len(shape) > 0 and shape[0].is_dynamic:
            shape[0] = ov.Dimension(batch)
            m.reshape({m.inputs[0]: shape})
    config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    if cache_dir is not None:
        config["CACHE_DIR"] = str(cache_dir)
    return core.compile_model(m, "CPU", config)


def ov_version() -> str:
    """``openvino.__version__`` without the build suffix, e.g. "2026.4.1"."""
    import openvino as ov

    return ov.__version__.split("-")[0]


def ov_execution(compiled) -> dict:
    """What a compiled model runs with: ``{"inference_precision": "f32" (the compiled model's
    INFERENCE_PRECISION_HINT as OpenVINO reports it), "threads": INFERENCE_NUM_THREADS (0 = OpenVINO's
    default), "compute_precisions": {"u8": 28, "f32": 1} (runtime precision of the convolution /
    fully-connected layers of the executed graph, counted)}``."""
    prec = compiled.get_property("INFERENCE_PRECISION_HINT")
    counts: Counter = Counter()
    try:
        for op in compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if "layerType" in info and info["layerType"].astype(str) in COMPUTE_LAYERS:
                counts[info["runtimePrecision"].astype(str)] += 1
    except Exception:  # noqa: BLE001 - the executed graph is a diagnostic; its absence is not an error
        counts.clear()
    return {
        "inference_precision": getattr(prec, "to_string", lambda: str(prec))(),
        "threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
        "compute_precisions": dict(sorted(counts.items())),
    }
