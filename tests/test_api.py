"""The Python API (issue #18 part 1): ``import mobilenet_edge as me``; export -> load -> predict -> bench.

Expected values come from the image content and Google's model (data README: with the 0.5/160 weights
parrot.jpg is a macaw, cat.bmp an Egyptian cat), from PyTorch itself (the in-memory model's logits), from
numpy, and from the CLI (bench rows have the keys of ``bench --json``).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

import mobilenet_edge as me
from mobilenet_edge.core.errors import MobilenetEdgeError, UsageError

torch = pytest.importorskip("torch")
pytest.importorskip("onnxsim")

from mobilenet_edge.build.weights import download as D  # noqa: E402
from mobilenet_edge.cli import main  # noqa: E402

pytestmark = [pytest.mark.export, pytest.mark.realdata]

#: torchvision's ImageNet normalisation in 0..255 pixel units (255 x (0.485, 0.456, 0.406), 255 x (0.229, 0.224, 0.225))
TORCHVISION = {"mean": (123.675, 116.28, 103.53), "std": (58.395, 57.12, 57.375)}


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """No network and an empty cache: the default weights must come from the files shipped with the package."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(D.ENV_CACHE, str(tmp_path_factory.mktemp("cache")))
        mp.setenv(D.ENV_URL, "http://127.0.0.1:9/none")
        yield


@pytest.fixture(scope="module")
def google_bundle(offline, tmp_path_factory, calib_dir):
    """The issue's example: the pretrained default (Google's 0.5/160, shipped) with an int8 model."""
    return me.export(alpha=0.5, res=160, int8=True, calib=calib_dir, out=tmp_path_factory.mktemp("export"))


def test_export_returns_a_typed_bundle(google_bundle):
    b = google_bundle
    assert isinstance(b, me.Bundle) and b.path.name == b.name == "mobilenet_v1_0.50_160"
    assert list(b.models) == ["model.onnx", "model.int8.onnx"] and b.onnx.is_file() and b.int8_onnx.is_file()
    assert b.tflite is None and b.seconds > 0
    m = b.manifest
    assert (m.variant["alpha"], m.variant["res"], m.variant["num_classes"]) == (0.5, 160, 1001)
    assert m.weights["registry"]["name"] == "google-quant/0.5/160" and m.weights["registry"]["origin"] == "shipped"
    assert m.quantization["fidelity"]["images"] > 0
    assert b.labels[0] == "background" and len(b.labels) == 1001
    assert me.Bundle.open(b.path).manifest.to_dict() == m.to_dict()


@pytest.mark.parametrize("int8", [False, True])
def test_load_predict_macaw_and_egyptian_cat(google_bundle, images_dir, int8):
    clf = me.load(google_bundle, int8=int8)
    assert clf.precision == ("int8" if int8 else "fp32") and clf.res == 160 and clf.num_classes == 1001
    top = clf.predict(images_dir / "parrot.jpg", top_k=3)
    assert len(top) == 3 and top[0].label == "macaw" and top[0][0] == "macaw"
    probs = [p for _, p in top]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert clf.predict(str(images_dir / "cat.bmp"), top_k=1)[0].label == "Egyptian cat"


def test_predict_takes_pillow_images_and_pixel_arrays(google_bundle, images_dir):
    """A path, the decoded Pillow image and its RGB pixel array are the same picture: the same scores."""
    clf = me.load(google_bundle)
    img = Image.open(images_dir / "cat.bmp")
    arr = np.asarray(img.convert("RGB"))
    s = clf.scores([images_dir / "cat.bmp", img, arr])
    assert s.shape == (3, 1001) and s.dtype == np.float32
    np.testing.assert_allclose(s.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(s[1], s[0], atol=1e-6)
    np.testing.assert_allclose(s[2], s[0], atol=1e-6)
    batch = clf.predict_batch([images_dir / "parrot.jpg", arr], top_k=1)
    assert [p[0].label for p in batch] == ["macaw", "Egyptian cat"]


@pytest.mark.parametrize("image, needle", [
    (np.zeros((8, 8, 3), np.float32), "uint8"),
    (np.zeros((8, 8, 4), np.uint8), "(8, 8, 4)"),
    (42, "int"),
])
def test_predict_rejects_other_inputs(google_bundle, image, needle):
    clf = me.load(google_bundle)
    with pytest.raises(UsageError, match=r"image") as e:
        clf.predict(image)
    assert needle in str(e.value)


def test_predict_bad_top_k_and_missing_file(google_bundle, tmp_path):
    clf = me.load(google_bundle)
    for k in (0, 1002, 2.5):
        with pytest.raises(UsageError, match="top_k must be between 1 and the class count 1001"):
            clf.predict(np.zeros((8, 8, 3), np.uint8), top_k=k)
    with pytest.raises(UsageError):
        clf.predict(tmp_path / "nope.jpg")


def test_load_int8_of_a_bundle_without_it(tmp_path, offline):
    b = me.export("random", alpha=0.25, res=64, out=tmp_path)
    with pytest.raises(MobilenetEdgeError):
        me.load(b, int8=True)
    with pytest.warns(UserWarning, match="random"):
        me.load(b)


def test_bench_rows_have_the_keys_of_the_cli_json(google_bundle, tmp_path):
    res = me.bench([google_bundle], threads=[1, 2], runs=3, warmup=0, runtimes=["ort"])
    assert isinstance(res, me.BenchResult) and not res.failures
    # one row per (file, runtime, threads): 2 files x onnxruntime x 2 thread counts
    assert sorted((r["model"].split("/")[-1], r["threads"]) for r in res.rows) == [
        ("model.int8.onnx", 1), ("model.int8.onnx", 2), ("model.onnx", 1), ("model.onnx", 2)]
    for r in res.rows:
        assert r["runtime"] == "onnxruntime" and r["runs"] == 3
        assert 0 < r["min_ms"] <= r["p50_ms"] <= r["p99_ms"] and math.isclose(r["throughput_ips"], 1000 / r["mean_ms"])
    out = tmp_path / "cli.json"
    assert main(["bench", str(google_bundle.path), "--runs", "2", "--warmup", "0", "--runtimes", "ort",
                 "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert set(doc) == set(res.to_dict())
    assert {frozenset(r) for r in doc["results"]} == {frozenset(r) for r in res.rows}
    saved = json.loads(res.save(tmp_path / "api.json").read_text())
    assert saved["results"] == json.loads(json.dumps(res.rows))


def test_bench_errors(google_bundle, tmp_path):
    with pytest.raises(UsageError, match="threads"):
        me.bench(google_bundle, threads=0)
    with pytest.raises(UsageError):
        me.bench([tmp_path / "missing"])
    with pytest.raises(UsageError):
        me.bench(google_bundle, runtimes=["tensorrt"])
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(MobilenetEdgeError, match="broken.onnx"):
        me.bench(bad, runs=1, warmup=0)
    res = me.bench(bad, runs=1, warmup=0, strict=False)
    assert res.rows == [] and len(res.failures) == 1 and res.failures[0]["model"] == "broken.onnx"


# -- in-memory models ---------------------------------------------------------------------------------


def test_export_an_in_memory_model_matches_pytorch(tmp_path):
    """A MobileNetV1 in train mode: the bundle's ONNX model gives PyTorch's eval-mode logits, and the
    caller's module stays in train mode."""
    from mobilenet_edge.build.model import MobileNetV1

    torch.manual_seed(0)
    model = MobileNetV1(alpha=0.25, num_classes=5).train()
    b = me.export(model, res=64, out=tmp_path, preprocessing=TORCHVISION)
    assert model.training
    w = b.manifest.weights
    assert w["source"] == "module" and w["file"] == "MobileNetV1" and len(w["sha256"]) == 64
    assert b.manifest.variant["num_classes"] == 5 and b.name == "mobilenet_v1_0.25_64"
    clf = me.load(b)
    assert clf.preprocessing.mean == TORCHVISION["mean"] and clf.preprocessing.std == TORCHVISION["std"]
    x = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expect = model.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(clf.runner.run(x), expect, atol=1e-4)


def test_the_same_weights_give_the_same_hash(tmp_path):
    from mobilenet_edge.build.model import MobileNetV1

    torch.manual_seed(1)
    a = MobileNetV1(alpha=0.25, num_classes=3)
    b = MobileNetV1(alpha=0.25, num_classes=3)
    b.load_state_dict(a.state_dict())
    ha = me.export(a, res=32, out=tmp_path / "a").manifest.weights["sha256"]
    hb = me.export(b, res=32, out=tmp_path / "b").manifest.weights["sha256"]
    with torch.no_grad():
        b.classifier.bias[0] += 1
    hc = me.export(b, res=32, out=tmp_path / "c").manifest.weights["sha256"]
    assert ha == hb != hc


def test_quantize_an_exported_bundle(tmp_path, calib_dir):
    from mobilenet_edge.build.model import MobileNetV1

    torch.manual_seed(0)
    b = me.export(MobileNetV1(alpha=0.25, num_classes=4), res=64, out=tmp_path)
    with pytest.raises(UsageError, match="calib"):  # weights that are not random: real calibration images
        me.export(MobileNetV1(alpha=0.25, num_classes=4), res=64, out=tmp_path / "x", int8=True)
    q = me.quantize_bundle(b, calib=calib_dir)
    assert q.int8_onnx.is_file() and q.manifest.quantization["calibration"]["images"] > 0
    assert me.load(q, int8=True).precision == "int8"


# -- errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model, error, needles", [
    ("google-quantt", UsageError, ["google-quantt"]),
    ("no/such/weights.pt", UsageError, ["weights.pt"]),
    (42, UsageError, ["got int", "MobileNet V1"]),
])
def test_export_bad_model_arguments(tmp_path, offline, model, error, needles):
    with pytest.raises(error) as e:
        me.export(model, alpha=0.5, res=160, out=tmp_path / "out")
    assert all(n in str(e.value) for n in needles), str(e.value)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_export_a_module_that_is_not_a_mobilenet(tmp_path):
    resnet_like = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 7, 2), torch.nn.AdaptiveAvgPool2d(1))
    with pytest.raises(MobilenetEdgeError, match="Sequential is not a MobileNet V1"):
        me.export(resnet_like, res=64, out=tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("kwargs, needle", [
    ({"preprocessing": {"res": 96}}, "res"),
    ({"preprocessing": {"mean": (1, 2)}}, "mean"),
    ({"preprocessing": {"crop": 0}}, "crop"),
    ({"format": "coreml"}, "coreml"),
    ({"recipe": "best"}, "best"),
])
def test_export_bad_options_write_nothing(tmp_path, offline, kwargs, needle):
    with pytest.raises(UsageError, match=needle):
        me.export("random", alpha=0.25, res=64, out=tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# -- issue #18 part 4: the user's story in a few lines -------------------------------------------------

FIVE = {"parrot": "parrot.jpg", "cat": "cat.bmp", "owl": "owl.jpg", "hot dog": "hot_dog.jpg", "dragonfly": "dragonfly.bmp"}


@pytest.mark.slow
def test_fine_tuned_five_classes_export_load_predict(offline, tmp_path, images_dir, calib_dir):
    """Google's 0.25/128 (shipped) gets a 5-class head, trains a few steps on one image per class, and is
    exported from memory with the five labels and int8. Expected: the labels it was trained with, and the
    trained torch model's own probabilities (computed here)."""
    from mobilenet_edge.core.images import Preprocessing, load

    model = me.create_model(alpha=0.25, res=128)
    assert (model.alpha, model.num_classes, model.padding) == (0.25, 1001, "tf_same")  # Google's TF-slim file
    model.classifier = torch.nn.Linear(model.num_features, len(FIVE))
    x = torch.from_numpy(np.stack([load(images_dir / f, Preprocessing(res=128)) for f in FIVE.values()]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.eval()  # BN keeps Google's statistics
    torch.manual_seed(0)
    for _ in range(15):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), torch.arange(len(FIVE))).backward()
        opt.step()
    with torch.no_grad():
        want = torch.softmax(model(x), 1).numpy()
    assert list(want.argmax(1)) == list(range(len(FIVE)))  # trained on these: each image is its own class

    b = me.export(model, res=128, labels=list(FIVE), int8=True, calib=calib_dir, out=tmp_path)
    assert b.labels == list(FIVE) and b.manifest.labels["count"] == 5 and b.manifest.variant["num_classes"] == 5
    clf = me.load(b)
    paths = [images_dir / f for f in FIVE.values()]
    np.testing.assert_allclose(clf.scores(paths), want, atol=1e-4)
    assert [p[0].label for p in clf.predict_batch(paths, top_k=1)] == list(FIVE)
    top = me.load(b, int8=True).predict(images_dir / "parrot.jpg", top_k=5)
    assert sorted(label for label, _ in top) == sorted(FIVE) and top[0].label in FIVE


@pytest.mark.parametrize("labels, error, needle", [
    (["a", "b", "c"], UsageError, "3 labels but the model has 5 classes"),
    (["a", "b", "", "d", "e"], MobilenetEdgeError, "label 3"),
    (["a", "b", "a", "d", "e"], MobilenetEdgeError, "'a' appears twice"),
    ("a,b,c,d,e", UsageError, "no such labels file"),
])
def test_bad_labels_write_nothing(tmp_path, labels, error, needle):
    from mobilenet_edge.build.model import MobileNetV1

    with pytest.raises(error, match=needle):
        me.export(MobileNetV1(alpha=0.25, num_classes=5), res=32, labels=labels, out=tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_labels_from_a_file(tmp_path):
    from mobilenet_edge.build.model import MobileNetV1

    (tmp_path / "five.txt").write_text("\n".join(FIVE) + "\n", encoding="utf-8")
    b = me.export(MobileNetV1(alpha=0.25, num_classes=5), res=32, labels=tmp_path / "five.txt", out=tmp_path)
    assert b.labels == me.load(b).labels == list(FIVE)
