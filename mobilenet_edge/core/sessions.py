"""The one ONNX Runtime session factory (CPU execution provider), used by the runner, bench,
quantization, fidelity, export parity and the benchmarks.

ORT's defaults are spelled out here once: CPU provider only, warnings and below not logged
(``log_severity_level`` 3: ORT prints graph-optimisation notices to stderr otherwise), and, when
``threads`` is given, ``intra_op_num_threads = threads`` with ``inter_op_num_threads = 1``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

PROVIDERS = ["CPUExecutionProvider"]

ModelSource = Union[str, Path, bytes]


def ort_session(
    model: ModelSource,
    *,
    threads: int | None = None,
    sequential: bool = False,
    optimize: bool = True,
):
    """An ``onnxruntime.InferenceSession`` on the CPU.

    Args:
        model: an ``.onnx`` path, or a serialized ``ModelProto`` (bytes).
        threads: intra-op threads (>= 1) with one inter-op thread; None keeps ORT's default (all cores).
        sequential: ``ExecutionMode.ORT_SEQUENTIAL`` (benchmarks: no inter-op parallelism).
        optimize: False disables every graph optimisation (``ORT_DISABLE_ALL``) so that each named
            intermediate tensor of the graph survives and can be read as an output.
    Returns:
        ``onnxruntime.InferenceSession``.
    Raises:
        Whatever ORT raises for an unloadable model (callers turn it into a one-line error).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads is not None:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if sequential:
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, sess_options=so, providers=PROVIDERS)
