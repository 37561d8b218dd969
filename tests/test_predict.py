"""CLI predict / eval / verify (issue #6, verify from issue #8), bad input, and the torch-free check.

Expected scores come from numpy (tiny models whose function is known), the data README (macaw,
Egyptian cat) or Google's reference files.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from _tiny_models import quantize_qdq, tiny_bundle, tiny_onnx, tiny_tflite, tiny_weights
from conftest import ROOT, has_module
from PIL import Image

from mobilenet_edge.cli import main
from mobilenet_edge.core import bundle
from mobilenet_edge.core.labels import ground_truth, imagenet_labels, imagenet_synsets
from mobilenet_edge.runtime.scores import softmax

HAS_TFLITE = has_module("ai_edge_litert") or has_module("tflite_runtime")
needs_tflite = pytest.mark.skipif(not HAS_TFLITE, reason="no TFLite runtime installed")
REF = "mobilenet_v1_0.5_160_quant.tflite"


def run(capsys, *args):
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def err_lines(err: str) -> list[str]:
    """stderr lines, without the random-weights warning every run on the tiny bundle prints
    (its manifest says weights: random; tests/test_qa_runtime.py checks that warning)."""
    return [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning: random weights")]


COLOURS = [(200, 100, 50), (20, 220, 90), (60, 60, 250), (250, 250, 10), (0, 0, 0), (128, 30, 200)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Torch-free bundle (fp32 + QDQ int8): logits = W @ mean_rgb + b, 1001 classes, res 16."""
    root = tmp_path_factory.mktemp("tiny")
    b = tiny_bundle(root / "tiny", res=16, classes=1001, int8=True)
    imgs = root / "imgs"
    imgs.mkdir()
    for i, c in enumerate(COLOURS):
        Image.new("RGB", (40, 30), c).save(imgs / f"img{i}.png")
    return b, imgs


def expected_probs(colour) -> np.ndarray:
    """The tiny model on a constant-colour image: x = (c - 127.5) / 127.5 everywhere."""
    w, b = tiny_weights(1001)
    x = (np.asarray(colour, np.float64) - 127.5) / 127.5
    return softmax((w.astype(np.float64) @ x + b)[None])[0]


# -- predict -------------------------------------------------------------------------------------------------


def test_predict_json_matches_numpy(capsys, tiny):
    b, imgs = tiny
    code, out, _ = run(capsys, "predict", b, imgs, "--json", "--top-k", "3")
    assert code == 0
    res = json.loads(out)
    assert [Path(r["image"]).name for r in res] == [f"img{i}.png" for i in range(len(COLOURS))]
    labels = imagenet_labels(1001)
    for r, c in zip(res, COLOURS):
        p = expected_probs(c)
        want = np.argsort(-p, kind="stable")[:3]
        assert [e["index"] for e in r["top_k"]] == want.tolist()
        assert [e["label"] for e in r["top_k"]] == [labels[i] for i in want]
        np.testing.assert_allclose([e["score"] for e in r["top_k"]], p[want], rtol=1e-4)
        ran = {"model", "precision", "file", "backend", "backend_version", "threads", "runtime", "preprocessing"}
        assert set(r) == {"image", "random_weights", "top_k", *ran} and set(r["top_k"][0]) == {"index", "label", "score"}
        assert r["random_weights"] is True  # the tiny bundle's manifest says weights: random


def test_predict_int8_and_table(capsys, tiny):
    b, imgs = tiny
    code, out, _ = run(capsys, "predict", b, imgs / "img0.png", "--int8", "--json", "--top-k", "1")
    assert code == 0
    want = int(np.argmax(expected_probs(COLOURS[0])))
    assert json.loads(out)[0]["top_k"][0]["index"] == want
    code, out, _ = run(capsys, "predict", b, imgs / "img0.png", "--top-k", "2")
    assert code == 0 and "Rank" in out and "Probability" in out and imagenet_labels(1001)[want] in out


@pytest.mark.parametrize("k", ["0", "1002", "-3"])
def test_predict_top_k_out_of_range(capsys, tiny, k):
    b, imgs = tiny
    code, out, err = run(capsys, "predict", b, imgs / "img0.png", "--top-k", k)
    assert code == 2 and out == ""
    assert len(err_lines(err)) == 1 and "top-k" in err


def test_predict_bad_inputs(capsys, tiny, tmp_path):
    b, imgs = tiny
    text = tmp_path / "text.jpg"
    text.write_text("hello")
    cut = tmp_path / "cut.jpg"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "ok.jpg")
    cut.write_bytes((tmp_path / "ok.jpg").read_bytes()[:300])
    (tmp_path / "empty").mkdir()
    cases = [
        ([tmp_path / "missing.jpg"], 2, "no such file"),
        ([tmp_path / "empty"], 2, "no image files"),
        ([text], 1, "cannot decode image"),
        ([cut], 1, "cannot decode image"),
    ]
    for paths, want_code, needle in cases:
        code, out, err = run(capsys, "predict", b, *paths, "--json")
        assert code == want_code, (paths, err)
        assert len(err_lines(err)) == 1 and needle in err, err
    for extra, needle in ((["--mean", "1,2"], "--mean"), (["--crop", "1.5"], "crop"), (["--resize", "area"], "resize")):
        code, _, err = run(capsys, "predict", b, imgs / "img0.png", *extra)
        assert code == 2 and needle in err and len(err_lines(err)) == 1


def test_predict_folder_reports_bad_files_and_goes_on(capsys, tiny, tmp_path):
    b, imgs = tiny
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i in (0, 1):
        (mixed / f"img{i}.png").write_bytes((imgs / f"img{i}.png").read_bytes())
    (mixed / "bad.jpg").write_text("not an image")
    Image.new("RGB", (1, 1), (9, 9, 9)).save(mixed / "tiny1x1.png")
    code, out, err = run(capsys, "predict", b, mixed, "--json", "--top-k", "1")
    assert code == 1
    assert [Path(r["image"]).name for r in json.loads(out)] == ["img0.png", "img1.png", "tiny1x1.png"]
    assert len(err_lines(err)) == 1 and "bad.jpg" in err


def test_predict_bad_model_files(capsys, tiny, tmp_path):
    _, imgs = tiny
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage" * 100)
    code, _, err = run(capsys, "predict", bad, imgs / "img0.png")
    assert code == 1 and len(err_lines(err)) == 1 and "cannot load ONNX model" in err
    code, _, err = run(capsys, "predict", tmp_path / "nope", imgs / "img0.png")
    assert code == 2 and "no such model file or bundle" in err


@pytest.mark.skipif(not has_module("ai_edge_litert"), reason="tflite schema from ai-edge-litert needed")
def test_predict_tflite_not_an_image(capsys, tiny, tmp_path):
    _, imgs = tiny
    m = tiny_tflite(tmp_path / "vec.tflite", dtype="float32", image=False)
    code, _, err = run(capsys, "predict", m, imgs / "img0.png")
    assert code == 1 and len(err_lines(err)) == 1 and "not an image" in err


def test_predict_lone_onnx_flags(capsys, tiny, tmp_path):
    """A foreign .onnx without metadata: --mean/--std/--labels decide; check against numpy."""
    _, imgs = tiny
    m = tiny_onnx(tmp_path / "foreign.onnx", res=16, classes=4)
    labels = tmp_path / "labels.txt"
    labels.write_text("zero\none\ntwo\nthree\n")
    code, out, _ = run(capsys, "predict", m, imgs / "img1.png", "--mean", "100", "--std", "50,25,10",
                       "--labels", labels, "--json", "--top-k", "4")
    assert code == 0
    w, b = tiny_weights(4)
    x = (np.array(COLOURS[1], np.float64) - 100) / np.array([50, 25, 10])
    p = softmax((w @ x + b)[None])[0]
    got = json.loads(out)[0]["top_k"]
    assert [e["index"] for e in got] == np.argsort(-p, kind="stable").tolist()
    assert [e["label"] for e in got] == [["zero", "one", "two", "three"][i] for i in np.argsort(-p, kind="stable")]
    np.testing.assert_allclose([e["score"] for e in got], np.sort(p)[::-1], rtol=1e-4)


@needs_tflite
@pytest.mark.tflite
@pytest.mark.realdata
def test_predict_reference_tflite(capsys, reference_dir, images_dir):
    """Data README: plain resize to 160x160 -> parrot = macaw, cat = Egyptian cat (top-1)."""
    code, out, _ = run(capsys, "predict", reference_dir / REF, images_dir / "parrot.jpg", images_dir / "cat.bmp",
                       "--crop", "1.0", "--json", "--top-k", "5")
    assert code == 0
    res = json.loads(out)
    assert [r["top_k"][0]["label"] for r in res] == ["macaw", "Egyptian cat"]
    for r in res:
        scores = [e["score"] for e in r["top_k"]]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0 + 1e-6


# -- eval ------------------------------------------------------------------------------------------------------


def test_ground_truth_sources(tmp_path):
    syn = imagenet_synsets()
    assert len(syn) == 1000 and syn == sorted(syn) and syn[0] == "n01440764" and syn[999] == "n15075141"
    # synset folders
    a = tmp_path / "a"
    for s, f in (("n01440764", "x.jpg"), ("n15075141", "y.png")):
        (a / s).mkdir(parents=True)
        (a / s / f).write_bytes(b"x")
    gt, how = ground_truth(a, None)
    assert {p.name: c for p, c in gt.items()} == {"x.jpg": 0, "y.png": 999} and "synset" in how
    # other class folders: sorted position
    b = tmp_path / "b"
    for name in ("dog", "cat"):
        (b / name).mkdir(parents=True)
        (b / name / f"{name}.jpg").write_bytes(b"x")
    gt, _ = ground_truth(b, None)
    assert {p.name: c for p, c in gt.items()} == {"cat.jpg": 0, "dog.jpg": 1}
    # nXXXXXXXX_ file names; unlabelled files are left out
    c = tmp_path / "c"
    c.mkdir()
    for f in ("n01530575_brambling.JPEG", "n02823428_1.jpg", "holiday.jpg"):
        (c / f).write_bytes(b"x")
    gt, _ = ground_truth(c, None)
    assert {p.name: v for p, v in gt.items()} == {"n01530575_brambling.JPEG": 10, "n02823428_1.jpg": 440}
    d = tmp_path / "d"
    d.mkdir()
    (d / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="no ground truth"):
        ground_truth(d, None)


@pytest.mark.realdata
def test_synsets_agree_with_imagenet_calib(calib_dir):
    syn = imagenet_synsets()
    rows = list(csv.DictReader(open(calib_dir / "labels.csv", newline="")))
    assert len(rows) == 100 and all(syn[int(r["imagenet_index"])] == r["synset"] for r in rows)
    gt_csv, _ = ground_truth(calib_dir, None)
    gt_names = {}
    for p in calib_dir.iterdir():
        if p.suffix == ".JPEG":
            gt_names[p] = syn.index(p.name.split("_", 1)[0])
    assert gt_csv == gt_names


def test_eval_exact_top1_on_synthetic_set(capsys, tiny, tmp_path):
    """labels.csv gives the numpy top-1 (minus the background offset) for 4 images and a wrong class
    for 2: top1 must be 4/6; top-5 counts the wrong labels chosen from ranks 2-5 too."""
    b, imgs = tiny
    rows = []
    for i, c in enumerate(COLOURS):
        order = np.argsort(-expected_probs(c), kind="stable")
        if i < 4:
            idx = order[0] - 1
        elif i == 4:
            idx = order[3] - 1  # rank 4: top-5 hit, top-1 miss
        else:
            idx = order[10] - 1  # rank 11: miss both
        rows.append((f"img{i}.png", int(idx)))
    lab = tmp_path / "labels.csv"
    with open(lab, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "imagenet_index"])
        w.writerows(rows)
    code, out, _ = run(capsys, "eval", b, imgs, "--labels", lab, "--json")
    assert code == 0
    res = json.loads(out)
    assert {"n", "top1", "top5", "model", "precision"} <= set(res)
    assert res["n"] == 6 and res["top1"] == pytest.approx(4 / 6) and res["top5"] == pytest.approx(5 / 6)
    assert res["model"] == "tiny" and res["precision"] == "fp32" and res["errors"] == []
    code, out, _ = run(capsys, "eval", b, imgs, "--labels", lab, "--json", "--int8")
    assert code == 0 and json.loads(out)["precision"] == "int8" and json.loads(out)["n"] == 6
    code, out, _ = run(capsys, "eval", b, imgs, "--labels", lab)
    assert code == 0 and "66.7%" in out and "83.3%" in out


def test_eval_bad_file_listed_and_bad_args(capsys, tiny, tmp_path):
    b, imgs = tiny
    d = tmp_path / "n01440764"
    d.mkdir()
    (d / "a.png").write_bytes((imgs / "img0.png").read_bytes())
    (d / "b.jpg").write_text("nope")
    code, out, err = run(capsys, "eval", b, tmp_path, "--json")
    assert code == 0
    res = json.loads(out)
    assert res["n"] == 1 and len(res["errors"]) == 1 and "b.jpg" in res["errors"][0]["image"]
    assert len(err_lines(err)) == 1
    assert f"warning: skipped {d / 'b.jpg'}: cannot decode: " in err and "error:" not in err
    code, _, err = run(capsys, "eval", b, tmp_path / "nothing")
    assert code == 2 and "no such folder" in err
    code, _, err = run(capsys, "eval", b, tmp_path, "--labels", tmp_path / "missing.csv")
    assert code == 2 and "no such labels file" in err


@needs_tflite
@pytest.mark.tflite
@pytest.mark.realdata
def test_eval_reference_tflite_cli(capsys, reference_dir, calib_dir):
    """The CLI's top-1 equals an independent per-image loop over labels.csv (tests/test_runtime.py), and
    lies within 3.3 binomial sd of Google's published 57.7% (full validation set)."""
    from test_runtime import _eval_tflite

    code, out, _ = run(capsys, "eval", reference_dir / REF, calib_dir, "--json")
    assert code == 0
    res = json.loads(out)
    assert res["n"] == 100 and res["precision"] == "int8"
    assert res["top1_correct"] == _eval_tflite(reference_dir / REF, calib_dir)
    assert abs(res["top1"] - 0.577) <= 3.3 * (0.577 * 0.423 / 100) ** 0.5
    assert res["top5"] >= res["top1"] and res["images_per_s"] > 0 and res["model"] == REF


# -- verify ---------------------------------------------------------------------------------------------------


def _copy_bundle(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_verify_ok_and_problems(capsys, tiny, tmp_path):
    b, _ = tiny
    code, out, _ = run(capsys, "verify", b, "--json")
    assert code == 0
    rep = json.loads(out)
    assert rep["ok"] and {r["file"] for r in rep["files"]} == {"model.onnx", "model.int8.onnx", "labels.txt"}
    assert all(r["sha256_ok"] for r in rep["files"])
    assert [r["loads"] for r in rep["files"] if r["file"].endswith(".onnx")] == [True, True]
    code, out, _ = run(capsys, "verify", b)
    assert code == 0 and "OK" in out

    flipped = _copy_bundle(b, tmp_path / "flipped")
    data = bytearray((flipped / "model.int8.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (flipped / "model.int8.onnx").write_bytes(bytes(data))
    code, out, err = run(capsys, "verify", flipped, "--json")
    assert code == 1 and json.loads(out)["ok"] is False
    assert len(err_lines(err)) == 1 and "model.int8.onnx: sha256" in err

    short = _copy_bundle(b, tmp_path / "short")
    (short / "labels.txt").write_text("background\n")
    code, _, err = run(capsys, "verify", short)
    assert code == 1 and "labels.txt: size" in err

    gone = _copy_bundle(b, tmp_path / "gone")
    (gone / "model.onnx").unlink()
    code, _, err = run(capsys, "verify", gone)
    assert code == 1 and "model.onnx: listed in manifest.json but missing" in err

    # a corrupt model whose manifest was updated to match: the hash passes, loading must not
    broken = _copy_bundle(b, tmp_path / "broken")
    (broken / "model.onnx").write_bytes(b"not onnx at all")
    m = bundle.read_manifest(broken)
    m["files"]["model.onnx"].update(bundle.file_record(broken / "model.onnx"))
    bundle.write_manifest(broken, m)
    code, _, err = run(capsys, "verify", broken)
    assert code == 1 and "model.onnx: does not load" in err and len(err_lines(err)) == 1

    code, _, err = run(capsys, "verify", tmp_path)
    assert code == 2 and "not a bundle" in err  # a usage error in every command (issue #20 item 7)


# -- bundles from the exporter (torch) -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Random-weight bundle from mobilenet_edge.build.export (torch), plus an int8 copy from ORT quantize_static."""
    pytest.importorskip("torch")
    from mobilenet_edge.build.export import ExportOptions, export_bundle

    out = tmp_path_factory.mktemp("exp")
    res = export_bundle(ExportOptions(alpha=0.25, res=64, num_classes=1001, out=out, padding="tf_same"))
    b = Path(res["bundle"])
    quantize_qdq(b / bundle.FILE_FP32, b / bundle.FILE_INT8, res=64)
    m = bundle.read_manifest(b)
    m["files"][bundle.FILE_INT8] = {**m["files"][bundle.FILE_FP32], **bundle.file_record(b / bundle.FILE_INT8),
                                    "precision": "int8"}
    bundle.write_manifest(b, m)
    return b


@pytest.mark.export
def test_exported_bundle_predict_eval_verify(capsys, exported, tiny):
    _, imgs = tiny
    code, out, _ = run(capsys, "verify", exported, "--json")
    assert code == 0 and json.loads(out)["ok"]
    code, out, _ = run(capsys, "predict", exported, imgs, "--json", "--top-k", "1001")
    assert code == 0
    for r in json.loads(out):
        assert len(r["top_k"]) == 1001 and abs(sum(e["score"] for e in r["top_k"]) - 1) < 1e-4
    code, out, _ = run(capsys, "predict", exported, imgs / "img0.png", "--int8", "--json")
    assert code == 0 and len(json.loads(out)[0]["top_k"]) == 5


@pytest.mark.export
@pytest.mark.realdata
@pytest.mark.tflite
def test_bundle_from_reference_weights_keeps_top1(capsys, tmp_path, reference_dir, images_dir, calib_dir):
    """Issue #6: the bundle exported from mobilenet_v1_0.5_160_quant.tflite's weights, fp32 and int8,
    gives the same two top-1 labels (macaw, Egyptian cat; crop 1.0 as the data README)."""
    pytest.importorskip("torch")
    if not has_module("mobilenet_edge.build.weights"):
        pytest.skip("mobilenet_edge.build.weights (TF-slim .tflite import) is not on this branch yet")
    from mobilenet_edge.build.export import ExportOptions, export_bundle

    b = Path(export_bundle(ExportOptions(res=160, weights=reference_dir / REF, out=tmp_path))["bundle"])
    if not (b / bundle.FILE_INT8).is_file():
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

        from mobilenet_edge.core.images import Preprocessing, load

        prep = Preprocessing.from_dict(bundle.read_manifest(b)["preprocessing"])
        files = sorted(calib_dir.glob("*.JPEG"))[:32]

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.it = iter([{"input": load(f, prep)[None]} for f in files])

            def get_next(self):
                return next(self.it, None)

        quantize_static(str(b / bundle.FILE_FP32), str(b / bundle.FILE_INT8), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
        manifest = bundle.read_manifest(b)  # recorded as quantize records it: a bundle's files are checked on load
        manifest["files"][bundle.FILE_INT8] = {**bundle.file_record(b / bundle.FILE_INT8), "format": "onnx",
                                               "precision": "int8"}
        bundle.write_manifest(b, manifest)
    for extra in ([], ["--int8"]):
        code, out, err = run(capsys, "predict", b, images_dir / "parrot.jpg", images_dir / "cat.bmp",
                             "--crop", "1.0", "--json", *extra)
        assert code == 0, err
        assert [r["top_k"][0]["label"] for r in json.loads(out)] == ["macaw", "Egyptian cat"], extra


# -- torch-free and the console script --------------------------------------------------------------------------

_TORCH_FREE = textwrap.dedent(
    """
    import json, sys
    import mobilenet_edge, mobilenet_edge.runtime.runner, mobilenet_edge.core.images, mobilenet_edge.core.bundle
    import mobilenet_edge.runtime.bench, mobilenet_edge.runtime.report, mobilenet_edge.runtime.evaluate, mobilenet_edge.core.platform_info
    from mobilenet_edge.cli import main
    bundle_dir, img_dir, eval_dir, ref = sys.argv[1:5]
    codes = [main(["predict", bundle_dir, img_dir, "--json"]), main(["predict", bundle_dir, img_dir, "--int8"]),
             main(["eval", bundle_dir, eval_dir, "--json"]), main(["verify", bundle_dir]),
             main(["bench", bundle_dir, "--runs", "2", "--warmup", "0", "--json", "-"]),
             main(["quantize", sys.argv[5], "--force", "--recipe", "plain"])]
    if ref:
        codes.append(main(["predict", ref, img_dir, "--top-k", "1"]))
    print("RESULT", json.dumps({"codes": codes, "torch": "torch" in sys.modules,
                                "torch_like": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))}))
    """
)


def test_runtime_side_never_imports_torch(tiny, tmp_path, data_dir_optional):
    b, imgs = tiny
    labelled = tmp_path / "n01440764"
    labelled.mkdir()
    for p in imgs.iterdir():
        (labelled / p.name).write_bytes(p.read_bytes())
    ref = ""
    if data_dir_optional is not None and HAS_TFLITE:
        ref = str(data_dir_optional / "reference" / REF)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    qcopy = tmp_path / "qcopy"  # quantize rewrites a bundle: work on a copy of the shared fixture
    shutil.copytree(b, qcopy)
    proc = subprocess.run([sys.executable, "-c", _TORCH_FREE, str(b), str(labelled), str(tmp_path), ref, str(qcopy)],
                          capture_output=True, text=True, env=env, timeout=300)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and line, proc.stderr
    res = json.loads(line[0][7:])
    assert res["codes"] == [0] * len(res["codes"])
    assert res["torch"] is False and res["torch_like"] == []


@pytest.fixture
def data_dir_optional():
    from conftest import DATA

    return DATA if (DATA / "reference" / REF).is_file() else None


def test_console_script(tiny):
    b, imgs = tiny
    script = Path(sys.executable).parent / "mobilenet-edge"
    if not script.exists():
        pytest.skip(f"console script not installed beside {sys.executable}")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([str(script), "predict", str(b), str(imgs / "img2.png"), "--json", "--top-k", "2"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    top = json.loads(proc.stdout)[0]["top_k"]
    assert top[0]["index"] == int(np.argmax(expected_probs(COLOURS[2])))
    proc = subprocess.run([str(script), "predict", str(b), str(imgs / "img2.png"), "--top-k", "0"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "top-k" in proc.stderr
