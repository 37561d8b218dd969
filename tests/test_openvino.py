"""OpenVINO as a third runtime (issue #21): Runner, predict/eval --runtime, bench's pairs and winner line.

Expected values are independent of the code under test: the tiny model's function is known (mean over
pixels, then a dense layer: numpy computes it here), ONNX Runtime is the reference for OpenVINO on the
same file, and the "fastest" entries are recomputed here from the JSON rows. The real-data test exports
Google's 0.5/160 weights with the CLI and compares OpenVINO's int8 top-1 with ONNX Runtime's on the 100
labelled calibration images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _tiny_models import tiny_bundle, tiny_onnx, tiny_weights
from conftest import has_module

from mobilenet_edge.core.errors import UsageError
from mobilenet_edge.runtime.runner import Runner

pytestmark = pytest.mark.skipif(not has_module("openvino"), reason="openvino not installed ([openvino] extra)")


def _expected_tiny(x: np.ndarray, classes: int) -> np.ndarray:
    w, b = tiny_weights(classes)
    return x.astype(np.float64).mean(axis=(2, 3)) @ w.T.astype(np.float64) + b


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_bundle(tmp_path_factory.mktemp("ov") / "tiny", res=16, classes=1001, int8=True)


def _run(capsys, *args):
    from mobilenet_edge.cli import main

    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_runner_openvino_matches_numpy_and_records_what_ran(tmp_path):
    path = tiny_onnx(tmp_path / "m.onnx", res=16, classes=7, metadata={"producer": "test"})
    r = Runner(path, threads=2, runtime="openvino")
    assert (r.backend, r.runtime, r.layout, r.res, r.num_classes, r.fixed_batch) == (
        "openvino", "openvino", "NCHW", 16, 7, None)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(r.run(x), _expected_tiny(x, 7), atol=1e-5)  # f32 hint: not bf16 (~1e-2)
    d = r.describe()
    assert d["execution"]["inference_precision"] == "f32" and d["execution"]["threads"] == 2
    assert d["execution"]["compute_precisions"] == {"f32": 1}  # the one dense layer
    assert r.metadata == {"producer": "test"}  # ONNX metadata_props, read with onnx
    assert "execution" not in Runner(path).describe()  # ORT rows unchanged


def test_runner_openvino_int8_runs_quantized_and_agrees_with_ort(tiny):
    x = np.random.default_rng(1).uniform(-1, 1, (8, 3, 16, 16)).astype(np.float32)
    ov, ort = Runner(tiny / "model.int8.onnx", runtime="openvino"), Runner(tiny / "model.int8.onnx", runtime="ort")
    assert set(ov.execution["compute_precisions"]) <= {"u8", "i8"}  # the QDQ layer runs in integers
    a, b = ov.run(x), ort.run(x)
    scale = np.abs(b).max()
    assert np.abs(a - b).max() <= 0.05 * scale  # two int8 kernels: within a few quantization steps
    np.testing.assert_array_equal(np.argmax(a, 1), np.argmax(b, 1))


@pytest.mark.parametrize("path, runtime, needle", [
    ("model.onnx", "litert", "cannot run model.onnx"),
    ("model.onnx", "tensorrt", "unknown runtime"),
])
def test_runner_wrong_runtime_is_a_usage_error(tiny, path, runtime, needle):
    with pytest.raises(UsageError, match=needle):
        Runner(tiny / path, runtime=runtime)


def test_predict_and_eval_runtime_openvino(capsys, tiny, tmp_path):
    from PIL import Image

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(2)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(imgs / f"n01440764_{i}.png")
    tops = {}
    for rt in ("ort", "onnxruntime", "openvino"):
        code, out, err = _run(capsys, "predict", tiny, imgs, "--json", "--runtime", rt)
        assert code == 0, err
        tops[rt] = [(r["top_k"][0]["index"], round(r["top_k"][0]["score"], 4)) for r in json.loads(out)]
    assert tops["openvino"] == tops["ort"] == tops["onnxruntime"]
    code, out, err = _run(capsys, "eval", tiny, imgs, "--json", "--runtime", "openvino", "--int8")
    assert code == 0, err
    res = json.loads(out)
    assert (res["runtime"], res["backend"], res["n"]) == ("openvino", "openvino", 3)
    assert res["execution"]["inference_precision"] == "f32"
    code, _, err = _run(capsys, "predict", tiny, imgs, "--runtime", "nope")
    assert code == 2 and "unknown runtime" in err and len(err.strip().splitlines()) == 1


def test_bench_bundle_times_every_pair_and_names_the_fastest(capsys, tiny):
    code, out, err = _run(capsys, "bench", tiny, "--threads", "1,2", "--runs", "5", "--warmup", "1", "--json", "-")
    assert code == 0, err
    data = json.loads(out)
    rows = data["results"]
    pairs = {(Path(r["model"]).name, r["runtime"], r["threads"]) for r in rows}
    assert pairs == {(f, rt, n) for f in ("model.onnx", "model.int8.onnx") for rt in ("onnxruntime", "openvino")
                     for n in (1, 2)}
    for r in rows:
        assert (r["runtime"] == "openvino") == ("execution" in r)
        if r["runtime"] == "openvino":
            assert r["execution"]["inference_precision"] == "f32" and r["execution"]["threads"] == r["threads"]
    assert data["environment"]["openvino"]
    fast = data["fastest"]
    assert [f["threads"] for f in fast] == [1, 2]  # one entry per thread count
    for f in fast:
        ranked = sorted((r for r in rows if r["threads"] == f["threads"]), key=lambda r: r["p50_ms"])
        assert (f["model"], f["runtime"], f["p50_ms"]) == (ranked[0]["model"], ranked[0]["runtime"], ranked[0]["p50_ms"])
        assert f["runner_up"]["p50_ms"] == ranked[1]["p50_ms"]
        assert f["ratio"] == pytest.approx(ranked[1]["p50_ms"] / ranked[0]["p50_ms"])
        assert f"fastest tiny x{f['threads']}: {f['model']} on {f['runtime']}" in err


def test_bench_runtimes_option_filters_and_lone_files_keep_their_default(capsys, tiny):
    code, out, err = _run(capsys, "bench", tiny, "--runtimes", "openvino", "--runs", "2", "--warmup", "0",
                          "--json", "-")
    assert code == 0, err
    assert {r["runtime"] for r in json.loads(out)["results"]} == {"openvino"}
    code, out, err = _run(capsys, "bench", tiny / "model.onnx", "--runs", "2", "--warmup", "0", "--json", "-")
    data = json.loads(out)
    assert code == 0 and [r["runtime"] for r in data["results"]] == ["onnxruntime"] and data["fastest"] == []
    code, _, err = _run(capsys, "bench", tiny / "model.onnx", "--runtimes", "litert")
    assert code == 2 and "none of the runtimes" in err
    code, _, err = _run(capsys, "bench", tiny, "--runtimes", "ort,cuda")
    assert code == 2 and "--runtimes" in err


def test_report_shows_the_winner_per_device(capsys, tiny, tmp_path):
    j = tmp_path / "x86.json"
    assert _run(capsys, "bench", tiny, "--runs", "3", "--warmup", "0", "--json", j)[0] == 0
    data = json.loads(j.read_text())
    assert len(data["fastest"]) == 1
    data["environment"].update(cpu_model="Cortex-A76", arch="aarch64")
    pi = tmp_path / "pi.json"
    pi.write_text(json.dumps(data))
    code, out, err = _run(capsys, "report", j, pi)
    assert code == 0, err
    lines = [ln for ln in out.splitlines() if "fastest tiny x1" in ln]
    assert len(lines) == 2 and any(ln.startswith("Cortex-A76 (aarch64): ") for ln in lines)


@pytest.mark.slow
@pytest.mark.export
@pytest.mark.realdata
def test_openvino_int8_top1_matches_ort_on_google_weights(capsys, tmp_path, reference_dir, calib_dir):
    """Google's 0.5/160 weights exported with the CLI (fp32 + int8); OpenVINO's int8 top-1 on the 100
    labelled images within 1 image of ONNX Runtime's, and its fp32 top-1 equal to ORT's."""
    pytest.importorskip("torch")
    code, _, err = _run(capsys, "export", "--alpha", "0.5", "--res", "160", "--weights",
                        reference_dir / "mobilenet_v1_0.5_160_quant.tflite", "--int8", "--calib", calib_dir,
                        "--out", tmp_path)
    assert code == 0, err
    b = tmp_path / "mobilenet_v1_0.50_160"
    got = {}
    for rt in ("ort", "openvino"):
        for prec in ([], ["--int8"]):
            code, out, err = _run(capsys, "eval", b, calib_dir, "--json", "--runtime", rt, *prec)
            assert code == 0, err
            res = json.loads(out)
            assert res["n"] == 100
            got[rt, bool(prec)] = res["top1_correct"]
    assert abs(got["openvino", True] - got["ort", True]) <= 1, got
    assert abs(got["openvino", False] - got["ort", False]) <= 1, got


def test_fidelity_report_on_openvino(tiny):
    """quantize's fidelity report on OpenVINO: the same shape of report, agreement within one input of
    ONNX Runtime's (both int8 kernels quantize the same QDQ graph), and a runtime it cannot use refused."""
    from mobilenet_edge.core.images import Preprocessing
    from mobilenet_edge.quantize.fidelity import fidelity

    x = np.random.default_rng(3).uniform(-1, 1, (40, 3, 16, 16)).astype(np.float32)
    prep = Preprocessing(res=16)
    ort = fidelity(tiny / "model.onnx", tiny / "model.int8.onnx", x, prep)
    ov = fidelity(tiny / "model.onnx", tiny / "model.int8.onnx", x, prep, runtime="openvino")
    assert ov["runtime"] == "openvino" and "runtime" not in ort
    assert set(ov) - {"runtime"} == set(ort) and ov["images"] == ort["images"] == 40
    assert abs(ov["agreement_top1"] - ort["agreement_top1"]) * 40 <= 1
    assert abs(ov["sqnr_db"]["mean"] - ort["sqnr_db"]["mean"]) < 3
    with pytest.raises(UsageError, match="onnxruntime or openvino"):
        fidelity(tiny / "model.onnx", tiny / "model.int8.onnx", x, prep, runtime="litert")


@pytest.mark.export
def test_bench_grid_runtimes_adds_openvino_rows(capsys, tmp_path):
    """bench --grid --runtimes ort,openvino: each grid file also on OpenVINO, and the winner per point in
    grid.json; without --runtimes the grid stays ORT-only (tests/test_export.py)."""
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    code, out, err = _run(capsys, "bench", "--grid", "--alphas", "0.25", "--res", "64", "--out", tmp_path,
                          "--runs", "2", "--warmup", "0", "--runtimes", "ort,openvino")
    assert code == 0, err
    data = json.loads((tmp_path / "grid.json").read_text())
    assert [(r["precision"], r["runtime"]) for r in data["results"]] == [
        ("fp32", "onnxruntime"), ("fp32", "openvino"), ("int8", "onnxruntime"), ("int8", "openvino")]
    (f,) = data["fastest"]
    assert f["p50_ms"] == min(r["p50_ms"] for r in data["results"]) and "fastest mobilenet_v1_0.25_64 x1" in out


def test_quantize_cli_runs_its_fidelity_report_on_openvino(capsys, tmp_path):
    """`quantize --runtime openvino`: the record says where the report ran, the int8 file is the same bytes as
    with the default (the runtime only evaluates), and a runtime that cannot run .onnx is one usage line."""
    import shutil

    src = tiny_bundle(tmp_path / "b", res=16, classes=10, int8=False)
    other = tmp_path / "c"
    shutil.copytree(src, other)
    code, out, err = _run(capsys, "quantize", src, "--synthetic", "--runtime", "openvino", "--json", "--force")
    assert code == 0, err
    rec = json.loads(out)
    assert rec["fidelity"]["runtime"] == "openvino" and rec["fidelity"]["images"] == 16
    code, out, err = _run(capsys, "quantize", other, "--synthetic", "--json", "--force")
    assert code == 0, err
    assert "runtime" not in json.loads(out)["fidelity"]
    assert (src / "model.int8.onnx").read_bytes() == (other / "model.int8.onnx").read_bytes()
    code, _, err = _run(capsys, "quantize", src, "--synthetic", "--runtime", "litert", "--force")
    assert code == 2 and "ort or openvino" in err and len(err.strip().splitlines()) == 1
