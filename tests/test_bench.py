"""bench / report (issue #7): statistics, result files, bad input. Runtime side: no torch needed."""

import json
import math

import numpy as np
import pytest

from mobilenet_edge.bench import COLUMNS, Target, result_row, stats_ms, targets_for
from mobilenet_edge.errors import UsageError
from mobilenet_edge.report import load_results, pareto_front, ratio_rows


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
    rows = load_results([a, b])
    assert {r["device"] for r in rows} == {"Xeon (x86_64)", "Cortex-A76 (aarch64)"}
    speedups = {r["device"]: r["int8_speedup"] for r in ratio_rows(rows)}
    assert speedups == {"Xeon (x86_64)": 2.0, "Cortex-A76 (aarch64)": 3.0}


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
    from mobilenet_edge.bench import _random_input

    x = _random_input(np.random.default_rng(0), [1, 4, 4, 3], np.uint8)
    assert x.dtype == np.uint8 and x.shape == (1, 4, 4, 3)
