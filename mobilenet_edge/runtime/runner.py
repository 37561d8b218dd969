"""One ``Runner`` over ONNX Runtime (``.onnx``) and LiteRT / tflite-runtime (``.tflite``); numpy only.

This module never imports torch: it is what a Raspberry Pi runs after ``pip install mobilenet-edge``.

Backends:
    * ``.onnx``: ``onnxruntime`` (CPU execution provider; the session from ``core.sessions.ort_session``),
      or OpenVINO with ``runtime="openvino"`` (CPU plugin, precision hint f32: :mod:`.openvino_backend`).
    * ``.tflite``: LiteRT, else tflite-runtime (which one, and how it is forced: :mod:`.tflite_backend`;
      the names: :mod:`.names`).

Quantized I/O: a uint8/int8 input is fed ``round(x / scale + zero_point)`` (clipped to the dtype's
range) from the float batch preprocessed as the model's :class:`~mobilenet_edge.core.images.Preprocessing`
says; a uint8/int8 output is dequantized ``(q - zero_point) * scale`` to float32 *before* any
softmax/top-k (``argsort(-x)`` on raw uint8 wraps around: -0 == 0 sorts first, -255 == 1 last).

Output kind (:attr:`Runner.outputs_probabilities`): Google's TF-slim ``.tflite`` files end in a
softmax (output ``MobilenetV1/Predictions/Reshape_1``, uint8 with scale 1/256, zero point 0), our
bundles output ``logits``. An output is taken as probabilities when its name contains ``softmax``,
``predictions`` or ``prob`` (case-insensitive), or when it is quantized with TFLite's fixed softmax
output parameters (scale 1/256 and zero point 0 for uint8, -128 for int8); otherwise it is logits
and :meth:`Runner.probabilities` applies a softmax.

Related modules: :mod:`.scores` (softmax, top-k, (de)quantization), :mod:`.load` (``open_model``:
a model with its preprocessing and labels), :mod:`.tflite_backend` (``make_interpreter``: the one way
a ``.tflite`` interpreter is made).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.errors import MobilenetEdgeError, UsageError
from ..core.precision import file_precision
from ..core.sessions import ort_session
from .names import (
    RUNTIME_LITERT,
    RUNTIME_OPENVINO,
    RUNTIME_ORT,
    RUNTIMES_FOR_SUFFIX,
    runtime_name,
)
from .scores import dequantize, quantize, softmax
from .tflite_backend import make_interpreter, one_line

#: TFLite's softmax output quantization (fixed by the TFLite int8/uint8 spec): scale 1/256
_SOFTMAX_SCALE = 1.0 / 256.0
_PROB_NAME_HINTS = ("softmax", "predictions", "prob")


class Runner:
    """Runs one ``.onnx`` or ``.tflite`` image classifier on float32 batches.

    Args:
        path: model file; the suffix picks the default backend (``.onnx`` -> onnxruntime, ``.tflite`` ->
            LiteRT or tflite-runtime).
        threads: intra-op threads (ORT ``intra_op_num_threads``, TFLite ``num_threads``, OpenVINO
            ``INFERENCE_NUM_THREADS``); >= 1.
        runtime: None (the suffix's default) or a runtime that can run the suffix (:mod:`.names`:
            "onnxruntime"/"ort" or "openvino" for ``.onnx``, "litert" for ``.tflite``).

    Attributes:
        path, backend ("onnxruntime" | "openvino" | "ai-edge-litert" | "tflite-runtime"), backend_version,
        runtime (the bench name: "onnxruntime" | "openvino" | "litert"), execution (OpenVINO only:
        inference precision, threads, compute-layer precisions; None otherwise),
        layout ("NCHW" | "NHWC"), res (int, or None for a dynamic spatial size), input_name,
        input_dtype (numpy dtype), input_quant ((scale, zero_point) or None), output_name,
        output_dtype, output_quant, num_classes, fixed_batch (int, or None when dynamic),
        outputs_probabilities (see the module docstring), metadata (ONNX metadata_props; {} for tflite).

    Raises:
        UsageError: unknown suffix, bad ``threads``, or a runtime that cannot run this suffix.
        MobilenetEdgeError: the file is missing, corrupt, or its input is not an image
            ((N, 3, H, W) or (N, H, W, 3) with H == W) or its output not (N, classes).
    """

    def __init__(self, path: str | Path, *, threads: int = 1, runtime: str | None = None) -> None:
        self.path = Path(path)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise UsageError(f"threads must be an integer >= 1, got {threads!r}")
        self.threads = threads
        if not self.path.is_file():
            raise MobilenetEdgeError(f"no such model file: {self.path}")
        suffix = self.path.suffix.lower()
        self.metadata: dict[str, str] = {}
        self.execution: dict | None = None
        if suffix not in RUNTIMES_FOR_SUFFIX:
            raise UsageError(f"unknown model format {self.path.name!r}: expected .onnx or .tflite (or a bundle folder)")
        self.runtime = _pick_runtime(suffix, runtime, self.path)
        if self.runtime == RUNTIME_OPENVINO:
            self._init_openvino()
        elif suffix == ".onnx":
            self._init_onnx()
        else:
            self._init_tflite()
        self._check_io()

    # -- backends -------------------------------------------------------------------------------------

    def _init_onnx(self) -> None:
        import onnxruntime as ort

        try:
            self._sess = ort_session(self.path, threads=self.threads)
        except Exception as e:  # noqa: BLE001  (ORT raises its own Fail/InvalidProtobuf/... types)
            raise MobilenetEdgeError(f"cannot load ONNX model {self.path}: {one_line(e)}") from None
        self.backend, self.backend_version = RUNTIME_ORT, ort.__version__
        ins, outs = self._sess.get_inputs(), self._sess.get_outputs()
        if len(ins) != 1:
            raise MobilenetEdgeError(f"{self.path} has {len(ins)} inputs; an image classifier has one")
        self.input_name = ins[0].name
        self._in_shape = [d if isinstance(d, int) and d > 0 else None for d in ins[0].shape]
        self.input_dtype = _ort_dtype(ins[0].type)
        self.input_quant = None
        self.output_name = outs[0].name
        self._out_shape = [d if isinstance(d, int) and d > 0 else None for d in outs[0].shape]
        self.output_dtype = _ort_dtype(outs[0].type)
        self.output_quant = None
        try:
            self.metadata = dict(self._sess.get_modelmeta().custom_metadata_map)
        except Exception:  # noqa: BLE001
            self.metadata = {}
        if self.input_dtype != np.float32:
            raise MobilenetEdgeError(
                f"{self.path}: input {self.input_name!r} is {self.input_dtype}, expected float32 "
                "(ONNX has no input scale/zero point to quantize with)"
            )

    def _init_openvino(self) -> None:
        from .openvino_backend import cache_dir, open_openvino

        self._ov = m = open_openvino(self.path, threads=self.threads, cache=cache_dir())
        self.backend, self.backend_version, self.execution = RUNTIME_OPENVINO, m.version, m.execution
        self.input_name, self._in_shape, self.input_dtype = m.input_name, m.in_shape, m.input_dtype
        self.output_name, self._out_shape, self.output_dtype = m.output_name, m.out_shape, m.output_dtype
        self.input_quant = self.output_quant = None
        self.metadata = m.metadata
        if self.input_dtype != np.float32:
            raise MobilenetEdgeError(f"{self.path}: input {self.input_name!r} is {self.input_dtype}, expected float32")

    def _init_tflite(self) -> None:
        it, self.backend, self.backend_version = make_interpreter(self.path, threads=self.threads)
        self._it = it
        ins, outs = it.get_input_details(), it.get_output_details()
        if len(ins) != 1:
            raise MobilenetEdgeError(f"{self.path} has {len(ins)} inputs; an image classifier has one")
        i, o = ins[0], outs[0]
        self._in_index, self._out_index = i["index"], o["index"]
        self.input_name, self.output_name = i["name"], o["name"]
        sig = i.get("shape_signature", i["shape"])
        self._in_shape = [int(d) if d > 0 else None for d in (sig if len(sig) else i["shape"])]
        osig = o.get("shape_signature", o["shape"])
        self._out_shape = [int(d) if d > 0 else None for d in (osig if len(osig) else o["shape"])]
        self.input_dtype, self.output_dtype = np.dtype(i["dtype"]), np.dtype(o["dtype"])
        self.input_quant = _tfl_quant(i, self.path)
        self.output_quant = _tfl_quant(o, self.path)
        self._batch_now = int(i["shape"][0]) if len(i["shape"]) else 1

    def _check_io(self) -> None:
        shape = self._in_shape
        bad = f"{self.path}: input {self.input_name!r} with shape {_fmt_shape(shape)} is not an image batch " \
              "(expected (N, 3, H, W) or (N, H, W, 3) with H == W)"
        if len(shape) != 4:
            raise MobilenetEdgeError(bad)
        if shape[3] == 3 and shape[1] != 3:
            self.layout, (h, w) = "NHWC", shape[1:3]
        elif shape[1] == 3 and shape[3] != 3:
            self.layout, (h, w) = "NCHW", shape[2:4]
        elif shape[1] == 3 and shape[3] == 3:  # 3x3 images: only tiny toys; TFLite is NHWC
            self.layout, (h, w) = ("NHWC" if self.runtime == RUNTIME_LITERT else "NCHW"), (3, 3)
        else:
            raise MobilenetEdgeError(bad)
        if h is not None and w is not None and h != w:
            raise MobilenetEdgeError(bad)
        if self.input_dtype.kind not in "fiu":
            raise MobilenetEdgeError(f"{self.path}: input dtype {self.input_dtype} is not numeric")
        self.res = h if h is not None else w
        self.fixed_batch = shape[0]
        out = [d for d in self._out_shape]
        while len(out) > 2 and out[1] == 1:  # (N, 1, 1, C) heads
            out.pop(1)
        if len(out) != 2 or out[1] is None:
            raise MobilenetEdgeError(
                f"{self.path}: output {self.output_name!r} with shape {_fmt_shape(self._out_shape)} is not "
                "(N, classes) scores"
            )
        self.num_classes = int(out[1])
        if self.output_dtype.kind not in "fiu":
            raise MobilenetEdgeError(f"{self.path}: output dtype {self.output_dtype} is not numeric")
        self.outputs_probabilities = _looks_like_probabilities(self.output_name, self.output_dtype, self.output_quant)

    # -- inference ------------------------------------------------------------------------------------

    @property
    def input_shape(self) -> tuple:
        """Model input shape with None for dynamic dimensions, e.g. (1, 160, 160, 3)."""
        return tuple(self._in_shape)

    def describe(self) -> dict:
        """JSON-ready summary: file, backend, version, threads, layout, res, dtypes, quantization, classes;
        with OpenVINO also ``execution`` (``{"inference_precision": "f32", "threads", "compute_precisions"}``)."""
        d = {
            "file": str(self.path),
            "backend": self.backend,
            "backend_version": self.backend_version,
            "threads": self.threads,
            "layout": self.layout,
            "res": self.res,
            "input_dtype": str(self.input_dtype),
            "input_quant": list(self.input_quant) if self.input_quant else None,
            "output_dtype": str(self.output_dtype),
            "output_quant": list(self.output_quant) if self.output_quant else None,
            "num_classes": self.num_classes,
            "outputs_probabilities": self.outputs_probabilities,
        }
        if self.execution is not None:
            d["execution"] = self.execution
        return d

    def run(self, x: np.ndarray) -> np.ndarray:
        """Raw scores for a batch.

        Args:
            x: (N, 3, res, res) float32 for NCHW models, (N, res, res, 3) for NHWC (see :attr:`layout`),
                preprocessed per the model's Preprocessing (float values, *not* quantized: a uint8/int8
                input is quantized here with the model's scale and zero point).
        Returns:
            (N, num_classes) float32: logits or probabilities as the model outputs them (see
            :attr:`outputs_probabilities`), dequantized if the output is uint8/int8.
        Raises:
            UsageError: x has the wrong rank/shape for this model.
        """
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        expect = self._in_shape[1:]
        if x.ndim != 4 or any(e is not None and e != g for e, g in zip(expect, x.shape[1:])):
            raise UsageError(
                f"input batch shape {tuple(x.shape)} does not fit model input {_fmt_shape(self._in_shape)} ({self.layout})"
            )
        if self.input_quant is not None:
            xin = quantize(x, self.input_quant[0], self.input_quant[1], self.input_dtype)
        else:
            xin = x.astype(self.input_dtype, copy=False)
        n, b = x.shape[0], self.fixed_batch
        if b is not None and n % b:  # fixed-batch file (e.g. 8) and a ragged batch: pad with zeros, trim after
            xin = np.concatenate([xin, np.zeros((b - n % b, *xin.shape[1:]), xin.dtype)])
        if self.runtime != RUNTIME_LITERT:
            run = self._run_onnx if self.runtime == RUNTIME_ORT else self._ov.run
            if b is not None and b != xin.shape[0]:  # fixed-batch file: run it chunk by chunk
                raw = np.concatenate([run(xin[i : i + b]) for i in range(0, xin.shape[0], b)])
            else:
                raw = run(xin)
        else:
            raw = self._run_tflite(xin)
        raw = raw[:n]
        raw = raw.reshape(raw.shape[0], -1)
        if self.output_quant is not None:
            return dequantize(raw, *self.output_quant)
        return raw.astype(np.float32, copy=False)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """(N, num_classes) float32 probabilities: :meth:`run`, plus a softmax when the output is logits."""
        s = self.run(x)
        return s if self.outputs_probabilities else softmax(s)

    def _run_onnx(self, x: np.ndarray) -> np.ndarray:
        return self._sess.run([self.output_name], {self.input_name: x})[0]

    def _run_tflite(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        it = self._it
        if self.fixed_batch is None:  # dynamic batch: one call with the whole batch
            if self._batch_now != n:
                it.resize_tensor_input(self._in_index, list(x.shape))
                it.allocate_tensors()
                self._batch_now = n
            it.set_tensor(self._in_index, np.ascontiguousarray(x))
            it.invoke()
            return np.array(it.get_tensor(self._out_index))
        b = self.fixed_batch  # run() padded n to a multiple of b
        outs = []
        for i in range(0, n, b):  # batch-1-only files (Google's): loop
            it.set_tensor(self._in_index, np.ascontiguousarray(x[i : i + b]))
            it.invoke()
            outs.append(np.array(it.get_tensor(self._out_index)))  # copy: the buffer is reused
        return np.concatenate(outs)


def _pick_runtime(suffix: str, runtime: str | None, path: Path) -> str:
    """The runtime name for ``path``: the suffix's default, or ``runtime`` when it can run the suffix."""
    allowed = RUNTIMES_FOR_SUFFIX[suffix]
    if runtime is None:
        return allowed[0]
    try:
        name = runtime_name(runtime)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if name not in allowed:
        raise UsageError(f"{name} cannot run {path.name}: a {suffix} file runs on {' or '.join(allowed)}")
    return name


def _fmt_shape(shape: Sequence) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


def _ort_dtype(t: str) -> np.dtype:
    if t not in _ORT_TYPES:
        return np.dtype(object)
    return np.dtype(_ORT_TYPES[t])


def _tfl_quant(detail: dict, path: Path) -> tuple[float, int] | None:
    """(scale, zero_point) of an integer TFLite tensor, None for float tensors."""
    if np.dtype(detail["dtype"]).kind not in "iu":
        return None
    qp = detail.get("quantization_parameters") or {}
    scales = np.asarray(qp.get("scales", []), dtype=np.float64)
    zps = np.asarray(qp.get("zero_points", []), dtype=np.int64)
    if scales.size == 0:
        scale, zp = detail.get("quantization", (0.0, 0))
        scales, zps = np.array([scale]), np.array([zp])
    if scales.size != 1 or not scales[0] > 0:
        raise MobilenetEdgeError(
            f"{path}: tensor {detail['name']!r} is {np.dtype(detail['dtype'])} without a single per-tensor "
            "scale/zero point"
        )
    return float(scales[0]), int(zps[0])


def _looks_like_probabilities(name: str, dtype: np.dtype, quant: tuple[float, int] | None) -> bool:
    lname = name.lower()
    if any(h in lname for h in _PROB_NAME_HINTS):
        return True
    if quant is not None:
        scale, zp = quant
        softmax_zp = 0 if dtype == np.uint8 else -128
        return abs(scale - _SOFTMAX_SCALE) < 1e-9 and zp == softmax_zp
    return False


def is_int8_file(runner: Runner) -> bool:
    """True for a quantized model file, by the one rule of :mod:`mobilenet_edge.core.precision`
    (integer input/output, ``precision`` metadata "int8", ``int8``/``quant`` in the name, or
    quantization ops in an ONNX graph)."""
    quantized_io = bool(runner.input_quant or runner.output_quant)
    return file_precision(runner.path, quantized_io=quantized_io, metadata=runner.metadata) == "int8"

