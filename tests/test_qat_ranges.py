"""Issue #22: int8 from the activation ranges of Google's QAT .tflite (recipe qat-ranges), no calibration images.

The expected scales and zero points are read here straight from the reference files with the LiteRT
interpreter (tensor names as TF-slim wrote them), independently of the package's reader and mapping."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest

pytest.importorskip("torch")
litert = pytest.importorskip("ai_edge_litert.interpreter")

from test_weights import float_tflite, small_tflite  # noqa: E402, F401 - fixtures

from mobilenet_edge.build.export import ExportOptions, export_bundle  # noqa: E402
from mobilenet_edge.build.weights import download as D  # noqa: E402
from mobilenet_edge.build.weights.tflite_file import read_activation_ranges  # noqa: E402
from mobilenet_edge.cli import main  # noqa: E402
from mobilenet_edge.core.variants import BLOCKS  # noqa: E402
from mobilenet_edge.quantize.options import QuantOptions  # noqa: E402
from mobilenet_edge.quantize.stages import quantize_model  # noqa: E402

REFERENCE = [(0.25, 128, "mobilenet_v1_0.25_128_quant.tflite"), (0.5, 160, "mobilenet_v1_0.5_160_quant.tflite"),
             (0.75, 192, "mobilenet_v1_0.75_192_quant.tflite")]


def file_qparams(path) -> dict[str, tuple[float, int]]:
    """TF-slim op name (first ';' segment, without the MobilenetV1/ scopes) -> (scale, zero point)."""
    it = litert.Interpreter(model_path=str(path))
    out = {}
    for d in it.get_tensor_details():
        first = d["name"].split(";")[0]
        out[re.sub(r"^(MobilenetV1/)+", "", first)] = (float(d["quantization"][0]), int(d["quantization"][1]))
    return out


def expected_source(onnx_tensor: str) -> str:
    """Our ONNX activation tensor -> the TF-slim tensor whose parameters it must carry (the test's own
    reading of both naming schemes; the shape-only Flatten carries its input's: the pool)."""
    if onnx_tensor == "input":
        return "input"
    if onnx_tensor.startswith("/stem/"):
        return "Conv2d_0/Relu6"
    m = re.match(r"/blocks/blocks\.(\d+)/(depthwise|pointwise)/", onnx_tensor)
    if m:
        return f"Conv2d_{int(m.group(1)) + 1}_{m.group(2)}/Relu6"
    if onnx_tensor in ("/pool/GlobalAveragePool_output_0", "/Flatten_output_0"):
        return "Logits/AvgPool_1a/AvgPool"
    raise AssertionError(f"unexpected activation tensor {onnx_tensor}")


def quantizers(path) -> dict[str, tuple[float, int]]:
    """Every QuantizeLinear of an int8 ONNX: quantized tensor -> (scale, zero point)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    init = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    return {n.input[0]: (float(init[n.input[1]]), int(init[n.input[2]])) for n in m.graph.node
            if n.op_type == "QuantizeLinear"}


@pytest.mark.realdata
@pytest.mark.parametrize("alpha,res,name", REFERENCE)
def test_every_activation_quantizer_has_its_source_in_the_file(alpha, res, name, reference_dir, tmp_path):
    ref = reference_dir / name
    want = file_qparams(ref)
    b = export_bundle(ExportOptions(alpha=alpha, res=res, weights=ref, out=tmp_path))["bundle"]
    qat = read_activation_ranges(ref)
    assert qat.sha256 == hashlib.sha256(ref.read_bytes()).hexdigest()
    for ff in (0, 2) if alpha == 0.25 else (0,):  # all convs int8 (input quantized too); the default (2 float)
        dst = tmp_path / f"q{ff}.onnx"
        rec = quantize_model(b / "model.onnx", dst, None, QuantOptions(recipe="qat-ranges", float_first=ff),
                             reduce_range=False, activation_ranges=qat)
        got = quantizers(dst)
        if ff == 0:  # the input, 27 conv+ReLU6 outputs, the pool, the Flatten; float logits: none after the classifier
            assert len(got) == 1 + (1 + 2 * len(BLOCKS)) + 2
        for tensor, (scale, zp) in got.items():
            src = want[expected_source(tensor)]
            assert scale == pytest.approx(src[0], rel=1e-6) and zp == src[1], tensor
        if ff == 0:
            assert got["input"] == (pytest.approx(1 / 128), 128)  # data README: input scale 1/128, zero point 128
        m = rec["recipe"]["activation_ranges"]
        assert m["source"]["sha256"] == qat.sha256
        # every tensor ORT's calibrator would collect has a source: the file, or a stated rule
        assert set(m["rules"]) <= {"file", "conv-before-relu6", "shape-op"}
        assert m["rules"]["conv-before-relu6"] == 1 + 2 * len(BLOCKS)
        logits = [r for r in m["mapping"] if r["tensor"] == "logits"]
        assert logits and (logits[0]["scale"], logits[0]["zero_point"]) == \
            pytest.approx(want["Logits/Conv2d_1c_1x1/BiasAdd"])
    assert rec["calibration"]["images"] == 0


@pytest.mark.realdata
def test_readme_command_with_int8_needs_no_network_and_no_images(tmp_path, monkeypatch, capsys):
    """`export --alpha 0.5 --res 160 --int8 --force`, downloads pointed at a closed port, empty cache."""
    monkeypatch.setenv(D.ENV_URL, "http://127.0.0.1:9/none")
    monkeypatch.setenv(D.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    code = main(["export", "--alpha", "0.5", "--res", "160", "--int8", "--force"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "int8 recipe: qat-ranges (activation ranges from mobilenet_v1_0.5_160_quant.tflite)" in err
    m = json.loads((tmp_path / "export" / "mobilenet_v1_0.50_160" / "manifest.json").read_text())
    shipped = D.SHIPPED_DIR / "mobilenet_v1_0.5_160_quant.tflite"
    q = m["quantization"]
    assert q["recipe"]["recipe"]["name"] == "qat-ranges"
    assert q["recipe"]["activation_ranges"]["source"]["sha256"] == hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert q["calibration"]["images"] == 0 and q["evaluation_source"]["kind"] == "synthetic"
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.tflite"))


@pytest.mark.realdata
def test_float_tflite_without_calib_asks_for_it_and_writes_nothing(float_tflite, tmp_path, capsys):  # noqa: F811
    assert read_activation_ranges(float_tflite) is None  # float activations: no ranges to take
    out = tmp_path / "out"
    code = main(["export", "--weights", str(float_tflite), "--res", "128", "--int8", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "--int8 needs --calib DIR" in err and err.count("\n") == 1
    assert not out.exists() or not any(out.iterdir())
    code = main(["export", "--weights", str(float_tflite), "--res", "128", "--int8", "--recipe", "qat-ranges",
                 "--out", str(out)])
    assert code == 2 and "has no activation ranges" in capsys.readouterr().err


@pytest.mark.realdata
def test_a_calibrated_recipe_without_calib_fails_before_any_file(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["export", "--alpha", "0.25", "--res", "128", "--int8", "--recipe", "fidelity", "--out", str(out)])
    assert code == 2 and "--recipe fidelity calibrates: it needs --calib DIR" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_qat_ranges_has_no_tflite_form(tmp_path, capsys):
    code = main(["export", "--alpha", "0.25", "--res", "64", "--weights", "random", "--int8", "--calib", str(tmp_path),
                 "--format", "tflite", "--recipe", "qat-ranges", "--out", str(tmp_path / "o")])
    assert code == 2 and "makes model.int8.onnx only" in capsys.readouterr().err


@pytest.mark.realdata
def test_quantize_a_bundle_without_calib_uses_the_source_ranges(small_tflite, calib_dir, tmp_path, capsys):  # noqa: F811
    b = export_bundle(ExportOptions(alpha=0.25, res=128, weights=small_tflite, out=tmp_path))["bundle"]
    code = main(["quantize", str(b), "--eval", str(calib_dir), "--json"])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert "int8 recipe: qat-ranges" in cap.err
    rec = json.loads(cap.out)
    assert rec["recipe"]["recipe"]["name"] == "qat-ranges" and rec["fidelity"]["images"] == 100
    # the data README's oracle: TF-slim's 0.25/128 QAT model; the int8 model agrees with our fp32 on most images
    assert rec["fidelity"]["agreement_top1"] >= 0.9
    # a bundle whose source file is gone: --recipe qat-ranges says so; without it, --calib is asked for
    man = json.loads((b / "manifest.json").read_text())
    man["weights"]["sha256"] = "0" * 64
    (b / "manifest.json").write_text(json.dumps(man))
    assert main(["quantize", str(b), "--recipe", "qat-ranges", "--force"]) == 2
    assert "is not on this machine" in capsys.readouterr().err
    assert main(["quantize", str(b), "--force"]) == 2
    assert "--calib DIR is required" in capsys.readouterr().err


def test_ort_inputs_shift_uint8_parameters_to_int8():
    """int8 activations: same scale, zero point - 128 (the same real values on the grid)."""
    from mobilenet_edge.quantize.qat_ranges import Mapped, SourceRange, ort_inputs

    src = SourceRange("conv", "Conv2d_0", "t", 6 / 255, 0, "uint8", 8)
    for act, zp, lo, hi in (("uint8", 0, 0.0, 6.0), ("int8", -128, 0.0, 6.0)):
        ranges, ov = ort_inputs([Mapped("x", src, "file")], act)
        assert int(ov["x"][0]["zero_point"]) == zp
        assert float(ranges["x"].range_value[0]) == pytest.approx(lo, abs=1e-6)
        assert float(ranges["x"].range_value[1]) == pytest.approx(hi, rel=1e-6)
    assert np.float32(ov["x"][0]["scale"]) == np.float32(6 / 255)
