"""Export to a simplified, parity-checked ONNX bundle (issue #3)."""

import hashlib
import json

import numpy as np
import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from mobilenet_edge.build import bundle_builder  # noqa: E402
from mobilenet_edge.build.export import ExportOptions, export_bundle  # noqa: E402
from mobilenet_edge.cli import main  # noqa: E402
from mobilenet_edge.core.bundle import read_manifest  # noqa: E402
from mobilenet_edge.core.errors import ParityError  # noqa: E402
from mobilenet_edge.core.sessions import ort_session  # noqa: E402
from mobilenet_edge.core.variants import GRID_ALPHAS, GRID_RES, Variant  # noqa: E402

pytestmark = pytest.mark.export


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, images_dir):
    out = tmp_path_factory.mktemp("export")
    code = main(["export", "--alpha", "0.5", "--res", "160", "--weights", "random", "--out", str(out), "--padding",
                 "tf_same", "--parity-images", str(images_dir)])
    assert code == 0
    return out / "mobilenet_v1_0.50_160"


def test_bundle_layout_and_manifest(bundle):
    assert sorted(p.name for p in bundle.iterdir()) == ["labels.txt", "manifest.json", "model.onnx"]
    m = read_manifest(bundle)
    assert m["weights"]["source"] == "random"
    assert m["variant"] == {"alpha": 0.5, "res": 160, "num_classes": 1000,
                            "params": Variant(0.5, 160).params, "macs": Variant(0.5, 160).macs}
    rec = m["files"]["model.onnx"]
    assert rec["sha256"] == sha(bundle / "model.onnx") and rec["size"] == (bundle / "model.onnx").stat().st_size
    assert rec["opset"] == 13
    parity = m["export"]["parity"]
    assert parity["max_abs_diff"] <= 1e-4 and parity["top1_equal"] and parity["n_images"] == 8
    assert m["export"]["nodes_after"] < m["export"]["nodes_before"]
    labels = (bundle / "labels.txt").read_text().splitlines()
    assert len(labels) == 1000 and labels[0].startswith("tench")


def test_metadata_props_carry_preprocessing_and_labels(bundle):
    model = onnx.load(str(bundle / "model.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["alpha"] == "0.5" and meta["res"] == "160" and meta["num_classes"] == "1000"
    assert meta["weights"] == "random"
    prep = json.loads(meta["preprocessing"])
    assert prep["mean"] == [127.5] * 3 and prep["crop"] == 0.875 and prep["layout"] == "NCHW"
    assert len(json.loads(meta["labels"])) == 1000
    assert read_manifest(bundle)["preprocessing"] == prep


def test_tf_same_leaves_no_pad_node(bundle):
    ops = [n.op_type for n in onnx.load(str(bundle / "model.onnx")).graph.node]
    assert "Pad" not in ops
    assert ops.count("Conv") == 27  # stem + 13 x (depthwise, pointwise)


def test_batch_1_and_3_give_same_per_sample_logits(bundle):
    sess = ort_session(str(bundle / "model.onnx"))
    x = np.random.default_rng(1).uniform(-1, 1, (3, 3, 160, 160)).astype(np.float32)
    y3 = sess.run(None, {"input": x})[0]
    assert y3.shape == (3, 1000)
    for i in range(3):
        y1 = sess.run(None, {"input": x[i : i + 1]})[0]
        assert y1.shape == (1, 1000)
        np.testing.assert_allclose(y1[0], y3[i], atol=1e-5)


def test_same_command_twice_is_byte_identical(tmp_path):
    a = export_bundle(ExportOptions(alpha=0.25, res=128, out=tmp_path / "a"))["bundle"]
    b = export_bundle(ExportOptions(alpha=0.25, res=128, out=tmp_path / "b"))["bundle"]
    assert sha(a / "model.onnx") == sha(b / "model.onnx")


@pytest.mark.slow
@pytest.mark.parametrize("alpha", GRID_ALPHAS)
def test_every_grid_point_exports_with_parity(tmp_path, alpha):
    for res in GRID_RES:
        r = export_bundle(ExportOptions(alpha=alpha, res=res, out=tmp_path, padding="tf_same"))
        assert r["manifest"]["export"]["parity"]["max_abs_diff"] <= 1e-4


def test_odd_variant_exports(tmp_path):
    r = export_bundle(ExportOptions(alpha=0.35, res=200, out=tmp_path, padding="tf_same"))
    sess = ort_session(str(r["bundle"] / "model.onnx"))
    assert sess.run(None, {"input": np.zeros((2, 3, 200, 200), np.float32)})[0].shape == (2, 1000)
    assert r["bundle"].name == "mobilenet_v1_0.35_200"


def run(capsys, *args):
    code = main(list(args))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_opset_below_minimum_names_it(capsys, tmp_path):
    code, _, err = run(capsys, "export", "--alpha", "0.25", "--res", "128", "--out", str(tmp_path), "--opset", "12")
    assert code == 2 and ">= 13" in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_existing_bundle_refused_then_replaced_only_when_complete(capsys, tmp_path, monkeypatch):
    args = ["export", "--alpha", "0.25", "--res", "128", "--out", str(tmp_path)]
    assert run(capsys, *args)[0] == 0
    bundle = tmp_path / "mobilenet_v1_0.25_128"
    before = sha(bundle / "manifest.json")
    code, _, err = run(capsys, *args)
    assert code == 2 and "--force" in err
    # a failure half-way through a --force export leaves the old bundle intact and no temp folder
    def boom(*a, **k):
        raise ParityError("injected parity failure")

    monkeypatch.setattr(bundle_builder, "check_parity", boom)
    code, _, err = run(capsys, *args, "--force", "--seed", "1")
    assert code == 1 and "injected parity failure" in err
    assert sha(bundle / "manifest.json") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mobilenet_v1_0.25_128"]
    monkeypatch.undo()
    assert run(capsys, *args, "--force", "--seed", "1")[0] == 0
    assert sha(bundle / "manifest.json") != before


def test_parity_failure_leaves_no_file(tmp_path):
    with pytest.raises(ParityError, match="max abs logit difference"):
        export_bundle(ExportOptions(alpha=0.25, res=128, out=tmp_path, tolerance=0.0))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ParityError):  # an --out folder the failed export created is not left behind
        export_bundle(ExportOptions(alpha=0.25, res=128, out=tmp_path / "new" / "out", tolerance=0.0))
    assert not (tmp_path / "new" / "out").exists()


def test_out_not_writable(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(capsys, "export", "--alpha", "0.25", "--res", "128", "--out", str(blocker / "sub"))
    assert code == 2 and "not writable" in err and len(err.strip().splitlines()) == 1


def test_missing_weights_file(capsys, tmp_path):
    code, _, err = run(capsys, "export", "--alpha", "0.25", "--res", "128", "--out", str(tmp_path),
                       "--weights", str(tmp_path / "nope.safetensors"))
    assert code == 2 and "nope.safetensors" in err


def test_failed_int8_step_of_a_forced_export_keeps_the_old_bundle(capsys, tmp_path, monkeypatch):
    """--force --int8: the int8 step runs in the staging folder, so its failure leaves the old bundle."""
    from mobilenet_edge.core.errors import MobilenetEdgeError
    from mobilenet_edge.quantize import pipeline as quantize_mod

    args = ["export", "--alpha", "0.25", "--res", "128", "--weights", "random", "--out", str(tmp_path)]
    assert run(capsys, *args)[0] == 0
    bundle = tmp_path / "mobilenet_v1_0.25_128"
    before = {p.name: sha(p) for p in bundle.iterdir()}

    def boom(*a, **k):
        raise MobilenetEdgeError("injected int8 failure")

    monkeypatch.setattr(quantize_mod, "quantize_bundle", boom)
    code, _, err = run(capsys, *args, "--force", "--int8", "--seed", "1")
    assert code == 1 and "injected int8 failure" in err
    assert {p.name: sha(p) for p in bundle.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mobilenet_v1_0.25_128"]
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, *args, "--force", "--int8", "--calib", str(empty))
    assert code == 2 and "no image files" in err
    assert {p.name: sha(p) for p in bundle.iterdir()} == before


def test_bench_grid_writes_results_and_reuses_complete_bundles(capsys, tmp_path):
    """bench --grid (random weights): fp32 + int8 rows per point, JSON/CSV/PNG; a second run needs --force
    to replace the results and reuses the bundle (its manifest is not rewritten): every sha256 still matches."""
    pytest.importorskip("matplotlib")
    args = ["bench", "--grid", "--alphas", "0.25", "--res", "64", "--out", str(tmp_path), "--runs", "2",
            "--warmup", "0"]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    rows = json.loads((tmp_path / "grid.json").read_text())["results"]
    assert [(r["variant"], r["precision"]) for r in rows] == [("mobilenet_v1_0.25_64", "fp32"),
                                                              ("mobilenet_v1_0.25_64", "int8")]
    assert all(r["top1"] is None for r in rows)  # random weights: no accuracy
    assert (tmp_path / "grid.csv").is_file() and (tmp_path / "latency_vs_macs.png").read_bytes()[:4] == b"\x89PNG"
    manifest = tmp_path / "bundles" / "mobilenet_v1_0.25_64" / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    assert run(capsys, *args)[0] == 2  # grid.json exists: not replaced without --force (issue #20)
    assert run(capsys, *args, "--force")[0] == 0
    assert manifest.stat().st_mtime_ns == stamp
