"""Regressions found by a fresh-user QA pass over the issues' bad-input lists (#5, #7).

Each test states the behaviour the issue asks for; the inputs are built here (Pillow, tiny files).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mobilenet_edge.cli.app import main
from mobilenet_edge.core.images import Preprocessing
from mobilenet_edge.quantize.calibration import Warnings, make_image_reader
from mobilenet_edge.quantize.fidelity import _batches

RES = 32

torch_needed = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="the bundle fixture is built with torch (export extra)"
)


def _good_images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"img_{i:02d}.jpg"
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8), "RGB").save(p, quality=90)
        paths.append(p)
    return paths


def _truncated_jpeg(path: Path) -> Path:
    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 100, np.uint8)).save(buf, format="JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    return path


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


# ------------------------------------------------------------------ issue #5: "a truncated JPEG among good
# ones: skipped with a warning naming it". The collector of warnings starts empty; the first warning of a
# run must still be printed (it was dropped while no other warning had been recorded).


def test_calibration_skip_is_warned_when_it_is_the_first_warning(tmp_path, capsys):
    good = _good_images(tmp_path / "c", 2)
    broken = _truncated_jpeg(tmp_path / "c" / "broken.jpg")
    warn = Warnings()
    reader = make_image_reader([good[0], broken, good[1]], Preprocessing(res=RES), warn=warn)
    fed = 0
    while reader.get_next() is not None:
        fed += 1
    assert fed == 2 and reader.skipped == [broken]
    assert len(warn) == 1 and "broken.jpg" in warn[0]
    assert "broken.jpg" in capsys.readouterr().err


def test_evaluation_skip_is_warned_when_it_is_the_first_warning(tmp_path, capsys):
    good = _good_images(tmp_path / "e", 3)
    broken = _truncated_jpeg(tmp_path / "e" / "broken.jpg")
    warn = Warnings()
    keys = [k for ks, _ in _batches([good[0], broken, good[1], good[2]], Preprocessing(res=RES), 2, warn, None, "")
            for k in ks]
    assert keys == good
    assert len(warn) == 1 and "broken.jpg" in warn[0]
    assert "broken.jpg" in capsys.readouterr().err


@pytest.fixture(scope="module")
def real_weights_bundle(tmp_path_factory) -> Path:
    """An exported 0.25/32 bundle whose manifest says its weights come from a .tflite (so quantize runs
    the default fidelity recipe on images, with no 'random weights' warning recorded first)."""
    pytest.importorskip("torch")
    from mobilenet_edge.build.export import ExportOptions, export_bundle

    out = tmp_path_factory.mktemp("qa-bundles")
    b = export_bundle(ExportOptions(alpha=0.25, res=RES, num_classes=1001, out=out, padding="tf_same"))["bundle"]
    m = json.loads((b / "manifest.json").read_text())
    m["weights"] = {"source": "tflite", "file": "mobilenet_v1_0.25_128_quant.tflite"}
    (b / "manifest.json").write_text(json.dumps(m))
    return b


@torch_needed
def test_cli_names_truncated_calibration_image(real_weights_bundle, tmp_path, capsys):
    calib, ev = tmp_path / "calib", tmp_path / "eval"
    _good_images(calib, 3)
    _truncated_jpeg(calib / "broken.jpg")
    _good_images(ev, 2)
    code = main(["quantize", str(real_weights_bundle), "--calib", str(calib), "--eval", str(ev), "--force"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert any(line.startswith("warning: skipped") and "broken.jpg" in line for line in err.splitlines()), err


@torch_needed
@pytest.mark.parametrize("recipe", ["fidelity", "plain"])
def test_cli_no_decodable_calibration_image_says_so(real_weights_bundle, tmp_path, capsys, recipe):
    before = _digest(real_weights_bundle)
    calib, ev = tmp_path / "calib", tmp_path / "eval"
    calib.mkdir()
    (calib / "a.jpg").write_text("a text file named .jpg")
    _truncated_jpeg(calib / "b.jpg")
    _good_images(ev, 2)
    code = main(["quantize", str(real_weights_bundle), "--calib", str(calib), "--eval", str(ev), "--force",
                 "--recipe", recipe])
    lines = capsys.readouterr().err.splitlines()
    errors = [line for line in lines if line.startswith("mobilenet-edge: error")]
    assert code == 2 and len(errors) == 1
    assert "no decodable calibration image" in errors[0] and "2 file(s) skipped" in errors[0], errors
    # both bad files are named on their own warning lines
    assert any("a.jpg" in line for line in lines) and any("b.jpg" in line for line in lines)
    assert _digest(real_weights_bundle) == before
    assert not [p for p in real_weights_bundle.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------ issue #7: "a result file of the wrong shape
# for report: clear errors" (usage errors: one line, exit 2), and output paths that are folders.


def _result_file(path: Path) -> Path:
    """A minimal bench result file of the documented shape (issue #7 JSON), written by hand."""
    row = {"model": "m.onnx", "variant": None, "alpha": None, "res": None, "precision": "fp32",
           "runtime": "onnxruntime", "threads": 1, "runs": 10, "init_ms": 30.0, "first_ms": 2.0, "min_ms": 1.0,
           "p50_ms": 1.5, "p90_ms": 1.7, "p99_ms": 1.9, "mean_ms": 1.5, "std_ms": 0.1, "throughput_ips": 666.7,
           "peak_rss_mb": 80.0, "size_mb": 5.0, "params": None, "macs": None, "gmacs_per_s": None, "top1": None}
    path.write_text(json.dumps({"environment": {"cpu": "test cpu", "machine": "x86_64"}, "results": [row]}))
    return path


@pytest.mark.parametrize("entry", [1, None, [1, 2], "text"])
def test_report_rejects_a_result_that_is_not_an_object(tmp_path, capsys, entry):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"environment": {}, "results": [entry]}))
    code = main(["report", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "bad.json" in err[0] and "result 0" in err[0], err


@pytest.mark.parametrize("option", ["--csv", "--plot"])
def test_report_output_that_is_a_folder_is_a_usage_error(tmp_path, capsys, option):
    pytest.importorskip("matplotlib")
    good = _result_file(tmp_path / "r.json")
    assert main(["report", str(good)]) == 0  # the file itself is fine
    capsys.readouterr()
    folder = tmp_path / "outdir"
    folder.mkdir()
    (folder / "keep.txt").write_text("kept")
    code = main(["report", str(good), option, str(folder)])
    cap = capsys.readouterr()
    err = cap.err.strip().splitlines()
    assert code == 2 and len(err) == 1 and option in err[0] and "folder" in err[0], err
    assert cap.out == ""  # refused before any table is printed
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]


# ------------------------------------------------------------------ issue #7: bench reports "params and MACs
# (from the bundle's manifest or the analytic counts)"; a lone .onnx of our export carries alpha/res/classes
# in its metadata (docs/bundle-format.md), so it gets the counts too.


def test_bench_lone_onnx_of_our_export_gets_analytic_counts(tmp_path):
    from _tiny_models import tiny_onnx

    from mobilenet_edge.runtime.bench import targets_for

    ours = {"producer": "mobilenet-edge", "alpha": "0.5", "res": "160", "num_classes": "1000"}
    f = tiny_onnx(tmp_path / "model.onnx", metadata=ours)
    (t,) = targets_for(f)
    # docs/results.md / issue #2 table, alpha 0.5 at 160 with 1000 classes
    assert (t.variant, t.alpha, t.res) == ("mobilenet_v1_0.50_160", 0.5, 160)
    assert t.params == 1_331_592 and t.macs == 76_524_800
    # no metadata (a foreign file): no counts, not an error
    (u,) = targets_for(tiny_onnx(tmp_path / "other.onnx"))
    assert u.macs is None and u.variant is None
    # someone else's file that happens to carry alpha/res keys: not ours, no counts
    other = {k: v for k, v in ours.items() if k != "producer"}
    (w,) = targets_for(tiny_onnx(tmp_path / "theirs.onnx", metadata=other))
    assert w.macs is None and w.variant is None
    # our metadata outside the model family (res < 32): benched without counts, not an error
    (z,) = targets_for(tiny_onnx(tmp_path / "small.onnx", metadata={**ours, "res": "16"}))
    assert z.macs is None and z.variant is None


# ------------------------------------------------------------------ the "next:" commands printed after export and
# weights import are meant to be pasted: with spaces or brackets in the path they must still name it exactly.


@torch_needed
@pytest.mark.export
def test_export_next_commands_paste_back_to_the_bundle_path(tmp_path, capsys):
    import shlex

    out = tmp_path / "my exports [red]"
    code = main(["export", "--alpha", "0.25", "--res", "32", "--out", str(out)])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    bundle = out / "mobilenet_v1_0.25_32"
    assert bundle.is_dir()
    cmds = [shlex.split(line) for line in cap.err.splitlines() if line.startswith("  mobilenet-edge ")]
    assert {c[1] for c in cmds} == {"quantize", "predict", "bench"}
    assert all(c[2] == str(bundle) for c in cmds), cmds
    assert str(bundle / "model.onnx") in cap.out  # the "saved" line names the real path


@pytest.mark.realdata
@pytest.mark.tflite
def test_weights_next_command_pastes_back_to_the_output_path(reference_dir, tmp_path, capsys):
    import shlex

    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    dst = tmp_path / "w [red] dir" / "my weights.safetensors"
    dst.parent.mkdir()
    code = main(["weights", "import", str(reference_dir / "mobilenet_v1_0.25_128_quant.tflite"), "-o", str(dst)])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    (line,) = [ln for ln in cap.out.splitlines() if ln.startswith("next: ")]
    argv = shlex.split(line[len("next: "):])
    assert argv[argv.index("--weights") + 1] == str(dst) and dst.is_file()


# ------------------------------------------------------------------ second QA pass: a folder that is not a bundle is a
# user mistake (exit 2); the --json FILE document lists failures like --json - does; paths keep their [brackets].


def test_bench_folder_that_is_not_a_bundle_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["bench", str(tmp_path / "empty"), "--runs", "1", "--warmup", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not a bundle" in err[0] and "empty" in err[0], err


def test_bench_json_file_lists_the_model_that_failed(tmp_path, capsys):
    from _tiny_models import tiny_onnx

    good = tiny_onnx(tmp_path / "good.onnx")
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"not a protobuf at all")
    out = tmp_path / "r.json"
    code = main(["bench", str(good), str(bad), "--runs", "2", "--warmup", "0", "--json", str(out)])
    capsys.readouterr()
    doc = json.loads(out.read_text())
    assert code == 1  # a failure is listed and the exit code says so
    assert [r["model"] for r in doc["results"]] == ["good.onnx"]
    assert [f["model"] for f in doc["failures"]] == ["corrupt.onnx"] and doc["failures"][0]["error"]


def test_paths_with_brackets_are_printed_as_they_are(tmp_path, capsys):
    from _tiny_models import tiny_bundle

    bundle = tiny_bundle(tmp_path / "old [red] runs" / "b")
    code = main(["verify", str(bundle)])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert "old [red] runs" in cap.out + cap.err  # rich markup would have eaten "[red]"


def test_bench_progress_label_with_brackets_on_a_terminal(tmp_path, monkeypatch, capsys):
    """The progress bar (drawn only on a terminal) shows a model's name literally: "[/b]" in a name
    used to raise rich's MarkupError and '[red]' vanished."""
    import io as _io

    from _tiny_models import tiny_onnx
    from rich.console import Console

    import mobilenet_edge.cli.bench as cli_bench

    buf = _io.StringIO()
    term = Console(file=buf, force_terminal=True, width=200, markup=False, emoji=False)
    monkeypatch.setattr(cli_bench, "err", term)
    model = tiny_onnx(tmp_path / "exp[red]x[b].onnx")
    code = main(["bench", str(model), "--runs", "2", "--warmup", "0"])
    capsys.readouterr()
    assert code == 0
    assert "exp[red]x[b].onnx" in buf.getvalue()
