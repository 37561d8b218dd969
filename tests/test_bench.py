"""bench / report (issue #7): statistics, result files, bad input. Runtime side: no torch needed."""

import importlib.util
import json
import math

import numpy as np
import pytest

from mobilenet_edge.core.errors import UsageError
from mobilenet_edge.runtime.bench import COLUMNS, Target, result_row, stats_ms, targets_for
from mobilenet_edge.runtime.plots import pareto_front
from mobilenet_edge.runtime.report import load_results, ratio_rows


def test_stats_ms_against_hand_computed_percentiles():
    times_ns = [i * 1_000_000 for i in range(100, 0, -1)]  # 1..100 ms, shuffled order must not matter
    s = stats_ms(times_ns)
    # linear interpolation on sorted 1..100: p at position (n-1)*q -> 1 + 99*q
    assert s["min_ms"] == 1.0
    assert s["p50_ms"] == pytest.approx(50.5)
    assert s["p90_ms"] == pytest.approx(90.1)
    assert s["p99_ms"] == pytest.approx(99.01)
    assert s["mean_ms"] == pytest.approx(50.5)
    assert s["std_ms"] == pytest.approx(math.sqrt(sum((i - 50.5) ** 2 for i in range(1, 101)) / 99))


def test_targets_for_reference_file_knows_variant(reference_dir):
    (t,) = targets_for(reference_dir / "mobilenet_v1_0.5_160_quant.tflite")
    assert (t.precision, t.runtime, t.variant, t.res, t.num_classes) == ("int8", "litert", "mobilenet_v1_0.50_160",
                                                                         160, 1001)
    # paper grid counts with Google's 1001 classes: 1000-class counts + 512 weights + 1 bias (+512 MACs)
    assert t.macs == 76_524_800 + 512 and t.params == 1_331_592 + 513


def test_result_row_has_every_column(tmp_path):
    f = tmp_path / "m.onnx"
    f.write_bytes(b"x" * 2_000_000)
    t = Target(f, "fp32", "onnxruntime", "mobilenet_v1_0.50_160", 0.5, 160, 1000, 1_331_592, 76_524_800, "m")
    m = {"init_ms": 5.0, "first_ms": 3.0, **stats_ms([2_000_000] * 10), "peak_rss_mb": 50.0}
    row = result_row(t, m, threads=1, runs=10)
    assert set(COLUMNS) <= row.keys()
    assert row["throughput_ips"] == pytest.approx(500.0)  # 1000 / 2 ms
    assert row["gmacs_per_s"] == pytest.approx(76_524_800 / 0.002 / 1e9)
    assert row["size_mb"] == 2.0


def _result_file(path, env, rows):
    path.write_text(json.dumps({"environment": env, "results": rows}))
    return path


def _row(**kw):
    base = {"model": "m", "variant": "mobilenet_v1_0.50_160", "alpha": 0.5, "res": 160, "precision": "fp32",
            "runtime": "onnxruntime", "threads": 1, "p50_ms": 4.0, "macs": 76_524_800}
    return {**base, **kw}


def test_report_merges_devices_and_computes_ratios(tmp_path):
    a = _result_file(tmp_path / "x86.json", {"cpu_model": "Xeon", "arch": "x86_64"},
                     [_row(), _row(precision="int8", p50_ms=2.0)])
    b = _result_file(tmp_path / "pi.json", {"cpu_model": "Cortex-A76", "arch": "aarch64"},
                     [_row(p50_ms=12.0), _row(precision="int8", p50_ms=4.0)])
    rows = load_results([a, b, a])  # the same file twice counts once
    assert len(rows) == 4
    assert {r["device"] for r in rows} == {"Xeon (x86_64)", "Cortex-A76 (aarch64)"}
    speedups = {r["device"]: r["int8_speedup"] for r in ratio_rows(rows)}
    assert speedups == {"Xeon (x86_64)": 2.0, "Cortex-A76 (aarch64)": 3.0}


def test_ratios_put_our_int8_tflite_next_to_our_int8_onnx_and_googles_file(tmp_path):
    """bench --grid --tflite rows: our int8 .tflite on LiteRT over our int8 ONNX on ORT, and ours on ORT
    over Google's reference file, each from the p50 of the same run (3 ms / 2 ms = 1.5, 2 ms / 4 ms = 0.5)."""
    rows = load_results([_result_file(tmp_path / "g.json", {"cpu_model": "EPYC", "arch": "x86_64"}, [
        _row(), _row(precision="int8", p50_ms=2.0),
        _row(model="mobilenet_v1_0.50_160/model.int8.tflite", precision="int8", runtime="litert", p50_ms=3.0),
        _row(model="mobilenet_v1_0.5_160_quant.tflite", precision="int8", runtime="litert", p50_ms=4.0),
    ])])
    (r,) = ratio_rows(rows)
    assert r["litert_over_ort"] == pytest.approx(1.5) and r["ours_over_reference"] == pytest.approx(0.5)
    assert r["int8_speedup"] == pytest.approx(2.0)


def test_grid_tflite_needs_calib(tmp_path, capsys):
    from mobilenet_edge.cli.app import main

    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("matplotlib") is None:
        pytest.skip("--grid needs torch and matplotlib")
    code = main(["bench", "--grid", "--tflite", "--alphas", "0.25", "--res", "128", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    if importlib.util.find_spec("litert_torch") is None:  # the missing package is said first (exit 1)
        assert code == 1 and "bench --grid --tflite needs litert-torch" in err
    else:
        assert code == 2 and "--grid --tflite needs --calib DIR" in err
    assert not (tmp_path / "o" / "grid.json").exists()


@pytest.mark.parametrize("content", ['{"results": []}', "[1, 2]", "not json", '{"environment": {}, "results": [{}]}'])
def test_report_rejects_wrong_shape(tmp_path, content):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(UsageError):
        load_results([p])


def test_pareto_front():
    rows = [{"p50_ms": 1, "top1": 0.5}, {"p50_ms": 2, "top1": 0.4}, {"p50_ms": 3, "top1": 0.7}]
    assert [r["p50_ms"] for r in pareto_front(rows)] == [1, 3]


def test_random_input_respects_dtype():
    from mobilenet_edge.runtime.bench import _random_input

    x = _random_input(np.random.default_rng(0), [1, 4, 4, 3], np.uint8)
    assert x.dtype == np.uint8 and x.shape == (1, 4, 4, 3)


# -- the command, on torch-free tiny bundles (tests/_tiny_models.py) ------------------------------------

@pytest.fixture(scope="module")
def tiny_bundle_dir(tmp_path_factory):
    from _tiny_models import tiny_bundle

    return tiny_bundle(tmp_path_factory.mktemp("bench") / "tiny", res=16, classes=1001, int8=True)


def _run(capsys, *args):
    from mobilenet_edge.cli import main

    code = main(list(args))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_bench_cli_writes_json_and_csv(capsys, tmp_path, tiny_bundle_dir):
    j, c = tmp_path / "r.json", tmp_path / "r.csv"
    # --runtimes ort: a bundle is benched on every runtime installed here (issue #21); this test is about the files
    code, out, err = _run(capsys, "bench", str(tiny_bundle_dir), "--threads", "1,2", "--runs", "5", "--warmup", "1",
                          "--json", str(j), "--csv", str(c), "--runtimes", "ort")
    assert code == 0, err
    data = json.loads(j.read_text())
    assert {"cpu_model", "arch", "isa", "emulated", "onnxruntime"} <= data["environment"].keys()
    rows = data["results"]
    assert [(r["precision"], r["threads"]) for r in rows] == [("fp32", 1), ("fp32", 2), ("int8", 1), ("int8", 2)]
    for r in rows:
        assert set(COLUMNS) <= r.keys() and r["runs"] == 5
        assert r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["throughput_ips"] == pytest.approx(1000 / r["mean_ms"])
    assert _run(capsys, "bench", str(tiny_bundle_dir / "model.onnx"), "--threads", "1,1", "--runs", "2",
                "--json", str(j), "--force")[0] == 0  # r.json exists: --force replaces it (issue #20)
    assert len(json.loads(j.read_text())["results"]) == 1  # '1,1' benches once
    header = c.read_text().splitlines()[0].split(",")
    assert header == list(COLUMNS)
    assert len(c.read_text().splitlines()) == 1 + 4


@pytest.mark.parametrize("args, needle", [(["--threads", "0"], "--threads"), (["--runs", "0"], "--runs"),
                                          (["--threads", "a"], "--threads"), (["--warmup", "-1"], "--warmup")])
def test_bench_bad_numbers(capsys, tiny_bundle_dir, args, needle):
    code, _, err = _run(capsys, "bench", str(tiny_bundle_dir), *args)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_bench_failing_model_is_listed_and_others_run(capsys, tmp_path, tiny_bundle_dir):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07garbage")
    j = tmp_path / "r.json"
    code, out, err = _run(capsys, "bench", str(broken), str(tiny_bundle_dir / "model.onnx"), "--runs", "3",
                          "--json", str(j))
    assert code == 1
    assert "broken.onnx" in out and "FAILED" in out
    assert [r["model"] for r in json.loads(j.read_text())["results"]] == ["model.onnx"]


def test_report_cli_merges_and_plots(capsys, tmp_path, tiny_bundle_dir):
    pytest.importorskip("matplotlib")
    j = tmp_path / "r.json"
    assert _run(capsys, "bench", str(tiny_bundle_dir), "--runs", "3", "--json", str(j))[0] == 0
    data = json.loads(j.read_text())
    data["environment"].update(cpu_model="Cortex-A76", arch="aarch64")
    pi = tmp_path / "pi.json"
    pi.write_text(json.dumps(data))
    png = tmp_path / "lat.png"
    code, out, err = _run(capsys, "report", str(j), str(pi), "--plot", str(png))
    assert code == 0, err
    assert "Cortex-A76 (aarch64)" in out and png.read_bytes()[:4] == b"\x89PNG"
    bad = tmp_path / "bad.json"
    bad.write_text('{"rows": []}')
    code, _, err = _run(capsys, "report", str(bad))
    assert code == 2 and "bad.json" in err


def test_worker_peak_rss_is_its_own(tiny_bundle_dir):
    """The parent holds 300 MB; a worker's peak RSS must not include it (Linux keeps ru_maxrss across
    execve, which would report the parent's peak)."""
    from mobilenet_edge.runtime.bench import measure_in_subprocess, targets_for

    ballast = np.ones(300_000_000 // 8)
    ballast += 1
    t = targets_for(tiny_bundle_dir / "model.onnx")[0]
    m = measure_in_subprocess(t, threads=1, runs=2, warmup=0)
    assert m["peak_rss_mb"] < 250, m["peak_rss_mb"]
    assert ballast[0] == 2.0


def test_bench_json_to_stdout_is_pure_json(capsys, tiny_bundle_dir):
    code, out, err = _run(capsys, "bench", str(tiny_bundle_dir), "--runs", "2", "--warmup", "0", "--json", "-",
                          "--runtimes", "ort")
    assert code == 0
    data = json.loads(out)  # nothing else on stdout; the table went to stderr
    assert len(data["results"]) == 2 and "p50" in err


def test_bench_models_and_grid_together_is_a_usage_error(capsys, tiny_bundle_dir, tmp_path):
    code, _, err = _run(capsys, "bench", str(tiny_bundle_dir), "--grid")
    assert code == 2 and "--grid" in err
    code, _, err = _run(capsys, "bench", "--grid", "--weights-dir", str(tmp_path / "nope"))
    assert code == 2 and "no such folder" in err
    code, _, err = _run(capsys, "bench", str(tiny_bundle_dir), "--csv", str(tmp_path))
    assert code == 2 and "is a folder" in err


def test_grid_only_options_without_grid_are_named_as_ignored(tmp_path, capsys):
    from _tiny_models import tiny_onnx

    from mobilenet_edge.cli.app import main

    m = tiny_onnx(tmp_path / "m.onnx", res=8, classes=10)
    code = main(["bench", str(m), "--runs", "1", "--warmup", "0", "--calib", str(tmp_path), "--tflite"])
    err = capsys.readouterr().err
    assert code == 0
    assert "warning: --calib, --tflite apply to --grid only; ignored" in err
