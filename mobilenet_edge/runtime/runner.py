"""One ``Runner`` over ONNX Runtime (``.onnx``) and LiteRT / tflite-runtime (``.tflite``); numpy only.

This module never imports torch: it is what a Raspberry Pi runs after ``pip install mobilenet-edge``.

Backends:
    * ``.onnx``: ``onnxruntime`` (CPU execution provider).
    * ``.tflite``: ``ai_edge_litert.interpreter`` (LiteRT, primary), else ``tflite_runtime.interpreter``
      (tflite-runtime 2.14, older Pi images; needs numpy < 2). ``MOBILENET_EDGE_TFLITE=tflite-runtime``
      (or ``ai-edge-litert``) forces one of them.

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

Preprocessing defaults for files without our metadata (:func:`default_preprocessing`):
    * ``.tflite`` (Google's TF-slim files): mean = std = 127.5 (``x/127.5 - 1``), central crop 0.875,
      bilinear resize (TF-slim ``inception_preprocessing`` evaluation), layout from the model (NHWC).
    * ``.onnx`` without ``preprocessing`` metadata: the torchvision ImageNet convention, mean
      (123.675, 116.28, 103.53), std (58.395, 57.12, 57.375) (= 255 x (0.485, 0.456, 0.406) and
      255 x (0.229, 0.224, 0.225)), crop 0.875 (resize 256 -> crop 224), bilinear, layout from the model.
    * Labels: ImageNet names (``labels.imagenet_labels``) when the model has 1000 or 1001 (index 0 =
      background) outputs, else ``class_<i>``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..core import bundle as _bundle
from ..core.errors import MobilenetEdgeError, UsageError
from ..core.images import Preprocessing
from ..core.labels import background_offset, imagenet_labels, read_labels  # noqa: F401  (background_offset: runtime API)
from ..core.precision import file_precision
from ..core.sessions import ort_session

#: environment variable forcing the .tflite backend ("ai-edge-litert" or "tflite-runtime")
TFLITE_ENV = "MOBILENET_EDGE_TFLITE"
TFLITE_BACKENDS = ("ai-edge-litert", "tflite-runtime")

#: TFLite's softmax output quantization (fixed by the TFLite int8/uint8 spec): scale 1/256
_SOFTMAX_SCALE = 1.0 / 256.0
_PROB_NAME_HINTS = ("softmax", "predictions", "prob")

#: torchvision's ImageNet normalisation in 0..255 pixel units (255 x (0.485, 0.456, 0.406), 255 x (0.229, 0.224, 0.225))
TORCHVISION_MEAN = (123.675, 116.28, 103.53)
TORCHVISION_STD = (58.395, 57.12, 57.375)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax; (N, C) float -> (N, C) float32 summing to 1 along ``axis``."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best classes per row, best first (ties: lower index first).

    Args:
        scores: (N, C) or (C,) scores of any numeric dtype (compared as float64, so a raw uint8
            array cannot wrap around).
        k: 1 <= k <= C.
    Returns:
        (indices (N, k) int64, values (N, k) float32); 1-D input gives 1-D outputs.
    Raises:
        UsageError: k out of range (quoting k and C).
    """
    s = np.asarray(scores)
    one = s.ndim == 1
    s2 = s.reshape(1, -1) if one else s
    n_classes = s2.shape[-1]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n_classes:
        raise UsageError(f"top-k must be between 1 and the class count {n_classes}, got {k}")
    f = s2.astype(np.float64)
    idx = np.argsort(-f, axis=-1, kind="stable")[:, :k]
    vals = np.take_along_axis(f, idx, axis=-1).astype(np.float32)
    return (idx[0], vals[0]) if one else (idx, vals)


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    """float -> integer tensor: ``clip(round(x / scale) + zero_point)`` in ``dtype``'s range."""
    info = np.iinfo(dtype)
    q = np.rint(np.asarray(x, np.float64) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """integer tensor -> float32 ``(q - zero_point) * scale`` (widened first: no uint8 wrap-around)."""
    return ((np.asarray(q).astype(np.float64) - zero_point) * scale).astype(np.float32)



def tflite_backend_name() -> str:
    """Which .tflite backend :class:`Runner` will use here ("ai-edge-litert" or "tflite-runtime").

    Raises:
        MobilenetEdgeError: neither is installed, or the forced one is missing.
    """
    return tflite_module()[0]


def tflite_module():
    """(backend name, version, interpreter module): LiteRT, else tflite-runtime, or the one forced by
    $MOBILENET_EDGE_TFLITE. Raises MobilenetEdgeError when none is installed."""
    forced = os.environ.get(TFLITE_ENV, "").strip()
    if forced and forced not in TFLITE_BACKENDS:
        raise UsageError(f"{TFLITE_ENV} must be one of {', '.join(TFLITE_BACKENDS)}, got {forced!r}")
    order = [forced] if forced else list(TFLITE_BACKENDS)
    errors = []
    for name in order:
        try:
            if name == "ai-edge-litert":
                import ai_edge_litert
                from ai_edge_litert import interpreter as mod

                version = getattr(ai_edge_litert, "__version__", "?")
            else:
                import tflite_runtime
                from tflite_runtime import interpreter as mod

                version = getattr(tflite_runtime, "__version__", "?")
        except ImportError as e:
            errors.append(f"{name}: {e}")
            continue
        return name, version, mod
    raise MobilenetEdgeError(
        "no TFLite runtime: pip install ai-edge-litert (or tflite-runtime with numpy<2)"
        + (f" [{'; '.join(errors)}]" if forced else "")
    )


class Runner:
    """Runs one ``.onnx`` or ``.tflite`` image classifier on float32 batches.

    Args:
        path: model file; the suffix picks the backend (``.onnx`` -> onnxruntime, ``.tflite`` ->
            LiteRT or tflite-runtime).
        threads: intra-op threads (ORT ``intra_op_num_threads``, TFLite ``num_threads``); >= 1.

    Attributes:
        path, backend ("onnxruntime" | "ai-edge-litert" | "tflite-runtime"), backend_version,
        layout ("NCHW" | "NHWC"), res (int, or None for a dynamic spatial size), input_name,
        input_dtype (numpy dtype), input_quant ((scale, zero_point) or None), output_name,
        output_dtype, output_quant, num_classes, fixed_batch (int, or None when dynamic),
        outputs_probabilities (see the module docstring), metadata (ONNX metadata_props; {} for tflite).

    Raises:
        UsageError: unknown suffix or bad ``threads``.
        MobilenetEdgeError: the file is missing, corrupt, or its input is not an image
            ((N, 3, H, W) or (N, H, W, 3) with H == W) or its output not (N, classes).
    """

    def __init__(self, path: str | Path, *, threads: int = 1) -> None:
        self.path = Path(path)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise UsageError(f"threads must be an integer >= 1, got {threads!r}")
        self.threads = threads
        if not self.path.is_file():
            raise MobilenetEdgeError(f"no such model file: {self.path}")
        suffix = self.path.suffix.lower()
        self.metadata: dict[str, str] = {}
        if suffix == ".onnx":
            self._init_onnx()
        elif suffix == ".tflite":
            self._init_tflite()
        else:
            raise UsageError(f"unknown model format {self.path.name!r}: expected .onnx or .tflite (or a bundle folder)")
        self._check_io()

    # -- backends -------------------------------------------------------------------------------------

    def _init_onnx(self) -> None:
        import onnxruntime as ort

        try:
            self._sess = ort_session(self.path, threads=self.threads)
        except Exception as e:  # noqa: BLE001  (ORT raises its own Fail/InvalidProtobuf/... types)
            raise MobilenetEdgeError(f"cannot load ONNX model {self.path}: {_one_line(e)}") from None
        self.backend, self.backend_version = "onnxruntime", ort.__version__
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

    def _init_tflite(self) -> None:
        self.backend, self.backend_version, mod = tflite_module()
        if self.backend == "tflite-runtime":
            _probe_tflite_runtime(self.path)
        try:
            with _quiet_stderr() as captured:  # TFLite's C++ logs ("INFO: Created ... XNNPACK delegate")
                it = mod.Interpreter(model_path=str(self.path), num_threads=self.threads)
                it.allocate_tensors()
        except Exception as e:  # noqa: BLE001  (ValueError/RuntimeError depending on the version)
            log = " ".join(ln for ln in captured.text().split() if ln)[:200]
            raise MobilenetEdgeError(
                f"cannot load TFLite model {self.path}: {_one_line(e)}" + (f" [{log}]" if log else "")
            ) from None
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
            self.layout, (h, w) = ("NHWC" if self.backend != "onnxruntime" else "NCHW"), (3, 3)
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
        """JSON-ready summary: file, backend, version, layout, res, dtypes, quantization, classes."""
        return {
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
        if self.backend == "onnxruntime":
            if b is not None and b != xin.shape[0]:  # fixed-batch file: run it chunk by chunk
                raw = np.concatenate([self._run_onnx(xin[i : i + b]) for i in range(0, xin.shape[0], b)])
            else:
                raw = self._run_onnx(xin)
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


#: files that loaded in a probe process: (resolved path, size, mtime_ns)
_PROBED: set[tuple[str, int, int]] = set()
PROBE_ENV = "MOBILENET_EDGE_TFLITE_PROBE"
_PROBE_CODE = (
    "import sys\n"
    "from tflite_runtime.interpreter import Interpreter\n"
    "Interpreter(model_path=sys.argv[1]).allocate_tensors()\n"
)


def _probe_tflite_runtime(path: Path) -> None:
    """Load ``path`` once in a child process before loading it here.

    tflite-runtime 2.14 does not verify the flatbuffer: a truncated or corrupt ``.tflite`` kills the
    process with SIGSEGV inside ``Interpreter()`` (LiteRT verifies and raises ValueError instead).
    The probe turns that into a MobilenetEdgeError; it costs one interpreter start (about 0.3 s on
    x86) per file per process. ``MOBILENET_EDGE_TFLITE_PROBE=0`` skips it.
    """
    import subprocess

    if os.environ.get(PROBE_ENV, "1") == "0":
        return
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _PROBED:
        return
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE_CODE, str(path)], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise MobilenetEdgeError(f"cannot load TFLite model {path}: probe failed: {_one_line(e)}") from None
    if proc.returncode != 0:
        why = f"signal {-proc.returncode}" if proc.returncode < 0 else _one_line(Exception(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"))
        raise MobilenetEdgeError(
            f"cannot load TFLite model {path}: tflite-runtime fails on it ({why}); the file is corrupt or truncated"
        )
    _PROBED.add(key)


class _Captured:
    def __init__(self) -> None:
        self._file = None

    def text(self) -> str:
        if self._file is None:
            return ""
        self._file.seek(0)
        return self._file.read().decode("utf-8", "replace")


@contextlib.contextmanager
def _quiet_stderr():
    """Send C-level writes to fd 2 into a temp file while the body runs (yields its reader).

    Only used around interpreter creation: TFLite prints an INFO line per interpreter, which would
    break the one-line-per-error rule of the CLI. Python-level errors are unaffected.
    """
    cap = _Captured()
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # pytest capture / no real stderr
        yield cap
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    cap._file = tempfile.TemporaryFile()
    try:
        os.dup2(cap._file.fileno(), fd)
        yield cap
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _one_line(e: Exception) -> str:
    s = " ".join(str(e).split())
    return (s[:300] + "...") if len(s) > 300 else (s or type(e).__name__)


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


# -- loading models with their preprocessing and labels ----------------------------------------------


def default_preprocessing(fmt: str, res: int, layout: str) -> Preprocessing:
    """Preprocessing for a file without our metadata (see the module docstring for the sources).

    Args:
        fmt: "tflite" (Google's TF-slim convention) or "onnx" (torchvision convention).
        res: model input side (pixels).
        layout: "NCHW" or "NHWC" (from the model).
    """
    if fmt == "tflite":
        return Preprocessing(res=res, mean=(127.5,) * 3, std=(127.5,) * 3, crop=0.875, resize="tf_bilinear", layout=layout)
    return Preprocessing(res=res, mean=TORCHVISION_MEAN, std=TORCHVISION_STD, crop=0.875, resize="bilinear", layout=layout)


def default_labels(num_classes: int) -> list[str]:
    """ImageNet names for 1000 / 1001 (background first) outputs, else ``class_<i>``."""
    return imagenet_labels(num_classes)


def is_int8_file(runner: Runner) -> bool:
    """True for a quantized model file, by the one rule of :mod:`mobilenet_edge.core.precision`
    (integer input/output, ``precision`` metadata "int8", ``int8``/``quant`` in the name, or
    quantization ops in an ONNX graph)."""
    quantized_io = bool(runner.input_quant or runner.output_quant)
    return file_precision(runner.path, quantized_io=quantized_io, metadata=runner.metadata) == "int8"


def open_model(
    path_or_bundle: str | Path,
    *,
    int8: bool = False,
    fmt: str | None = None,
    threads: int = 1,
    prep_overrides: dict | None = None,
    labels_file: str | Path | None = None,
) -> tuple[Runner, Preprocessing, list[str], dict | None]:
    """Open a bundle folder, a lone ``.onnx`` or a foreign ``.tflite`` with what it needs to be fed.

    Resolution:
        * bundle folder (has manifest.json): ``model.onnx`` / ``model.int8.onnx`` (``fmt="tflite"``:
          ``model.tflite`` / ``model.int8.tflite``; ``fmt=None`` takes ONNX when present), the
          manifest's ``preprocessing``, labels from its ``labels.txt``.
        * ``.onnx`` file: preprocessing and labels from its metadata_props (``preprocessing``,
          ``labels``), else :func:`default_preprocessing` ("onnx") and :func:`default_labels`.
        * ``.tflite`` file: :func:`default_preprocessing` ("tflite") and :func:`default_labels`.
        In every case ``res`` and ``layout`` come from the model itself (when the model fixes them).

    Args:
        path_or_bundle: bundle folder or model file.
        int8: take the bundle's int8 model; with a lone file, the file must itself be int8
            (:func:`is_int8_file`), else UsageError (running the fp32 file would mislabel it).
        fmt: "onnx" or "tflite" inside a bundle.
        threads: backend threads (>= 1).
        prep_overrides: Preprocessing fields to override (``mean``, ``std``, ``crop``, ``resize``, ...),
            None values ignored.
        labels_file: a labels file (one label per output index) replacing the model's labels.
    Returns:
        (runner, preprocessing, labels (len == num_classes), manifest dict or None).
    Raises:
        UsageError: missing path, bad override, ``int8`` with a lone non-int8 file, a labels folder
            instead of a file, or labels whose count differs from the model's classes.
        MobilenetEdgeError: a bundle without the requested model, an unloadable model.
    """
    p = Path(path_or_bundle)
    if fmt not in (None, "onnx", "tflite"):
        raise UsageError(f"format must be onnx or tflite, got {fmt!r}")
    manifest = None
    labels: list[str] | None = None
    prep_dict: dict | None = None
    if p.is_dir():
        manifest = _bundle.read_manifest(p)
        if fmt is None:
            fmt = "onnx" if (p / (_bundle.FILE_INT8 if int8 else _bundle.FILE_FP32)).is_file() else (
                "tflite" if (p / (_bundle.FILE_TFLITE_INT8 if int8 else _bundle.FILE_TFLITE)).is_file() else "onnx"
            )
        model_path = _bundle.model_file(p, int8=int8, fmt=fmt)
        runner = Runner(model_path, threads=threads)
        prep_dict = manifest.get("preprocessing")
        lab_name = (manifest.get("labels") or {}).get("file", _bundle.LABELS)
        if (p / lab_name).is_file():
            labels = read_labels(p / lab_name)
    elif p.is_file():
        runner = Runner(p, threads=threads)
        if int8 and not is_int8_file(runner):
            raise UsageError("--int8 selects the int8 model of a bundle; give the bundle folder or the int8 file itself")
        if runner.backend == "onnxruntime":
            md = runner.metadata
            if "preprocessing" in md:
                try:
                    prep_dict = json.loads(md["preprocessing"])
                except ValueError:
                    raise MobilenetEdgeError(f"{p}: metadata 'preprocessing' is not JSON") from None
            if "labels" in md:
                try:
                    labels = [str(v) for v in json.loads(md["labels"])]
                except (ValueError, TypeError):
                    raise MobilenetEdgeError(f"{p}: metadata 'labels' is not a JSON list") from None
    else:
        raise UsageError(f"no such model file or bundle folder: {p}")

    layout = runner.layout
    if prep_dict:
        prep = Preprocessing.from_dict(prep_dict)
    else:
        res = runner.res or 224
        prep = default_preprocessing("tflite" if runner.backend != "onnxruntime" else "onnx", res, layout)
    fixed = {"layout": layout}
    if runner.res is not None:
        fixed["res"] = runner.res
    prep = replace(prep, **fixed)
    overrides = {k: v for k, v in (prep_overrides or {}).items() if v is not None}
    if overrides:
        unknown = set(overrides) - set(Preprocessing.__dataclass_fields__)
        if unknown:
            raise UsageError(f"unknown preprocessing field(s): {', '.join(sorted(unknown))}")
        if "res" in overrides and runner.res is not None and overrides["res"] != runner.res:
            raise UsageError(f"res is fixed by the model at {runner.res}, got {overrides['res']}")
        prep = replace(prep, **overrides)

    if labels_file is not None:
        lf = Path(labels_file)
        if lf.is_dir():
            raise UsageError(f"{lf} is a folder, expected a labels file (one label per line)")
        if not lf.is_file():
            raise UsageError(f"no such labels file: {lf}")
        labels = read_labels(lf)
        src = str(lf)
    else:
        src = "the model"
    if labels is None:
        labels = default_labels(runner.num_classes)
    if len(labels) != runner.num_classes:
        msg = f"{len(labels)} labels from {src} but the model has {runner.num_classes} outputs"
        if labels_file is not None:
            raise UsageError(msg)
        raise MobilenetEdgeError(msg)
    return runner, prep, labels, manifest
