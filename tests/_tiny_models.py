"""Tiny, fully known models for runtime tests (no torch): their outputs are computed independently in numpy.

* :func:`tiny_onnx`: ``logits = W @ mean_over_pixels(x) + b`` (GlobalAveragePool -> Flatten -> Gemm),
  input ``input`` (N, 3, R, R) float32 NCHW, output ``logits`` (N, C) float32.
* :func:`tiny_bundle`: a bundle folder per docs/bundle-format.md around :func:`tiny_onnx`
  (optionally with a QDQ int8 copy from onnxruntime.quantization.quantize_static).
* :func:`tiny_tflite`: a one-op RESHAPE ``.tflite`` (built with the TFLite flatbuffer schema shipped in
  ai-edge-litert): input (1, R, R, 3) -> output (1, R*R*3) with the given dtype and quantization, so
  the runner's quantize -> invoke -> dequantize path is checked exactly. ``image=False`` makes a
  (1, 10) float input: a .tflite whose input is not an image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mobilenet_edge.core import bundle
from mobilenet_edge.core.labels import imagenet_labels


def tiny_weights(classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (classes, 3)).astype(np.float32), rng.normal(0, 0.1, classes).astype(np.float32)


def tiny_onnx(path: Path, *, res: int = 32, classes: int = 10, batch: int | str = "N", metadata: dict | None = None,
              seed: int = 0) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w, b = tiny_weights(classes, seed)
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "B"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, res, res])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7)
    for k, v in (metadata or {}).items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v if isinstance(v, str) else json.dumps(v)))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def tiny_bundle(folder: Path, *, res: int = 32, classes: int = 1001, int8: bool = False, seed: int = 0,
                prep: dict | None = None) -> Path:
    """A bundle folder (manifest.json, labels.txt, model.onnx[, model.int8.onnx]) following the contract."""
    from mobilenet_edge.core.images import Preprocessing

    folder.mkdir(parents=True)
    p = Preprocessing(res=res, **(prep or {})).to_dict()
    labels = imagenet_labels(classes)
    md = {"producer": "mobilenet-edge", "variant": "tiny", "res": str(res), "num_classes": str(classes),
          "weights": "random", "preprocessing": p, "labels": labels}
    tiny_onnx(folder / bundle.FILE_FP32, res=res, classes=classes, metadata=md, seed=seed)
    (folder / bundle.LABELS).write_text("\n".join(labels) + "\n", encoding="utf-8")
    io = {"input": {"name": "input", "shape": ["N", 3, res, res], "dtype": "float32", "layout": "NCHW"},
          "output": {"name": "logits", "shape": ["N", classes], "dtype": "float32"}}
    files = {
        bundle.FILE_FP32: {**bundle.file_record(folder / bundle.FILE_FP32), "format": "onnx", "precision": "fp32", **io},
        bundle.LABELS: bundle.file_record(folder / bundle.LABELS),
    }
    if int8:
        quantize_qdq(folder / bundle.FILE_FP32, folder / bundle.FILE_INT8, res=res)
        files[bundle.FILE_INT8] = {**bundle.file_record(folder / bundle.FILE_INT8), "format": "onnx",
                                   "precision": "int8", **io}
    manifest = {
        "format": bundle.FORMAT, "format_version": bundle.FORMAT_VERSION, "name": "tiny",
        "variant": {"num_classes": classes, "res": res}, "weights": {"source": "random"},
        "preprocessing": p, "labels": {"file": bundle.LABELS, "count": classes, "background_index": 0},
        "files": files,
    }
    bundle.write_manifest(folder, manifest)
    return folder


def quantize_qdq(src: Path, dst: Path, *, res: int, n: int = 16) -> Path:
    """ORT static QDQ quantization (uint8 activations, int8 weights) on random calibration inputs."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(1)
            # a random colour per image (+ noise): the pooled means then span [-1, 1] like real photos' do
            self.it = iter([
                {"input": np.clip(rng.uniform(-1, 1, (1, 3, 1, 1)) + rng.normal(0, 0.1, (1, 3, res, res)), -1, 1)
                 .astype(np.float32)} for _ in range(n)
            ])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=False)
    return dst


def tiny_tflite(path: Path, *, res: int = 4, dtype: str = "uint8", scale: float = 1 / 128, zero_point: int = 128,
                out_scale: float | None = None, out_zero_point: int | None = None, image: bool = True,
                batch: int = 1) -> Path:
    """One RESHAPE op: (batch, res, res, 3) -> (batch, res*res*3); see the module docstring."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    ttype = {"uint8": s.TensorType.UINT8, "int8": s.TensorType.INT8, "float32": s.TensorType.FLOAT32}[dtype]
    in_shape = [batch, res, res, 3] if image else [batch, 10]
    n_out = res * res * 3 if image else 10
    out_shape = [batch, n_out]

    def tensor(name, shape, ttype, buf, sc=None, zp=None):
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name, shape, ttype, buf
        if sc is not None:
            q = s.QuantizationParametersT()
            q.scale, q.zeroPoint = [sc], [zp]
            t.quantization = q
        return t

    quant = dtype != "float32"
    t_in = tensor("input", in_shape, ttype, 1, scale if quant else None, zero_point if quant else None)
    osc = out_scale if out_scale is not None else scale
    ozp = out_zero_point if out_zero_point is not None else zero_point
    t_out = tensor("scores", out_shape, ttype, 2, osc if quant else None, ozp if quant else None)
    t_shape = tensor("shape", [2], s.TensorType.INT32, 3)
    bufs = [s.BufferT() for _ in range(4)]
    bufs[3].data = list(np.array(out_shape, "<i4").tobytes())
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 2], [1]
    op.builtinOptionsType = s.BuiltinOptions.ReshapeOptions
    opts = s.ReshapeOptionsT()
    opts.newShape = out_shape
    op.builtinOptions = opts
    sg = s.SubGraphT()
    sg.tensors, sg.inputs, sg.outputs, sg.operators, sg.name = [t_in, t_out, t_shape], [0], [1], [op], "main"
    code = s.OperatorCodeT()
    code.builtinCode = s.BuiltinOperator.RESHAPE
    code.deprecatedBuiltinCode = s.BuiltinOperator.RESHAPE
    code.version = 1
    m = s.ModelT()
    m.version, m.operatorCodes, m.subgraphs, m.buffers, m.description = 3, [code], [sg], bufs, "tiny reshape"
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    path.write_bytes(bytes(b.Output()))
    return path
