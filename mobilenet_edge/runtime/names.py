"""The runtime names, defined once (stdlib only).

One TFLite runtime goes by several names, each in its own namespace; none of them can change, since
users' scripts read them:

======================  ==========================================================================
name                    where it appears
======================  ==========================================================================
``"onnxruntime"``       bench rows' ``runtime`` (JSON, CSV, tables) for ``.onnx`` files, and
                        :attr:`Runner.backend <mobilenet_edge.runtime.runner.Runner.backend>`
``"litert"``            bench rows' ``runtime`` for ``.tflite`` files, whichever interpreter ran them
                        (the row's ``runtime_version`` says which: ``"ai-edge-litert 2.3.0"``)
``"ai-edge-litert"``    the pip distribution (``import ai_edge_litert``): ``Runner.backend`` of a
                        ``.tflite`` on LiteRT, and a value of ``$MOBILENET_EDGE_TFLITE``
``"tflite-runtime"``    the same for the fallback distribution (``import tflite_runtime``)
``"openvino"``          bench rows' ``runtime`` and ``Runner.backend`` of ``.onnx`` files run by OpenVINO
                        (also the pip distribution and the ``environment()`` key)
``"ai_edge_litert"``    keys of ``core.platform_info.environment()``: the distribution names with
                        ``_`` (printed with ``-`` again in bench's table title)
======================  ==========================================================================
"""

from __future__ import annotations

#: bench row ``runtime`` and Runner.backend of ``.onnx`` files (also the pip distribution name)
RUNTIME_ORT = "onnxruntime"
#: bench row ``runtime`` of ``.tflite`` files (LiteRT or tflite-runtime alike)
RUNTIME_LITERT = "litert"

#: bench row ``runtime`` and Runner.backend of ``.onnx`` files run by OpenVINO (also the pip distribution)
RUNTIME_OPENVINO = "openvino"

#: Runner.backend / $MOBILENET_EDGE_TFLITE value / pip distribution of LiteRT (the primary .tflite backend)
BACKEND_LITERT = "ai-edge-litert"
#: the same for tflite-runtime 2.14 (older Pi images; numpy < 2)
BACKEND_TFLITE_RUNTIME = "tflite-runtime"
#: .tflite backends in the order they are tried
TFLITE_BACKENDS = (BACKEND_LITERT, BACKEND_TFLITE_RUNTIME)

#: ``environment()`` keys holding runtime versions (distribution names with "_"), in display order
ENV_VERSION_KEYS = ("onnxruntime", "openvino", "ai_edge_litert", "tflite_runtime")

#: every bench/Runner runtime, in bench's order (ORT first: the default for .onnx)
RUNTIMES = (RUNTIME_ORT, RUNTIME_OPENVINO, RUNTIME_LITERT)
#: the runtimes that can run a file, by suffix; the first is the default (what ran before OpenVINO came)
RUNTIMES_FOR_SUFFIX = {".onnx": (RUNTIME_ORT, RUNTIME_OPENVINO), ".tflite": (RUNTIME_LITERT,)}
#: what ``--runtime`` / ``--runtimes`` accept -> the runtime name
RUNTIME_ALIASES = {"ort": RUNTIME_ORT, RUNTIME_ORT: RUNTIME_ORT, "openvino": RUNTIME_OPENVINO, "ov": RUNTIME_OPENVINO,
                   "litert": RUNTIME_LITERT, "tflite": RUNTIME_LITERT}


def runtime_name(text: str) -> str:
    """The runtime name of a user's spelling (``ort``, ``onnxruntime``, ``openvino``, ``ov``, ``litert``,
    ``tflite``; case-insensitive).

    Raises:
        ValueError: an unknown name (the message lists the accepted ones).
    """
    key = text.strip().lower()
    if key not in RUNTIME_ALIASES:
        raise ValueError(f"unknown runtime {text!r}: expected ort (onnxruntime), openvino or litert")
    return RUNTIME_ALIASES[key]
