"""The one-place-per-concept modules of core/: manifest, precision rule, session factory, strict JSON,
versions. Expected values come from the documented format (docs/bundle-format.md), ONNX's own
operators and numpy/ORT themselves, not from the code under test."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mobilenet_edge.core import jsonio
from mobilenet_edge.core.errors import MobilenetEdgeError
from mobilenet_edge.core.manifest import Manifest
from mobilenet_edge.core.precision import QUANTIZED_OPS, file_precision, quantized_ops
from mobilenet_edge.core.sessions import ort_session
from mobilenet_edge.core.versions import dist_version, versions

# docs/bundle-format.md's example, in the order export writes it, plus a grid key and quantize's record
DOC_MANIFEST = {
    "format": "mobilenet-edge-bundle",
    "format_version": 1,
    "name": "mobilenet_v1_0.50_160",
    "created": "2026-11-29T12:00:00Z",
    "producer": {"name": "mobilenet-edge", "version": "0.1.0"},
    "variant": {"alpha": 0.5, "res": 160, "num_classes": 1001, "params": 1332105, "macs": 76525312},
    "model_config": {"alpha": 0.5, "num_classes": 1001, "activation": "relu6", "padding": "tf_same"},
    "weights": {"source": "tflite", "file": "mobilenet_v1_0.5_160_quant.tflite", "sha256": "ab"},
    "preprocessing": {"res": 160, "mean": [127.5, 127.5, 127.5], "std": [127.5, 127.5, 127.5], "crop": 0.875,
                      "resize": "tf_bilinear"},
    "labels": {"file": "labels.txt", "count": 1001, "background_index": 0},
    "files": {"model.onnx": {"sha256": "cd", "size": 5300000, "format": "onnx", "precision": "fp32"}},
    "export": {"opset": 13},
    "grid": {"point": 3},
    "quantization": {"method": "minmax"},
}


def test_manifest_round_trip_keeps_every_key_in_order():
    m = Manifest.from_dict(json.loads(json.dumps(DOC_MANIFEST)))
    assert json.dumps(m.to_dict()) == json.dumps(DOC_MANIFEST)
    assert m.weights_source == "tflite" and not m.random_weights
    assert m.labels_file == "labels.txt"
    assert m.file("model.onnx")["precision"] == "fp32" and m.file("model.int8.onnx") == {}
    assert m.prep().res == 160 and m.prep().resize == "tf_bilinear"
    assert m.extra == {"grid": {"point": 3}}


def test_manifest_absent_sections_stay_absent(tmp_path):
    bare = {"format": "mobilenet-edge-bundle", "name": "x"}
    m = Manifest.from_dict(bare)
    assert m.to_dict() == bare
    assert m.weights_source is None and m.labels_file == "labels.txt" and m.file("model.onnx") == {}
    m.write(tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text()) == bare
    assert Manifest.read(tmp_path).to_dict() == bare


@pytest.mark.parametrize("data", [{"format": "other"}, [], {"name": "no format"}])
def test_manifest_refuses_foreign_json(data):
    with pytest.raises(MobilenetEdgeError, match="not a mobilenet-edge manifest"):
        Manifest.from_dict(data)


def test_manifest_read_errors_name_the_folder(tmp_path):
    with pytest.raises(MobilenetEdgeError, match="is not a bundle: no manifest.json"):
        Manifest.read(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(MobilenetEdgeError, match="cannot read"):
        Manifest.read(tmp_path)


def _graph(path, ops_quantized: bool, metadata: dict | None = None):
    """A 1-op model: Identity, or QuantizeLinear -> DequantizeLinear (ONNX's own QDQ operators)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    if ops_quantized:
        inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("z", TensorProto.UINT8, [], [0])]
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                 helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    else:
        inits, nodes = [], [helper.make_node("Identity", ["x"], ["y"])]
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 7
    for k, v in (metadata or {}).items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(path))
    return m


def test_precision_rules(tmp_path):
    assert file_precision(tmp_path / "mobilenet_v1_0.5_160_quant.tflite") == "int8"  # rule 3, Google's name
    assert file_precision(tmp_path / "model.int8.onnx") == "int8"  # rule 3, our name (not read)
    assert file_precision(tmp_path / "model.tflite", quantized_io=True) == "int8"  # rule 1
    plain = _graph(tmp_path / "plain.onnx", False)
    assert file_precision(tmp_path / "plain.onnx") == "fp32" and quantized_ops(plain) == []
    _graph(tmp_path / "tagged.onnx", False, {"precision": "int8"})
    assert file_precision(tmp_path / "tagged.onnx") == "int8"  # rule 2, read from the file
    assert file_precision(tmp_path / "plain.onnx", metadata={"precision": "int8"}) == "int8"  # rule 2, given
    qdq = _graph(tmp_path / "qdq.onnx", True)
    assert file_precision(tmp_path / "qdq.onnx") == "int8"  # rule 4
    assert quantized_ops(qdq) == ["QuantizeLinear", "DequantizeLinear"] and set(quantized_ops(qdq)) <= set(QUANTIZED_OPS)
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a model")
    assert file_precision(tmp_path / "junk.onnx") == "fp32"


def test_ort_session_options(tmp_path):
    _graph(tmp_path / "qdq.onnx", True)
    s = ort_session(tmp_path / "qdq.onnx", threads=2, sequential=True, optimize=False)
    so = s.get_session_options()
    assert so.intra_op_num_threads == 2 and so.inter_op_num_threads == 1 and so.log_severity_level == 3
    assert s.get_providers() == ["CPUExecutionProvider"]
    x = np.array([[0.0, 0.1, 0.26, 25.6]], np.float32)
    want = np.clip(np.rint(x / 0.1), 0, 255) * 0.1  # uint8 QDQ round trip by hand (round half to even)
    np.testing.assert_allclose(s.run(None, {"x": x})[0], want, rtol=0, atol=1e-6)
    from_bytes = ort_session(onnx.load(str(tmp_path / "qdq.onnx")).SerializeToString())
    np.testing.assert_array_equal(from_bytes.run(None, {"x": x})[0], s.run(None, {"x": x})[0])


def test_strict_json():
    text = jsonio.dumps({"a": math.nan, "b": [np.float32(0.5), np.int64(3), math.inf], "c": (1, -math.inf)})
    assert json.loads(text) == {"a": None, "b": [0.5, 3, None], "c": [1, None]}
    assert "NaN" not in text and "Infinity" not in text
    assert jsonio.dumps({"x": 1}, indent=2) == json.dumps({"x": 1}, indent=2)


def test_versions_come_from_package_metadata():
    import onnxruntime

    assert dist_version("numpy") == np.__version__
    assert versions(["onnxruntime", "no-such-dist-xyz"]) == {"onnxruntime": onnxruntime.__version__, "no-such-dist-xyz": None}
    assert versions(["no-such-dist-xyz"], keep_missing=False) == {}


def test_manifest_keeps_the_order_and_nulls_it_read():
    hand_edited = {"name": "x", "format": "mobilenet-edge-bundle", "quantization": None, "zzz": 1, "weights": None}
    m = Manifest.from_dict(hand_edited)
    assert list(m.to_dict().items()) == list(hand_edited.items())
    m.quantization = {"method": "minmax"}  # what quantize does: replace its record in place
    m.files = {"model.int8.onnx": {"size": 1}}
    assert list(m.to_dict()) == ["name", "format", "quantization", "zzz", "weights", "files"]
