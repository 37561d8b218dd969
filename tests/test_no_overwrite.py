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

