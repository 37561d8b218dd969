"""Nothing replaces what exists without --force (issue #20 items 3 and 6): two exports into the same
--out started together, and every command that writes a results file."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# -- item 6: two runs writing the same bundle folder at once ---------------------------------------------

_STAGE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from mobilenet_edge.core.bundle import staged_dir
    from mobilenet_edge.core.errors import UsageError
    dst, tag, barrier, force = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4] == "1"
    try:
        with staged_dir(dst, force=force) as stage:
            (stage / "who").write_text(tag)
            (barrier / tag).touch()  # both runs are past the start check before either renames
            deadline = time.monotonic() + 60
            while len(list(barrier.iterdir())) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
    except UsageError as e:
        print(e, file=sys.stderr)
        sys.exit(2)
    print("saved", tag)
    """
)


def _run_pair(tmp_path: Path, *, force: bool) -> tuple[Path, list[subprocess.CompletedProcess]]:
    dst, barrier = tmp_path / "out" / "bundle", tmp_path / "barrier"
    barrier.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", _STAGE, str(dst), tag, str(barrier), "1" if force else "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for tag in ("a", "b")]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return dst, done


def test_two_staged_dirs_into_one_target_the_second_fails_as_exists(tmp_path):
    """Both pass the "exists" check at the start (the barrier holds them inside); the first rename wins,
    the second must refuse rather than replace the first's folder."""
    dst, (a, b) = _run_pair(tmp_path, force=False)
    codes = sorted([a.returncode, b.returncode])
    assert codes == [0, 2], (a, b)
    winner, loser = (a, b) if a.returncode == 0 else (b, a)
    assert "exists" in loser.stderr and "--force" in loser.stderr and "saved" not in loser.stdout
    assert (dst / "who").read_text() == winner.stdout.split()[-1]
    assert [p.name for p in dst.parent.iterdir()] == ["bundle"]  # no staging folder left behind


def test_two_forced_staged_dirs_both_succeed_and_one_complete_folder_remains(tmp_path):
    dst, (a, b) = _run_pair(tmp_path, force=True)
    assert a.returncode == 0 and b.returncode == 0, (a, b)
    assert (dst / "who").read_text() in ("a", "b")
    assert [p.name for p in dst.parent.iterdir()] == ["bundle"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.export
def test_two_exports_started_together_one_fails_as_exists(tmp_path):
    """The issue's case with the real command: two `export` runs into the same --out, no --force."""
    pytest.importorskip("torch")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "mobilenet_edge.cli", "export", "--alpha", "0.25", "--res", "32", "--weights", "random",
           "--out", str(tmp_path), "--json"]
    procs = [subprocess.Popen(cmd + ["--seed", str(seed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for seed in (1, 2)]
    results = [(p.wait(timeout=600), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    (_, out, _), (_, _, loser_err) = sorted(results, key=lambda r: r[0])
    assert "exists" in loser_err and "--force" in loser_err, loser_err
    # the bundle on disk is the one whose run said it was saved
    bundle = tmp_path / "mobilenet_v1_0.25_32"
    assert json.loads(out)["files"]["model.onnx"]["sha256"] == _sha256(bundle / "model.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mobilenet_v1_0.25_32"]



# -- item 3: results files are never replaced without --force --------------------------------------------


def _run(capsys, *args):
    from mobilenet_edge.cli import main

    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def tiny_bundle_dir(tmp_path_factory):
    from _tiny_models import tiny_bundle

    return tiny_bundle(tmp_path_factory.mktemp("overwrite") / "tiny", res=16, classes=10)


@pytest.mark.parametrize("option", ["--json", "--csv"])
def test_bench_refuses_an_existing_results_file_without_force(capsys, tmp_path, tiny_bundle_dir, option):
    dst = tmp_path / ("old.json" if option == "--json" else "old.csv")
    dst.write_text("results of last week\n")
    args = ["bench", tiny_bundle_dir, "--runtimes", "ort", "--runs", "2", "--warmup", "0", option, dst]
    code, out, err = _run(capsys, *args)
    assert code == 2  # a usage error: the command line names a file that exists (as export and quantize do)
    assert _one_line(err).endswith(f"{option} {dst} exists; use --force to replace it")
    assert dst.read_text() == "results of last week\n" and out == ""
    code, _, err = _run(capsys, *args, "--force")
    assert code == 0, err
    assert dst.read_text() != "results of last week\n"


def test_report_refuses_existing_plot_and_csv_without_force(capsys, tmp_path):
    doc = {"environment": {"cpu_model": "Xeon", "arch": "x86_64"},
           "results": [{"model": "m", "variant": "mobilenet_v1_0.50_160", "alpha": 0.5, "res": 160, "precision": "fp32",
                        "runtime": "onnxruntime", "threads": 1, "p50_ms": 4.0, "macs": 76_524_800}]}
    src = tmp_path / "x86.json"
    src.write_text(json.dumps(doc))
    csv = tmp_path / "merged.csv"
    csv.write_text("keep me\n")
    code, _, err = _run(capsys, "report", src, "--csv", csv)
    assert code == 2 and _one_line(err).endswith(f"--csv {csv} exists; use --force to replace it")
    assert csv.read_text() == "keep me\n"
    plot = tmp_path / "latency.png"
    plot.write_bytes(b"old plot")
    code, _, err = _run(capsys, "report", src, "--plot", plot)
    assert code == 2 and _one_line(err).endswith(f"--plot {plot} exists; use --force to replace it")
    assert plot.read_bytes() == b"old plot"
    code, _, err = _run(capsys, "report", src, "--csv", csv, "--force")
    assert code == 0, err
    assert csv.read_text().splitlines()[0].startswith("model,")


def test_bench_grid_refuses_an_out_folder_holding_results(capsys, tmp_path):
    """The README's `bench --grid ... --out benchmarks/results` rewrote the committed results: an --out that
    holds grid results is refused before any work (nothing imported, exported or written)."""
    (tmp_path / "grid.json").write_text('{"results": []}\n')
    (tmp_path / "latency_vs_macs.png").write_bytes(b"committed plot")
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = _run(capsys, "bench", "--grid", "--alphas", "0.25", "--res", "32", "--runs", "1", "--out", tmp_path)
    assert code == 2
    line = _one_line(err)
    assert f"--out {tmp_path} holds results of an earlier grid (grid.json, latency_vs_macs.png)" in line
    assert "--force" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "latency_vs_macs.png").read_bytes() == b"committed plot"


def test_bench_grid_default_out_is_refused_in_this_repository(capsys, monkeypatch):
    """Run from the repository root as the README shows it (default --out benchmarks/results, committed)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "benchmarks" / "results" / "grid.json").is_file():
        pytest.skip("no committed benchmarks/results/grid.json in this checkout")
    monkeypatch.chdir(root)
    stamp = (root / "benchmarks" / "results" / "grid.json").stat().st_mtime_ns
    code, _, err = _run(capsys, "bench", "--grid", "--alphas", "0.25", "--res", "32", "--runs", "1")
    assert code == 2 and "holds results of an earlier grid" in err
    assert (root / "benchmarks" / "results" / "grid.json").stat().st_mtime_ns == stamp
