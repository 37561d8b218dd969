"""Issue #20 items 4, 7, 8, 9, 13: 80-column tables, messages, help, predict says what ran, plots.

Each test failed on main before the fix (the before/after is in the test's docstring). Commands run as a
user runs them: the console script in a subprocess where the terminal width matters (COLUMNS=80), typer's
entry point in-process elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, has_module, small_disk

from mobilenet_edge.cli import main

RESULTS = ROOT / "benchmarks" / "results" / "grid.json"
REFERENCE = ROOT / "mobilenet_edge" / "build" / "weights" / "data" / "mobilenet_v1_0.5_160_quant.tflite"


def cli(*args, columns: int = 80, timeout: float = 300) -> subprocess.CompletedProcess:
    """The console script as a user runs it, in a terminal of ``columns`` columns."""
    env = {**os.environ, "COLUMNS": str(columns), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "mobilenet_edge.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=timeout)


def run(capsys, *args):
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def err_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from _tiny_models import tiny_bundle

    return tiny_bundle(tmp_path_factory.mktemp("b") / "mobilenet_v1_0.50_160", int8=True)


def table_rows(text: str, header: str) -> str:
    """The lines of a printed table from its header line (starting with ``header``) to its last row (titles and
    captions are text that a terminal wraps at word boundaries; the rows are what must fit)."""
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith(header)), None)
    assert start is not None, f"no header line starting {header!r} (a cut or wrapped header?):\n{text}"
    end = next((i for i in range(start, len(lines)) if not lines[i].strip() or lines[i].startswith(("latency in ms",
                "--wide", "fastest"))), len(lines))
    return "\n".join(lines[start:end])


def assert_fits_80(text: str, names: list[str]) -> None:
    """No line over 80 characters, no cell cut ("…"), every name on one line of its own table row."""
    long = [ln for ln in text.splitlines() if len(ln) > 80]
    assert not long, long
    assert "…" not in text, text
    for name in names:
        assert any(name in ln for ln in text.splitlines()), (name, text)


# ---------------------------------------------------------------- item 4: tables at 80 columns


def test_bench_table_fits_80_columns(tiny):
    """Before: p50 was cut to "1.…" and "mobilenet_v1_0.50_160/model.onnx" wrapped 3 letters a line."""
    r = cli("bench", tiny, REFERENCE, "--runs", "3", "--warmup", "0", "--runtimes", "ort,litert")
    assert r.returncode == 0, r.stderr
    table = table_rows(r.stdout, "model")
    assert_fits_80(table, ["tiny", REFERENCE.name])  # "tiny": the bundle's name in its manifest
    assert "p50" in table and "p99" in table
    wide = cli("bench", tiny, "--runs", "3", "--warmup", "0", "--runtimes", "ort", "--wide", columns=200)
    assert wide.returncode == 0, wide.stderr
    assert "tiny/model.int8.onnx" in wide.stdout and "init ms" in wide.stdout and "RSS MB" in wide.stdout


def test_report_table_fits_80_columns():
    """Before: every row of the committed grid wrapped into 4+ lines (device and model folded)."""
    rows = json.loads(RESULTS.read_text())["results"]
    r = cli("report", RESULTS)
    assert r.returncode == 0, r.stderr
    table = table_rows(r.stdout, "model")
    assert_fits_80(table, sorted({row["model"].split("/")[0] for row in rows}))
    assert len(table.splitlines()) == 2 + len(rows)  # header, rule, one line a row


@pytest.mark.parametrize("args", [("summary", "--alpha", "1", "--res", "224"), ("weights", "list")])
def test_other_tables_fit_80_columns(args):
    """Before: summary's MACs read "2,764,8…" and wrapped "Conv dw / s1"; weights list cut every name."""
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    names = ["51,380,224", "1,050,624"] if args[0] == "summary" else ["google-quant/0.75/192", "keras/0.25/128"]
    assert_fits_80(table_rows(r.stdout, "Type" if args[0] == "summary" else "name"), names)


def test_verify_table_fits_80_columns(tiny):
    """Before: "onnxruntime 1.32.0" wrapped onto a second line of each row."""
    r = cli("verify", tiny)
    assert r.returncode == 0, r.stderr
    import onnxruntime

    assert_fits_80(table_rows(r.stdout, "File"), [f"onnxruntime {onnxruntime.__version__}", "model.int8.onnx"])


def test_quantize_fidelity_table_fits_80_columns():
    """Before: the worst image's name sat in the int8 column (a 94-column table): at 80 columns the SQNR and
    near-ties rows wrapped onto two lines."""
    from rich.console import Console

    from mobilenet_edge.quantize.fidelity import fidelity_table

    rep = {"images": 50, "agreement_top1": 1.0, "sqnr_db": {"mean": 32.6, "worst": 28.6,
           "worst_image": "n02110185_Siberian_husky.JPEG"}, "near_ties": {"margin_logit": 0.1, "images": 1,
           "disagreements": 0}, "disagreements": [], "labelled": 50, "fp32": {"top1": 0.76, "top5": 0.9},
           "int8": {"top1": 0.76, "top5": 0.9}}
    console = Console(width=80, record=True)
    console.print(fidelity_table(rep, "model.int8.onnx: int8 vs fp32"))
    text = console.export_text()
    assert_fits_80(text, ["n02110185_Siberian_husky.JPEG"])
    rows = [ln for ln in text.splitlines() if ln.startswith(("images evaluated", "top-1 ", "logits SQNR", "fp32 near",
                                                             "top-5 "))]
    assert len(rows) == 7, text  # one line a row: no metric wrapped onto a second line
    assert rows[4].startswith("fp32 near-ties") and rows[4].endswith("no disagreement"), text


# ---------------------------------------------------------------- item 9: predict says what ran


def test_predict_names_model_file_precision_runtime_and_preprocessing(tiny, tmp_path, capsys):
    """Before: neither the table nor --json said which file ran, on what, fed how (eval did)."""
    from PIL import Image

    img = tmp_path / "red.png"
    Image.new("RGB", (40, 40), (200, 10, 10)).save(img)
    manifest = json.loads((tiny / "manifest.json").read_text())
    code, out, err = run(capsys, "predict", tiny, img, "--int8", "--json", "--top-k", "1")
    assert code == 0, err
    (res,) = json.loads(out)
    assert Path(res["file"]) == tiny / "model.int8.onnx"
    assert (res["precision"], res["runtime"]) == ("int8", "onnxruntime")
    assert res["preprocessing"] == manifest["preprocessing"]
    code, out, err = run(capsys, "predict", tiny, img, "--top-k", "1")
    assert code == 0, err
    head = out.splitlines()[:2]
    assert str(tiny / "model.onnx") in head[0] and "fp32" in head[0] and "onnxruntime" in head[0], head
    assert head[1].startswith("preprocessing: crop") and "mean" in head[1], head


# ---------------------------------------------------------------- item 8: help


@pytest.mark.parametrize("command, usage", [("predict", "MODEL IMAGES..."), ("eval", "MODEL DIR"),
                                            ("quantize", "TARGET"), ("bench", "[MODELS...]"),
                                            ("weights import", "SRC")])
def test_help_usage_and_flags(command, usage, capsys):
    """Before: "Usage: ... {model} {DIR}" and every flag typed "<bool>"."""
    code = main([*command.split(), "--help"])
    out = capsys.readouterr().out
    assert code == 0
    line = next(ln for ln in out.splitlines() if "Usage:" in ln)
    assert line.split("[OPTIONS]")[1].strip() == usage, line
    assert "<bool>" not in out and "{" not in line


def test_resize_help_names_every_mode(capsys):
    """Before: --resize listed bilinear, bicubic, nearest, lanczos: not tf_bilinear, the default for Google's
    weights."""
    from mobilenet_edge.core.images import RESIZE_MODES

    main(["predict", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert all(mode in out for mode in RESIZE_MODES), out


@pytest.mark.export
@pytest.mark.skipif(not has_module("onnxsim"), reason="needs onnxsim (export extra)")
def test_export_keeps_onnxsims_progress_off_stderr(tmp_path):
    """Before: onnxsim's "Checking 0/1..." appeared among export's log lines."""
    r = cli("export", "--alpha", "0.25", "--res", "64", "--weights", "random", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Checking" not in r.stderr and "Checking" not in r.stdout


# ---------------------------------------------------------------- item 7: messages


def _newer_runtime_tflite(dst: Path) -> Path:
    """Google's 0.5/160 file with every op version set to 99: valid, but no runtime has those kernels."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    buf = REFERENCE.read_bytes()
    m = s.ModelT.InitFromObj(s.Model.GetRootAsModel(buf, 0))
    for code in m.operatorCodes:
        code.version = 99
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    dst.write_bytes(bytes(b.Output()))
    return dst


@pytest.mark.tflite
@pytest.mark.skipif(not has_module("ai_edge_litert"), reason="needs ai-edge-litert")
def test_tflite_needing_a_newer_runtime_is_not_called_corrupt(tmp_path, capsys):
    """Before: export and `weights import` said "truncated or corrupt"; predict said "cannot load"."""
    f = _newer_runtime_tflite(tmp_path / "newer.tflite")
    msgs = []
    for args in (["predict", f, REFERENCE], ["weights", "import", f, "-o", tmp_path / "w.safetensors"]):
        code, _, err = run(capsys, *args)
        assert code == 1 and len(err_lines(err)) == 1, err
        msgs.append(err_lines(err)[0])
    for m in msgs:
        assert "needs a newer TFLite runtime" in m and "corrupt" not in m, m
    assert msgs[0] == msgs[1]  # one wording


def test_calib_folder_mistakes_worded_alike(tiny, tmp_path, capsys):
    """Before: quantize said "--calib /x is not a folder" for a missing path, export "no such file or
    folder: /x"; a file: "is not a folder" vs "holds 1 image file; need at least 2"."""
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.new("RGB", (8, 8)).save(photo)
    missing = tmp_path / "nonexistent"
    cases = {missing: f"--calib {missing}: no such folder", photo: f"--calib {photo} is a file, expected a folder of images"}
    for path, want in cases.items():
        code, _, err = run(capsys, "quantize", tiny, "--calib", path, "--force")
        assert code == 2 and err_lines(err) == [f"mobilenet-edge: error: {want}"], err
        if has_module("torch"):
            code, _, err = run(capsys, "export", "--alpha", "0.25", "--res", "64", "--int8", "--calib", path,
                               "--out", tmp_path / "out")
            assert code == 2 and err_lines(err) == [f"mobilenet-edge: error: {want}"], err


def test_threads_messages_name_the_bad_value(tiny, capsys):
    """Before: bench --threads 1,0 said "got '1,0'"; predict --threads 0 printed "Input should be greater
    than or equal to 1" (the validation library's words)."""
    code, _, err = run(capsys, "bench", tiny, "--threads", "1,0")
    assert code == 2 and "got 0 in '1,0'" in err, err
    code, _, err = run(capsys, "predict", tiny, REFERENCE, "--threads", "0")
    assert code == 2 and err_lines(err) == ["mobilenet-edge: error: --threads must be >= 1 (got '0')"], err


def test_manifest_section_of_the_wrong_type_is_one_line(tiny, tmp_path, capsys):
    """Before: "preprocessing": 5 leaked "AttributeError: 'int' object has no attribute 'items'"."""
    b = shutil.copytree(tiny, tmp_path / "b")
    m = json.loads((b / "manifest.json").read_text())
    m["preprocessing"] = 5
    (b / "manifest.json").write_text(json.dumps(m))
    code, _, err = run(capsys, "predict", b, REFERENCE)
    assert code == 1 and len(err_lines(err)) == 1 and "AttributeError" not in err, err
    assert "'preprocessing' must be a JSON object, got a number" in err


def test_full_disk_names_the_file(tmp_path, capsys):
    """Before: "OSError: [Errno 28] No space left on device" without the file's name."""
    with small_disk(tmp_path / "small", "4k") as small:
        code, _, err = run(capsys, "report", RESULTS, "--csv", small / "merged.csv")  # grid.csv is ~10 KB
        assert code == 1 and err_lines(err)[-1] == (f"mobilenet-edge: error: cannot write {small / 'merged.csv'}: "
                                                    "No space left on device (nothing was replaced)"), err
        assert list(small.iterdir()) == []


@pytest.mark.parametrize("command", ["bench", "verify", "predict", "eval", "quantize"])
def test_folder_that_is_not_a_bundle_exits_2_everywhere(command, tmp_path, capsys):
    """Before: 2 in bench, 1 in verify/predict/eval/quantize."""
    folder = tmp_path / "empty"
    folder.mkdir()
    images = tmp_path / "imgs"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(images / "a.png")
    extra = {"predict": [images / "a.png"], "eval": [images], "quantize": ["--calib", images]}.get(command, [])
    code, _, err = run(capsys, command, folder, *extra)
    assert code == 2 and err_lines(err) == [f"mobilenet-edge: error: {folder} is not a bundle: no manifest.json"], err


def test_ctrl_c_says_interrupted(tiny):
    """Before: exit 130 and an empty stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-m", "mobilenet_edge.cli", "bench", str(tiny), "--runs", "1000000",
                          "--runtimes", "ort"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler))
    time.sleep(6)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130
    assert err_lines(err)[-1] == "mobilenet-edge: error: interrupted", err


# ---------------------------------------------------------------- item 13: plots


@pytest.fixture(scope="module")
def grid_rows():
    pytest.importorskip("matplotlib")
    from mobilenet_edge.runtime.report import load_results

    return load_results([RESULTS])


def _label_boxes(fig):
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    return [(t.get_text(), t.get_window_extent(r)) for t in fig.axes[0].texts]


@pytest.mark.parametrize("builder", ["latency_vs_macs_figure", "top1_vs_latency_figure"])
def test_plot_labels_do_not_overlap(grid_rows, builder):
    """Before: "160" and "128"/"192" labels drew over each other (e.g. at 0.5/160, 0.25/160-192)."""
    import matplotlib.pyplot as plt

    from mobilenet_edge.runtime import plots

    fig = getattr(plots, builder)(grid_rows)
    boxes = _label_boxes(fig)
    assert len(boxes) >= 20
    clashes = [(a, b) for i, (a, ba) in enumerate(boxes) for b, bb in boxes[i + 1:] if ba.overlaps(bb)]
    plt.close(fig)
    assert not clashes, clashes


def test_latency_plot_ticks_are_plain_numbers_and_title_names_runtimes(grid_rows):
    """Before: ticks read "2x10^1" (mathtext) and the title said "ONNX Runtime" above LiteRT points."""
    import matplotlib.pyplot as plt

    from mobilenet_edge.runtime import plots

    fig = plots.latency_vs_macs_figure(grid_rows)
    fig.canvas.draw()
    ax = fig.axes[0]
    labels = [t.get_text() for axis in (ax.xaxis, ax.yaxis) for t in axis.get_ticklabels(minor=False)
              + axis.get_ticklabels(minor=True) if t.get_text()]
    for text in labels:
        float(text)  # "20", "0.5"; not "$\\mathdefault{2\\times10^{1}}$"
    assert "20" in labels and "100" in labels
    assert ax.get_title().endswith("(ONNX Runtime, LiteRT)")  # the grid has Google's .tflite on LiteRT
    plt.close(fig)
    ort_only = [r for r in grid_rows if r["runtime"] == "onnxruntime"]
    fig = plots.latency_vs_macs_figure(ort_only)
    assert fig.axes[0].get_title().endswith("(ONNX Runtime)")
    plt.close(fig)
