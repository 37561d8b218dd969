"""The torch-free half of the Python API (issue #18 part 1): ``me.load`` -> ``Classifier.predict`` / ``scores``,
``me.bench``, ``me.Bundle``. Runs in the Pi venv of .ci/runtime-env.sh (no torch, tflite-runtime).

Expected values: tiny models whose function is known (``logits = W @ mean_over_pixels(x) + b``, see
tests/_tiny_models.py) computed in numpy on solid-colour images, and the data README (Google's 0.5/160
``.tflite`` says macaw for parrot.jpg).
"""

from __future__ import annotations

import numpy as np
import pytest
from _tiny_models import tiny_bundle, tiny_weights
from conftest import has_module
from PIL import Image

import mobilenet_edge as me
from mobilenet_edge.core.errors import MobilenetEdgeError, UsageError
from mobilenet_edge.runtime.bench import COLUMNS

HAS_TFLITE = has_module("ai_edge_litert") or has_module("tflite_runtime")
#: the tiny bundles say their weights are random: load warns (checked once, in the first test)
pytestmark = pytest.mark.filterwarnings("ignore:random weights:UserWarning")
COLOUR = (200, 30, 90)


def expected_probs(colour, classes: int, *, mean=127.5, std=127.5) -> np.ndarray:
    """The tiny model on a solid-colour image: every preprocessed pixel is (c - mean) / std, so the pooled
    input is that vector; logits = W @ v + b; then a softmax (all in float64 numpy)."""
    w, b = tiny_weights(classes)
    v = (np.asarray(colour, np.float64) - mean) / std
    z = w.astype(np.float64) @ v + b
    e = np.exp(z - z.max())
    return e / e.sum()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory.mktemp("api") / "tiny", res=32, classes=10, int8=True)


@pytest.fixture
def red_png(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (48, 40), COLOUR).save(path)
    return path


def test_predict_matches_numpy_for_paths_pillow_images_and_arrays(bundle, red_png):
    with pytest.warns(UserWarning, match="random"):  # the tiny bundle says its weights are random
        clf = me.load(bundle)
    want = expected_probs(COLOUR, 10)
    order = np.argsort(-want, kind="stable")
    labels = me.Bundle.open(bundle).labels
    for image in (red_png, str(red_png), Image.open(red_png), np.asarray(Image.open(red_png))):
        top = clf.predict(image, top_k=3)
        assert [label for label, _ in top] == [labels[i] for i in order[:3]]
        np.testing.assert_allclose([p for _, p in top], want[order[:3]], atol=1e-5)
    grey = np.full((20, 30), 77, np.uint8)  # (H, W) greyscale: R = G = B = 77
    np.testing.assert_allclose(clf.scores([grey])[0], expected_probs((77, 77, 77), 10), atol=1e-5)


def test_scores_shape_and_batches(bundle, red_png):
    clf = me.load(bundle)
    images = [red_png] * 70  # more than one chunk of the runtime
    s = clf.scores(images)
    assert s.shape == (70, 10) and s.dtype == np.float32
    np.testing.assert_allclose(s, np.tile(expected_probs(COLOUR, 10), (70, 1)), atol=1e-5)
    assert clf.scores([]).shape == (0, 10)
    assert clf.predict_batch(iter([red_png, red_png]), top_k=1) == [clf.predict(red_png, top_k=1)] * 2


def test_int8_model_of_the_bundle(bundle, red_png):
    clf = me.load(me.Bundle.open(bundle), int8=True)
    assert clf.precision == "int8" and clf.path.name == "model.int8.onnx" and clf.runtime == "onnxruntime"
    # int8 is close to the function, not equal: the top class and its probability within a few percent
    want = expected_probs(COLOUR, 10)
    top = clf.predict(red_png, top_k=1)[0]
    assert top.label == me.Bundle.open(bundle).labels[int(np.argmax(want))]
    assert abs(top.prob - want.max()) < 0.05


def test_classifier_attributes(bundle):
    clf = me.load(bundle)
    assert (clf.res, clf.num_classes, clf.precision) == (32, 10, "fp32")
    assert clf.labels == me.Bundle.open(bundle).labels and clf.manifest.name == "tiny"
    assert "model.onnx" in repr(clf) and "10 classes" in repr(clf)


def test_bundle_value(bundle):
    b = me.Bundle.open(bundle)
    assert b.name == "tiny" and b.seconds is None and b.tflite is None
    assert list(b.models) == ["model.onnx", "model.int8.onnx"] and b.onnx == bundle / "model.onnx"
    import os

    assert os.fspath(b) == str(bundle)


def test_load_errors(bundle, tmp_path):
    with pytest.raises(UsageError, match="no such model file or bundle"):
        me.load(tmp_path / "missing")
    with pytest.raises(MobilenetEdgeError, match="not a bundle"):
        me.Bundle.open(tmp_path)
    with pytest.raises(UsageError, match="format"):
        me.load(bundle, format="coreml")
    lone = tiny_bundle(tmp_path / "fp32only", res=8, classes=10)
    with pytest.raises(MobilenetEdgeError):
        me.load(lone, int8=True)
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    with pytest.raises(UsageError, match="3 labels"):
        me.load(bundle, labels=tmp_path / "three.txt")


def test_bench_rows(bundle):
    res = me.bench(bundle, threads=[1, 2, 1], runs=3, warmup=1, runtimes=["ort"])
    assert not res.failures and len(res.rows) == 4  # 2 files x 2 distinct thread counts
    for row in res.rows:
        assert list(row)[: len(COLUMNS)] == list(COLUMNS) and {"runtime_version", "timestamp"} <= set(row)
        assert row["runs"] == 3 and row["runtime"] == "onnxruntime" and row["p50_ms"] > 0
    assert set(res.to_dict()) == {"environment", "results", "failures", "fastest"}
    assert res.environment["cpu_model"] and res.environment["arch"]


@pytest.mark.skipif(not HAS_TFLITE, reason="no TFLite runtime (ai-edge-litert or tflite-runtime)")
def test_google_tflite_file_says_macaw(reference_dir, images_dir):
    """A lone Google .tflite (TF-slim preprocessing and ImageNet labels assumed): data README, parrot -> macaw."""
    clf = me.load(reference_dir / "mobilenet_v1_0.5_160_quant.tflite")
    assert clf.runtime == "litert" and clf.precision == "int8" and clf.num_classes == 1001
    assert clf.predict(images_dir / "parrot.jpg", top_k=1)[0].label == "macaw"
    assert clf.predict(Image.open(images_dir / "cat.bmp"), top_k=1)[0].label == "Egyptian cat"
