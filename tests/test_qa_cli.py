"""Regressions from a QA pass over the CLI (quantize, bench, report, weights, summary, consoles).

Each test states the behaviour asked for: one line on stderr, exit 2 for a usage mistake, exit 1 for a
runtime failure (a missing optional package included), checks before any work, nothing claimed that was
not written. Inputs are built here (onnx helper, Pillow, tiny files); expected counts come from the graphs
the tests build.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _tiny_models import tiny_bundle, tiny_tflite
from PIL import Image

from mobilenet_edge.cli.app import err, main, out
from mobilenet_edge.core import bundle
from mobilenet_edge.core.errors import MobilenetEdgeError, UsageError

ROOT = Path(__file__).resolve().parents[1]
PROG = "mobilenet-edge: error: "

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch (export extra)")
needs_mpl = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib (plot extra)")
needs_litert = pytest.mark.skipif(importlib.util.find_spec("ai_edge_litert") is None, reason="needs ai-edge-litert")


def _images(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8), "RGB").save(folder / f"img_{i:02d}.png")
    return folder


def _conv_onnx(path: Path, *, convs: int, res: int = 32) -> Path:
    """fp32 model with exactly ``convs`` Conv nodes (3x3 then 1x1s, ReLU after each), GAP, Flatten."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, x, cin = [], [], "input", 3
    for i in range(convs):
        k = 3 if i == 0 else 1
        w = rng.normal(0, 0.3, (8, cin, k, k)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(8, np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], pads=[k // 2] * 4),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        x, cin = f"r{i}", 8
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"]), helper.make_node("Flatten", ["gap"], ["logits"])]
    graph = helper.make_graph(nodes, "convs", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, res, res])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 8])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def _results_json(path: Path) -> Path:
    row = {"model": "m.onnx", "variant": "mobilenet_v1_0.25_128", "alpha": 0.25, "res": 128, "precision": "fp32",
           "runtime": "onnxruntime", "threads": 1, "p50_ms": 1.0, "macs": 14_000_000}
    path.write_text(json.dumps({"environment": {"machine": "x86_64"}, "results": [row]}))
    return path


# ---------------------------------------------------------------- 1, 2: quantize refuses before any work


def test_quantize_refuses_an_already_quantized_model(tmp_path, capsys):
    b = tiny_bundle(tmp_path / "b", int8=True)  # model.int8.onnx: ORT QDQ
    q = tmp_path / "q.onnx"
    q.write_bytes((b / bundle.FILE_INT8).read_bytes())
    calib = _images(tmp_path / "calib", 4)
    code = main(["quantize", str(q), "--calib", str(calib), "--mean", "127.5", "--std", "127.5"])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2
    assert line == PROG + f"{q} is already quantized (QuantizeLinear/DequantizeLinear nodes); give the fp32 model"
    assert not (tmp_path / "q.int8.onnx").exists()


def test_quantize_float_first_beyond_the_conv_count(tmp_path, capsys, monkeypatch):
    import mobilenet_edge.quantize.pipeline as Q

    m = _conv_onnx(tmp_path / "m.onnx", convs=3)
    calib = _images(tmp_path / "calib", 4)
    calls = []
    monkeypatch.setattr(Q, "quantize_model", lambda *a, **k: calls.append(1) or {})  # calibration must not start
    code = main(["quantize", str(m), "--calib", str(calib), "--mean", "127.5", "--std", "127.5", "--float-first", "4"])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and calls == []
    assert line == PROG + "--float-first 4 exceeds the model's 3 Conv nodes"
    # every Conv in float is allowed (the limit is inclusive)
    assert Q.check_quantizable(m, Q.QuantOptions(float_first=3)) == 3


# ---------------------------------------------------------------- 3: bench --grid without torch


def test_bench_grid_without_torch_says_so_once_and_claims_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch fails, find_spec("torch") is None
    g = tmp_path / "grid"
    code = main(["bench", "--grid", "--alphas", "0.25", "--res", "128", "--runs", "1", "--warmup", "0",
                 "--out", str(g)])
    cap = capsys.readouterr()
    assert code == 1
    assert _one_error_line(cap.err) == PROG + "bench --grid needs torch: pip install 'mobilenet-edge[export]' torch==2.13.0"
    assert "wrote" not in cap.out + cap.err
    assert not g.exists()


def test_grid_with_every_point_failing_claims_no_file(tmp_path, monkeypatch):
    from mobilenet_edge.build.grid import run_grid

    E = importlib.import_module("mobilenet_edge.build.export")  # the module run_grid's `from .export import` sees

    def boom(*a, **k):
        raise MobilenetEdgeError("boom")

    monkeypatch.setattr(E, "export_bundle", boom)
    from rich.console import Console

    o, e = Console(record=True, width=200), Console(record=True, width=200, stderr=True)
    with pytest.raises(MobilenetEdgeError, match="nothing written: boom"):
        run_grid(alphas=[0.25], resolutions=[128, 160], threads=[1], runs=1, warmup=0, out_dir=tmp_path / "g", out=o, err=e)
    assert "wrote" not in o.export_text() + e.export_text()
    assert not (tmp_path / "g" / "grid.json").exists()


# ---------------------------------------------------------------- 4: unwritable outputs, checked upfront


def _read_only(monkeypatch, folder: Path) -> None:
    """``folder`` reads as not writable (as chmod 555 for a user, chattr +i / a read-only mount for root)."""
    real = os.access
    folder = folder.resolve()
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p).resolve() == folder and mode & os.W_OK
                        else real(p, mode, **k))


def test_bench_json_into_read_only_folder_fails_before_benchmarking(tmp_path, capsys, monkeypatch):
    import mobilenet_edge.runtime.bench as B

    b = tiny_bundle(tmp_path / "b")
    ro = tmp_path / "ro"
    ro.mkdir()
    _read_only(monkeypatch, ro)
    calls = []
    monkeypatch.setattr(B, "measure_in_subprocess", lambda *a, **k: calls.append(1))
    code = main(["bench", str(b), "--runs", "1", "--warmup", "0", "--json", str(ro / "x.json")])
    assert code == 2 and calls == []
    assert _one_error_line(capsys.readouterr().err) == PROG + f"--json {ro / 'x.json'}: folder {ro} is not writable"


def test_bench_csv_under_a_regular_file_fails_before_benchmarking(tmp_path, capsys, monkeypatch):
    import mobilenet_edge.runtime.bench as B

    b = tiny_bundle(tmp_path / "b")
    f = tmp_path / "file.txt"
    f.write_text("x")
    calls = []
    monkeypatch.setattr(B, "measure_in_subprocess", lambda *a, **k: calls.append(1))
    code = main(["bench", str(b), "--runs", "1", "--csv", str(f / "x.csv")])
    assert code == 2 and calls == []
    assert _one_error_line(capsys.readouterr().err) == PROG + f"--csv {f / 'x.csv'}: {f} is not a folder"


def test_report_plot_into_read_only_folder_fails_before_the_table(tmp_path, capsys, monkeypatch):
    res = _results_json(tmp_path / "b.json")
    ro = tmp_path / "ro"
    ro.mkdir()
    _read_only(monkeypatch, ro)
    code = main(["report", str(res), "--plot", str(ro / "p.png")])
    cap = capsys.readouterr()
    assert code == 2 and cap.out == ""
    assert _one_error_line(cap.err) == PROG + f"--plot {ro / 'p.png'}: folder {ro} is not writable"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a chmod 555 folder")
def test_report_csv_into_chmod_555_folder(tmp_path, capsys):
    res = _results_json(tmp_path / "b.json")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code = main(["report", str(res), "--csv", str(ro / "m.csv")])
    finally:
        ro.chmod(0o755)
    cap = capsys.readouterr()
    assert code == 2 and cap.out == ""
    assert "not writable" in _one_error_line(cap.err)


def test_weights_import_into_read_only_folder_fails_before_importing(tmp_path, capsys, monkeypatch):
    import mobilenet_edge.build.weights as W

    src = tmp_path / "mobilenet_v1_0.25_128_quant.tflite"
    src.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))  # passes the path check; never opened
    ro = tmp_path / "ro"
    ro.mkdir()
    _read_only(monkeypatch, ro)
    calls = []
    monkeypatch.setattr(W, "load_weights", lambda *a, **k: calls.append(1))
    code = main(["weights", "import", str(src), "-o", str(ro / "w.safetensors")])
    assert code == 2 and calls == []
    assert _one_error_line(capsys.readouterr().err) == PROG + f"--output {ro / 'w.safetensors'}: folder {ro} is not writable"


def test_check_can_write_creates_nothing(tmp_path):
    dst = tmp_path / "a" / "b" / "x.json"
    assert bundle.check_can_write(dst, "--json") == dst
    assert not (tmp_path / "a").exists()  # missing folders are made at write time, not by the check
    with pytest.raises(UsageError, match="is a folder; give a file name"):
        bundle.check_can_write(tmp_path, "--json")


# ---------------------------------------------------------------- 5: a missing optional package is exit 1


def test_report_plot_without_matplotlib_is_a_runtime_failure_before_the_table(tmp_path, capsys, monkeypatch):
    res = _results_json(tmp_path / "b.json")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code = main(["report", str(res), "--plot", str(tmp_path / "p.png")])
    cap = capsys.readouterr()
    assert code == 1 and cap.out == ""  # no table printed before the failure
    assert _one_error_line(cap.err) == PROG + "plots need matplotlib: pip install 'mobilenet-edge[plot]'"


@needs_torch
def test_missing_litert_torch_is_a_runtime_failure(monkeypatch):
    from mobilenet_edge.build import tflite_export

    monkeypatch.setitem(sys.modules, "litert_torch", None)
    with pytest.raises(MobilenetEdgeError, match=r"pip install 'mobilenet-edge\[tflite-export\]'") as e:
        tflite_export.import_litert_torch()
    assert not isinstance(e.value, UsageError)  # exit 1 like torch, matplotlib and the TFLite runtime


# ---------------------------------------------------------------- 6: a text file named .pt


@needs_torch
@pytest.mark.parametrize("data", [b"hello, this is a text file\n", b'{"not": "a checkpoint"}', b"PK\x03\x04cut"])
def test_pt_that_is_not_a_checkpoint(tmp_path, data):
    from mobilenet_edge.build.weights import load_weights
    from mobilenet_edge.core.errors import WeightsError

    p = tmp_path / "junk.pt"
    p.write_bytes(data)
    with pytest.raises(WeightsError) as e:
        load_weights(p)
    assert str(e.value).startswith("junk.pt is not a readable PyTorch checkpoint (truncated or corrupt)")


@needs_torch
def test_export_with_text_file_as_pt(tmp_path, capsys):
    p = tmp_path / "junk.pt"
    p.write_text("hello, this is a text file\n")
    code = main(["export", "--alpha", "0.25", "--res", "128", "--weights", str(p), "--out", str(tmp_path / "e")])
    assert code == 1
    assert _one_error_line(capsys.readouterr().err) == PROG + "junk.pt is not a readable PyTorch checkpoint (truncated or corrupt)"


# ---------------------------------------------------------------- 7: one line per message off a terminal


def test_consoles_do_not_wrap_off_a_terminal(capsys):
    assert not err.is_terminal and not out.is_terminal  # pytest captures both
    msg = "failed junk.onnx: " + " : ".join(["InvalidProtobuf: [ONNXRuntimeError] : 7 : INVALID_PROTOBUF"] * 4)
    assert len(msg) > 200
    err.print(msg, style="red")
    out.print(msg + " " + msg)
    cap = capsys.readouterr()
    assert cap.err.splitlines() == [msg]
    assert cap.out.splitlines() == [msg + " " + msg]


def test_bench_failure_line_is_one_line(tmp_path, capsys):
    junk = tmp_path / "junk.onnx"
    junk.write_text("junk\n")
    code = main(["bench", str(junk), "--runs", "1", "--warmup", "0"])
    cap = capsys.readouterr()
    assert code == 1
    failed = [ln for ln in cap.err.splitlines() if ln.startswith("failed junk.onnx")]
    assert len(failed) == 1 and "INVALID_PROTOBUF" in failed[0]


def test_unexpected_multi_line_error_is_one_line(capsys, monkeypatch):
    """ORT's errors carry newlines ("... for the following indices\\n index: 0 Got: 3 Expected: 1")."""
    import mobilenet_edge.cli.summary as S

    def raise_ort_like(*a, **k):
        raise RuntimeError("Got invalid dimensions for input: input for the following indices\n index: 0 Got: 3")

    monkeypatch.setattr(S, "Variant", raise_ort_like)
    assert main(["summary"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line == PROG + ("RuntimeError: Got invalid dimensions for input: input for the following indices index: 0 "
                           "Got: 3 (rerun with --debug for the traceback)")


def test_quantize_help_shows_full_option_names_when_piped():
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH", "LINES")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-m", "mobilenet_edge.cli", "quantize", "--help"], capture_output=True,
                       text=True, env=env, cwd=ROOT, timeout=60)
    assert r.returncode == 0
    assert "--symmetric-activations" in r.stdout and "--no-reduce-range" in r.stdout
    assert "…" not in r.stdout


# ---------------------------------------------------------------- 8: alpha must be finite


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_summary_alpha_not_finite(capsys, value):
    code = main(["summary", "--alpha", value])
    assert code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == PROG + f"alpha must be a finite number > 0, got {float(value)}"


def test_bench_grid_alphas_not_finite(capsys):
    code = main(["bench", "--grid", "--alphas", "1,inf"])
    assert code == 2
    assert _one_error_line(capsys.readouterr().err) == PROG + "--alphas values must be finite numbers > 0, got '1,inf'"


# ---------------------------------------------------------------- 9: library noise on stderr


def test_percentile_calibration_prints_no_histogram_progress(tmp_path, capsys):
    m = _conv_onnx(tmp_path / "m.onnx", convs=2)
    calib = _images(tmp_path / "calib", 6)
    code = main(["quantize", str(m), "--calib", str(calib), "--mean", "127.5", "--std", "127.5", "--method",
                 "percentile", "--recipe", "plain", "--json"])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert "histogram" not in cap.err and "histogram" not in cap.out
    json.loads(cap.out)  # stdout is only the JSON record


@needs_litert
def test_tflite_classifier_keeps_the_xnnpack_info_line_off_stderr(tmp_path):
    t = tiny_tflite(tmp_path / "t.tflite", res=4, dtype="float32")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    code = "import sys; from mobilenet_edge.build.weights import tflite_runner; tflite_runner(sys.argv[1]); print('ok')"
    r = subprocess.run([sys.executable, "-c", code, str(t)], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    assert "XNNPACK" not in r.stderr


# ---------------------------------------------------------------- 10: --plot needs a plot file name


def test_report_plot_to_txt_is_refused(tmp_path, capsys):
    res = _results_json(tmp_path / "b.json")
    code = main(["report", str(res), "--plot", str(tmp_path / "p.txt")])
    cap = capsys.readouterr()
    assert code == 2 and cap.out == ""
    assert _one_error_line(cap.err) == PROG + "--plot needs a .png (or .pdf/.svg) file name, got p.txt"
    assert not (tmp_path / "p.txt").exists()


@needs_mpl
@pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_report_plot_format_follows_the_suffix(tmp_path, capsys, suffix, magic):
    res = _results_json(tmp_path / "b.json")
    dst = tmp_path / f"p{suffix}"
    assert main(["report", str(res), "--plot", str(dst)]) == 0
    assert dst.read_bytes().startswith(magic)
