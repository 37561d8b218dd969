"""export refuses impossible work before any of it starts (QA findings): a variant too large for the
machine's memory, --float-first beyond MobileNet V1's 27 convs (paper Table 1), a calibration folder too
small to split, and --format tflite without litert-torch. Each exits with one line and writes nothing."""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mobilenet_edge.cli.app import main
from mobilenet_edge.core.errors import UsageError
from mobilenet_edge.core.variants import Variant

pytest.importorskip("torch", reason="export needs torch (export extra)")
from mobilenet_edge.build.export import check_memory  # noqa: E402

pytestmark = pytest.mark.export


def _phys() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_memory_check_refuses_absurd_variants_and_passes_the_paper_grid():
    with pytest.raises(UsageError, match=r"res 1000000000 needs about .* GiB to export; this machine has"):
        check_memory(Variant(1.0, 1_000_000_000))
    # 1.0/224, the paper's largest: 4.2 M params and a 112x112x32 stem output, far below any machine here
    need = check_memory(Variant(1.0, 224))
    assert need < 1 << 30 and need < _phys()
    assert need > 8 * 4 * 4_231_976  # at least 8 fp32 copies of the weights (docs/results.md table: 4,231,976 params)


@pytest.mark.parametrize("args, msg", [
    (["--alpha", "0.25", "--res", "1000000000"], "GiB to export"),
    (["--alpha", "0.25", "--res", "128", "--weights", "random", "--int8", "--float-first", "28"], "--float-first 28 exceeds the model's 27 Conv nodes"),
])
def test_export_refuses_before_any_work(tmp_path, capsys, args, msg):
    t0 = time.perf_counter()
    code = main(["export", *args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and msg in err[0]
    assert not (tmp_path / "out").exists()
    assert time.perf_counter() - t0 < 10  # no export ran (one takes tens of seconds here)


def test_export_int8_with_a_one_image_calib_folder_fails_first(tmp_path, capsys):
    calib = tmp_path / "calib"
    calib.mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(calib / "a.png")
    code = main(["export", "--alpha", "0.25", "--res", "128", "--int8", "--calib", str(calib), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "holds 1 image file; need at least 2" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(importlib.util.find_spec("litert_torch") is not None, reason="litert-torch is installed here")
def test_export_tflite_without_litert_torch_fails_first(tmp_path, capsys):
    code = main(["export", "--alpha", "0.25", "--res", "128", "--format", "tflite", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and "pip install 'mobilenet-edge[tflite-export]' torch==2.13.0" in err
    assert not (tmp_path / "out").exists()
    assert not list(Path(tmp_path).glob("out*"))


def test_int8_tflite_without_calib_fails_first_from_cli_and_api(tmp_path, capsys):
    """The int8 .tflite is calibrated on images (PT2E; qat-ranges has no .tflite form): one rule, checked
    before any work, whether export is called from the CLI or the Python API."""
    import mobilenet_edge as me
    from mobilenet_edge.core.errors import UsageError

    code = main(["export", "--alpha", "0.25", "--res", "128", "--format", "tflite", "--int8", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().endswith("--format tflite --int8 needs --calib DIR (calibration images for the int8 .tflite)")
    with pytest.raises(UsageError, match="needs --calib DIR"):
        me.export(alpha=0.25, res=128, format="tflite", int8=True, out=tmp_path / "api")
    assert not (tmp_path / "out").exists() and not (tmp_path / "api").exists()
