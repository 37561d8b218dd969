import json
import os
import shutil
import subprocess
import sys

import pytest

from mobilenet_edge.cli import main


def run(capsys, *args):
    code = main(list(args))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_summary_json(capsys):
    code, out, _ = run(capsys, "summary", "--alpha", "0.5", "--res", "160", "--json")
    assert code == 0
    d = json.loads(out)
    assert {"variant", "alpha", "res", "num_classes", "params", "macs", "layers"} <= d.keys()
    assert d["variant"] == "mobilenet_v1_0.50_160"
    assert d["params"] == 1_331_592 and d["macs"] == 76_524_800  # issue #2 table
    assert sum(layer["macs"] for layer in d["layers"]) == d["macs"]


def test_summary_table(capsys):
    code, out, _ = run(capsys, "summary", "--alpha", "1.0", "--res", "224")
    assert code == 0
    assert "4,231,976" in out and "568,740,352" in out
    assert "94.86%" in out  # paper Table 2, 1x1 conv share


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--alpha", "0"], "alpha"),
        (["--alpha", "-1"], "alpha"),
        (["--res", "16"], "res"),
        (["--res", "abc"], "'abc'"),
        (["--classes", "0"], "num_classes"),
    ],
)
def test_summary_bad_input(capsys, args, needle):
    code, out, err = run(capsys, "summary", *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0]
    assert args[1] in lines[0] or args[1].lstrip("-") in lines[0]
    assert "Traceback" not in err


def test_console_script_runs():
    exe = shutil.which("mobilenet-edge", path=os.path.dirname(sys.executable)) or shutil.which("mobilenet-edge")
    assert exe, "console script mobilenet-edge not installed"
    p = subprocess.run([exe, "summary", "--alpha", "0.25", "--res", "128", "--json"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["macs"] == 13_570_048
    p = subprocess.run([exe, "summary", "--res", "16"], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.count("\n") == 1


def test_missing_extra_gives_one_line_with_the_install_command(capsys, monkeypatch, tmp_path):
    """Without torch (the Pi install), export names the extra to install instead of a traceback."""
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ModuleNotFoundError
    for mod in [m for m in sys.modules if m in ("mobilenet_edge.build.model", "mobilenet_edge.build.export")]:
        monkeypatch.delitem(sys.modules, mod)
    code, _, err = run(capsys, "export", "--alpha", "0.25", "--res", "64", "--out", str(tmp_path))
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "pip install 'mobilenet-edge[export]' torch==2.13.0" in err


def test_version(capsys):
    from mobilenet_edge import __version__

    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"mobilenet-edge {__version__}"
