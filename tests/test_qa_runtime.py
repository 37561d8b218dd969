"""Regressions from a QA pass over the runtime side (predict / eval / verify, no torch).

One test (or a few) per defect; each fails on the code before the fix. Models are the torch-free tiny
ones of ``_tiny_models`` (logits = W @ mean_rgb + b), images are built here with Pillow, and expected
values come from the rule being tested (a folder named ``10`` is ImageNet index 10), not from our code.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from _tiny_models import tiny_bundle, tiny_onnx
from PIL import Image

from mobilenet_edge.cli import main
from mobilenet_edge.core import bundle
from mobilenet_edge.core.images import Preprocessing
from mobilenet_edge.core.labels import ground_truth
from mobilenet_edge.quantize.calibration import Warnings, make_image_reader

RANDOM_LINE = "warning: random weights (manifest): predictions and accuracy are meaningless"


def run(capsys, *args):
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def strict_json(text: str):
    """json.loads that refuses NaN / Infinity (Python's default accepts them; JSON does not)."""

    def bad(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=bad)


def _png(path: Path, colour=(200, 100, 50)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 20), colour).save(path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(random-weights bundle with fp32 + int8, the same bundle claiming tflite weights, an image)."""
    root = tmp_path_factory.mktemp("qa_rt")
    rand = tiny_bundle(root / "rand", res=16, classes=1001, int8=True)
    real = root / "real"
    shutil.copytree(rand, real)
    m = bundle.read_manifest(real)
    m["weights"] = {"source": "tflite", "file": "mobilenet_v1_0.25_128_quant.tflite"}
    bundle.write_manifest(real, m)
    img = _png(root / "img.png")
    return rand, real, img


def _labelled(folder: Path, rows: list[tuple[str, object]], *, bom: bool = False) -> Path:
    """folder/labels.csv with the given rows, and a png for every row that names a plain file."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, _ in rows:
        if "/" not in name and not name.startswith(".."):
            _png(folder / name)
    text = "file,imagenet_index\n" + "".join(f"{n},{i}\n" for n, i in rows)
    (folder / "labels.csv").write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return folder


# -- 1. --mean / --std must be finite; JSON never holds NaN ------------------------------------------------


@pytest.mark.parametrize(("opt", "value", "msg"), [
    ("--std", "nan", "--std must be finite and non-zero"),
    ("--std", "inf", "--std must be finite and non-zero"),
    ("--std", "1,nan,1", "--std must be finite and non-zero"),
    ("--mean", "inf", "--mean must be finite"),
    ("--mean", "nan", "--mean must be finite"),
])
@pytest.mark.parametrize("cmd", ["predict", "eval"])
def test_non_finite_mean_std_is_a_usage_error(capsys, tiny, tmp_path, opt, value, msg, cmd):
    _, real, img = tiny
    target = img if cmd == "predict" else _labelled(tmp_path / "d", [("a.png", 0)])
    code, out, err = run(capsys, cmd, real, target, opt, value, "--json")
    assert code == 2 and out == ""
    assert lines(err) == [ln for ln in lines(err) if msg in ln] and len(lines(err)) == 1


def test_preprocessing_refuses_non_finite_values():
    with pytest.raises(ValueError, match="std must be finite and non-zero"):
        Preprocessing(std=(1.0, math.nan, 1.0))
    with pytest.raises(ValueError, match="mean must be finite"):
        Preprocessing(mean=(math.inf, 0.0, 0.0))


def test_predict_json_stays_json_when_the_model_gives_nan(capsys, tmp_path):
    """A model whose weights are NaN: the image is an error (exit 1), stdout is strict JSON."""
    import onnx
    from onnx import numpy_helper

    path = tiny_onnx(tmp_path / "nan.onnx", res=8, classes=4)
    m = onnx.load(str(path))
    for init in m.graph.initializer:
        if init.name == "W":
            init.CopyFrom(numpy_helper.from_array(np.full((4, 3), np.nan, np.float32), "W"))
    onnx.save(m, str(path))
    code, out, err = run(capsys, "predict", path, _png(tmp_path / "a.png"), "--json", "--top-k", "2")
    assert code == 1
    assert strict_json(out) == []
    assert len(lines(err)) == 1 and "non-finite" in err and "a.png" in err


def test_json_helper_turns_non_finite_into_null():
    from mobilenet_edge.core.jsonio import dumps

    text = dumps({"a": [1.5, math.nan, -math.inf], "b": (math.inf,), "c": "nan"})
    assert strict_json(text) == {"a": [1.5, None, None], "b": [None], "c": "nan"}


# -- 2. labels.csv indices must be classes of the model -----------------------------------------------------


@pytest.mark.parametrize("bad", [1500, 1000, -1])
def test_eval_csv_index_out_of_range(capsys, tiny, tmp_path, bad):
    _, real, _ = tiny  # 1001 outputs = background + ImageNet 0..999
    d = _labelled(tmp_path / "d", [("a.png", 3), ("b.png", bad)])
    code, out, err = run(capsys, "eval", real, d)
    assert code == 2 and out == ""
    assert lines(err) == [f"mobilenet-edge: error: {d / 'labels.csv'} line 3: imagenet_index must be 0..999, got {bad}"]


def test_eval_csv_index_beyond_a_small_models_classes(capsys, tmp_path):
    model = tiny_onnx(tmp_path / "ten.onnx", res=8, classes=10)
    d = _labelled(tmp_path / "d", [("a.png", 9), ("b.png", 10)])
    code, _, err = run(capsys, "eval", model, d)
    assert code == 2 and "line 3: imagenet_index must be 0..9, got 10" in err
    (d / "labels.csv").write_text("file,imagenet_index\na.png,9\nb.png,0\n")
    code, out, _ = run(capsys, "eval", model, d, "--json")
    assert code == 0 and strict_json(out)["n"] == 2


# -- 3. a UTF-8 BOM (Excel) is accepted --------------------------------------------------------------------


def test_eval_labels_csv_with_bom(capsys, tiny, tmp_path):
    _, real, _ = tiny
    d = _labelled(tmp_path / "d", [("a.png", 5), ("b.png", 7)], bom=True)
    code, out, err = run(capsys, "eval", real, d, "--json")
    assert code == 0, err
    res = strict_json(out)
    assert res["n"] == 2 and res["ground_truth"] == str(d / "labels.csv")
    gt, _ = ground_truth(d, None)
    assert {p.name: i for p, i in gt.items()} == {"a.png": 5, "b.png": 7}


# -- 4. labels.csv paths stay inside DIR -------------------------------------------------------------------


@pytest.mark.parametrize("escape", ["../../../etc/passwd", "sub/../../x.png", "/etc/passwd"])
def test_eval_labels_csv_path_escaping_the_folder(capsys, tiny, tmp_path, escape):
    _, real, _ = tiny
    d = _labelled(tmp_path / "d", [("a.png", 1), (escape, 0)])
    _png(tmp_path / "x.png")  # exists: the refusal must not depend on the file being missing
    code, out, err = run(capsys, "eval", real, d)
    assert code == 2 and out == ""
    assert len(lines(err)) == 1
    assert f"{d / 'labels.csv'} line 3:" in err and "inside the folder" in err


# -- 5. folders named by the ImageNet index ----------------------------------------------------------------


def test_integer_folders_are_imagenet_indices(tmp_path):
    for cls in ("0", "10", "999"):
        _png(tmp_path / cls / f"img_{cls}.png")
    gt, how = ground_truth(tmp_path, None)
    # the folder name is the index (sorted position would give 0, 1, 2 for 0, 10, 999)
    assert {p.name: i for p, i in gt.items()} == {"img_0.png": 0, "img_10.png": 10, "img_999.png": 999}
    assert how == "index folders (folder name = ImageNet index)"


def test_eval_reports_index_folder_rule(capsys, tiny, tmp_path):
    _, real, _ = tiny
    _png(tmp_path / "d" / "0" / "a.png")
    _png(tmp_path / "d" / "10" / "b.png")
    code, out, err = run(capsys, "eval", real, tmp_path / "d", "--json")
    assert code == 0, err
    assert strict_json(out)["ground_truth"] == "index folders (folder name = ImageNet index)"
    _png(tmp_path / "big" / "1000" / "a.png")
    code, _, err = run(capsys, "eval", real, tmp_path / "big")
    assert code == 2 and "0..999" in err and len(lines(err)) == 1


def test_synset_and_mixed_folders_keep_their_meaning(tmp_path):
    _png(tmp_path / "s" / "n01530575" / "a.png")  # brambling: index 10 in the sorted synset list
    _png(tmp_path / "s" / "n01440764" / "b.png")  # tench: index 0
    gt, how = ground_truth(tmp_path / "s", None)
    assert {p.name: i for p, i in gt.items()} == {"a.png": 10, "b.png": 0} and "synset" in how
    _png(tmp_path / "m" / "10" / "a.png")
    _png(tmp_path / "m" / "cat" / "b.png")
    gt, how = ground_truth(tmp_path / "m", None)
    assert {p.name: i for p, i in gt.items()} == {"a.png": 0, "b.png": 1} and how == "class folders (sorted position)"


# -- 6. --int8 with a lone file ------------------------------------------------------------------------------

INT8_MSG = "--int8 selects the int8 model of a bundle; give the bundle folder or the int8 file itself"


def test_int8_with_a_lone_fp32_file_is_refused(capsys, tiny, tmp_path):
    _, real, img = tiny
    d = _labelled(tmp_path / "d", [("a.png", 1)])
    for args in (("predict", real / bundle.FILE_FP32, img), ("eval", real / bundle.FILE_FP32, d)):
        code, out, err = run(capsys, *args, "--int8")
        assert code == 2 and out == "" and lines(err) == [f"mobilenet-edge: error: {INT8_MSG}"]
    code, out, err = run(capsys, "eval", real / bundle.FILE_INT8, d, "--int8", "--json")
    assert code == 0, err
    assert strict_json(out)["precision"] == "int8"


# -- 7. random weights are announced ---------------------------------------------------------------------------


def test_random_weights_warned_and_in_json(capsys, tiny, tmp_path):
    rand, real, img = tiny
    d = _labelled(tmp_path / "d", [("a.png", 1)])
    code, out, err = run(capsys, "predict", rand, img, "--json", "--top-k", "1")
    assert code == 0 and lines(err) == [RANDOM_LINE]
    assert strict_json(out)[0]["random_weights"] is True
    code, out, err = run(capsys, "eval", rand, d, "--json")
    assert code == 0 and lines(err) == [RANDOM_LINE]
    res = strict_json(out)
    assert res["random_weights"] is True and res["weights"] == "random"
    code, out, err = run(capsys, "predict", rand, img, "--top-k", "1")  # table output warns too
    assert code == 0 and lines(err) == [RANDOM_LINE]
    # real weights: no warning, field false
    code, out, err = run(capsys, "predict", real, img, "--json", "--top-k", "1")
    assert code == 0 and err == "" and strict_json(out)[0]["random_weights"] is False
    code, out, err = run(capsys, "eval", real, d, "--json")
    assert code == 0 and err == "" and strict_json(out)["random_weights"] is False
    # bench --eval scores top-1 too: the random bundle's model is named with the warning, the real one not
    code, out, err = run(capsys, "bench", rand, real, "--runs", "1", "--warmup", "0", "--eval", d, "--json", "-")
    warned = [ln for ln in lines(err) if "random weights" in ln]
    assert code == 0 and len(warned) == 1 and warned[0].startswith("warning: ") and "meaningless" in warned[0]


# -- 8. verify --json on a missing / corrupt manifest -------------------------------------------------------


@pytest.mark.parametrize("manifest", [None, "{not json", "[]"])
def test_verify_json_when_the_manifest_is_unusable(capsys, tmp_path, manifest):
    d = tmp_path / "b"
    d.mkdir()
    if manifest is not None:
        (d / "manifest.json").write_text(manifest)
    code, out, err = run(capsys, "verify", d, "--json")
    assert code == (2 if manifest is None else 1)  # no manifest: not a bundle, a usage error (issue #20 item 7)
    rep = strict_json(out)
    assert rep["ok"] is False and "manifest.json" in rep["error"] and rep["problems"] == [rep["error"]]
    assert rep["files"] == [] and len(lines(err)) == 1


# -- 9. a folder given for a file and the other way round ------------------------------------------------------


def test_swapped_file_and_folder_messages(capsys, tiny, tmp_path):
    _, real, img = tiny
    code, _, err = run(capsys, "predict", real, img, "--labels", tmp_path)
    assert code == 2 and lines(err) == [f"mobilenet-edge: error: {tmp_path} is a folder, expected a labels file (one label per line)"]
    code, _, err = run(capsys, "eval", real, img)
    assert code == 2 and lines(err) == [f"mobilenet-edge: error: {img} is a file, expected a folder of images"]
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "eval", real, empty)
    assert code == 2 and lines(err) == [f"mobilenet-edge: error: no images in {empty}"]
    d = _labelled(tmp_path / "d", [("a.png", 1)])
    code, _, err = run(capsys, "eval", real, d, "--labels", tmp_path)
    assert code == 2 and "is a folder, expected a labels file" in err


# -- 10. one wording for skipped images; plural grammar ---------------------------------------------------------


def test_skipped_wording_is_the_same_in_eval_and_quantize(capsys, tiny, tmp_path):
    _, real, _ = tiny
    d = tmp_path / "n01440764"
    _png(d / "a.png")
    bad = d / "b.jpg"
    bad.write_text("not an image")
    code, _, err = run(capsys, "eval", real, tmp_path, "--json")
    assert code == 0
    assert lines(err) == [f"warning: skipped {bad}: cannot decode: cannot identify image file"]
    warn = Warnings()
    reader = make_image_reader([d / "a.png", bad], Preprocessing(res=16), warn=warn)
    while reader.get_next() is not None:
        pass
    assert lines(capsys.readouterr().err) == lines(err)


def test_thin_calibration_warning_grammar(capsys, tmp_path):
    model = tiny_onnx(tmp_path / "t.onnx", res=8, classes=4)
    _png(tmp_path / "c" / "a.png")
    for i in range(3):
        _png(tmp_path / "e" / f"{i}.png", (i * 60, 10, 10))
    code, _, err = run(capsys, "quantize", model, "--calib", tmp_path / "c", "--eval", tmp_path / "e",
                       "--mean", "127.5", "--std", "127.5")
    assert code == 0, err
    assert "warning: only 1 calibration image (< 32)" in err and "1 calibration images" not in err


# -- quantize's evaluation labels: a folder's own bad labels.csv is an error, not "no labels" ---------------


def test_quantize_eval_folder_with_a_bad_labels_csv_is_refused(tmp_path):
    from mobilenet_edge.core.errors import UsageError
    from mobilenet_edge.core.images import expand_paths
    from mobilenet_edge.quantize.calibration import resolve_labels

    d = _labelled(tmp_path / "d", [("a.png", 3), ("b.png", 1500)])
    with pytest.raises(UsageError, match="line 3: imagenet_index must be 0..999, got 1500"):
        resolve_labels(expand_paths([d]), d)
    (d / "labels.csv").unlink()  # no labels at all: quantize reports agreement and SQNR only
    assert resolve_labels(expand_paths([d]), d) == ({}, "none")
