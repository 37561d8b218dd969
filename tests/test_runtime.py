"""Runtime layer: Runner over ORT / LiteRT / tflite-runtime, quantized I/O, open_model (no torch needed).

Expected values are computed independently here (numpy formulas for tiny models whose function is
known) or come from the data README / Google's published accuracy table.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import pytest
from _tiny_models import tiny_bundle, tiny_onnx, tiny_tflite, tiny_weights
from conftest import has_module

from mobilenet_edge.core import bundle, images
from mobilenet_edge.core.errors import MobilenetEdgeError, UsageError
from mobilenet_edge.core.images import Preprocessing
from mobilenet_edge.core.labels import background_offset, imagenet_labels
from mobilenet_edge.runtime.load import open_model
from mobilenet_edge.runtime.runner import Runner
from mobilenet_edge.runtime.scores import dequantize, quantize, softmax, top_k
from mobilenet_edge.runtime.tflite_backend import TFLITE_ENV, tflite_backend_name

HAS_TFLITE = has_module("ai_edge_litert") or has_module("tflite_runtime")
HAS_LITERT = has_module("ai_edge_litert")  # the tiny .tflite builder uses its flatbuffer schema
needs_tflite = pytest.mark.skipif(not HAS_TFLITE, reason="no TFLite runtime installed")
needs_litert = pytest.mark.skipif(not HAS_LITERT, reason="ai-edge-litert (tflite schema) not installed")


# -- pure helpers -------------------------------------------------------------------------------------


def test_softmax_known_values():
    p = softmax(np.array([[0.0, math.log(3.0)], [5.0, 5.0]]))
    np.testing.assert_allclose(p, [[0.25, 0.75], [0.5, 0.5]], rtol=1e-6)
    assert p.dtype == np.float32


def test_top_k_order_and_ties():
    idx, val = top_k(np.array([[0.1, 0.5, 0.5, 0.2]]), 3)
    assert idx.tolist() == [[1, 2, 3]]  # tie 0.5/0.5: lower index first
    np.testing.assert_allclose(val, [[0.5, 0.5, 0.2]])
    idx1, _ = top_k(np.array([3.0, 1.0, 2.0]), 2)
    assert idx1.tolist() == [0, 2]


@pytest.mark.parametrize("k", [0, -1, 5, True])
def test_top_k_out_of_range(k):
    with pytest.raises(UsageError, match="top-k"):
        top_k(np.zeros((1, 4)), k)


def test_uint8_scores_would_wrap_around():
    """argsort(-x) on raw uint8 wraps (-0 == 0 sorts first, -255 == 1 last); dequantize before top-k."""
    raw = np.array([[0, 200, 3, 255, 0]], dtype=np.uint8)
    naive = np.argsort(-raw, axis=-1)[0, 0]
    assert raw[0, naive] == 0  # the bug the runner must avoid: a zero-probability class "wins"
    scores = dequantize(raw, 1 / 256, 0)
    np.testing.assert_allclose(scores, raw.astype(np.float64) / 256)
    assert top_k(scores, 2)[0].tolist() == [[3, 1]]
    assert top_k(raw, 2)[0].tolist() == [[3, 1]]  # top_k itself widens integers too


def test_quantize_formula():
    x = np.array([-1.0, 0.0, 0.5, 1.0, 2.0, -3.0])
    # round(x / (1/128)) + 128, clipped to 0..255 (TFLite affine quantization)
    assert quantize(x, 1 / 128, 128, np.uint8).tolist() == [0, 128, 192, 255, 255, 0]
    # int8 with zero point -1: round(x * 100) - 1, clipped to -128..127
    assert quantize(x, 0.01, -1, np.int8).tolist() == [-101, -1, 49, 99, 127, -128]
    np.testing.assert_allclose(dequantize(np.array([-101, 127], np.int8), 0.01, -1), [-1.0, 1.28], rtol=1e-6)


def test_background_offset():
    assert background_offset(1001) == 1 and background_offset(1000) == 0 and background_offset(10) == 0


# -- ONNX -----------------------------------------------------------------------------------------------


def _expected_tiny(x_nchw: np.ndarray, classes: int, seed: int = 0) -> np.ndarray:
    w, b = tiny_weights(classes, seed)
    return x_nchw.astype(np.float64).mean(axis=(2, 3)) @ w.T.astype(np.float64) + b


def test_onnx_runner_matches_numpy(tmp_path):
    path = tiny_onnx(tmp_path / "m.onnx", res=16, classes=7)
    r = Runner(path, threads=2)
    assert (r.backend, r.layout, r.res, r.num_classes, r.fixed_batch) == ("onnxruntime", "NCHW", 16, 7, None)
    assert not r.outputs_probabilities  # output named "logits"
    x = np.random.default_rng(0).uniform(-1, 1, (3, 3, 16, 16)).astype(np.float32)
    y = r.run(x)
    assert y.shape == (3, 7) and y.dtype == np.float32
    np.testing.assert_allclose(y, _expected_tiny(x, 7), atol=1e-5)
    np.testing.assert_allclose(r.probabilities(x).sum(axis=1), 1.0, atol=1e-6)


def test_onnx_fixed_batch_one_loops(tmp_path):
    r = Runner(tiny_onnx(tmp_path / "b1.onnx", res=8, classes=5, batch=1))
    assert r.fixed_batch == 1
    x = np.random.default_rng(1).uniform(-1, 1, (4, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(r.run(x), _expected_tiny(x, 5), atol=1e-5)


def test_onnx_fixed_batch_three_pads_ragged_batches(tmp_path):
    r = Runner(tiny_onnx(tmp_path / "b3.onnx", res=8, classes=5, batch=3))
    x = np.random.default_rng(2).uniform(-1, 1, (5, 3, 8, 8)).astype(np.float32)  # 3 + 2 (padded)
    np.testing.assert_allclose(r.run(x), _expected_tiny(x, 5), atol=1e-5)
    np.testing.assert_allclose(r.run(x[:1]), _expected_tiny(x[:1], 5), atol=1e-5)


def test_run_rejects_wrong_shape(tmp_path):
    r = Runner(tiny_onnx(tmp_path / "m.onnx", res=8, classes=5))
    with pytest.raises(UsageError, match="does not fit"):
        r.run(np.zeros((1, 8, 8, 3), np.float32))  # NHWC batch for an NCHW model


def test_corrupt_onnx(tmp_path):
    p = tmp_path / "bad.onnx"
    p.write_bytes(b"\x08\x07not a protobuf" * 10)
    with pytest.raises(MobilenetEdgeError, match="cannot load ONNX model"):
        Runner(p)


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(MobilenetEdgeError, match="no such model file"):
        Runner(tmp_path / "nope.onnx")
    (tmp_path / "m.pt").write_bytes(b"x")
    with pytest.raises(UsageError, match="expected .onnx or .tflite"):
        Runner(tmp_path / "m.pt")
    with pytest.raises(UsageError, match="threads"):
        Runner(tmp_path / "m.pt", threads=0)
    with pytest.raises(UsageError, match="no such model file or bundle"):
        open_model(tmp_path / "nothing")


def test_open_lone_onnx_metadata_and_defaults(tmp_path):
    prep = Preprocessing(res=16, mean=(10.0, 20.0, 30.0), std=(2.0, 3.0, 4.0), crop=0.5).to_dict()
    labels = [f"thing {i}" for i in range(4)]
    with_md = tiny_onnx(tmp_path / "md.onnx", res=16, classes=4, metadata={"preprocessing": prep, "labels": labels})
    r, p, lab, man = open_model(with_md)
    assert (p.mean, p.std, p.crop, p.res, p.layout) == ((10.0, 20.0, 30.0), (2.0, 3.0, 4.0), 0.5, 16, "NCHW")
    assert lab == labels and man is None
    # no metadata: torchvision's ImageNet normalisation (255 x (0.485, 0.456, 0.406) / 255 x (0.229, 0.224, 0.225))
    bare = tiny_onnx(tmp_path / "bare.onnx", res=16, classes=1000)
    _, p2, lab2, _ = open_model(bare, prep_overrides={"crop": 1.0, "mean": None})
    np.testing.assert_allclose(p2.mean, [0.485 * 255, 0.456 * 255, 0.406 * 255])
    np.testing.assert_allclose(p2.std, [0.229 * 255, 0.224 * 255, 0.225 * 255])
    assert p2.crop == 1.0 and p2.res == 16 and lab2[0].startswith("tench")


def test_open_labels_file_count_checked(tmp_path):
    m = tiny_onnx(tmp_path / "m.onnx", res=8, classes=3)
    good = tmp_path / "l3.txt"
    good.write_text("a\nb\nc\n")
    assert open_model(m, labels_file=good)[2] == ["a", "b", "c"]
    bad = tmp_path / "l2.txt"
    bad.write_text("a\nb\n")
    with pytest.raises(UsageError, match="2 labels .* 3 outputs"):
        open_model(m, labels_file=bad)
    with pytest.raises(UsageError, match="unknown preprocessing"):
        open_model(m, prep_overrides={"colour": 1})


def test_open_bundle_fp32_and_int8(tmp_path):
    b = tiny_bundle(tmp_path / "tiny", res=16, classes=1001, int8=True)
    r, p, labels, man = open_model(b)
    assert r.path.name == "model.onnx" and man.name == "tiny"
    assert labels[0] == "background" and labels[89] == "macaw" and len(labels) == 1001
    assert p == Preprocessing.from_dict(man.preprocessing)
    r8, p8, _, _ = open_model(b, int8=True)
    assert r8.path.name == "model.int8.onnx" and p8 == p
    # constant-colour images: logits W @ rgb + b, well separated; QDQ int8 keeps the top-1
    rgb = np.array([[0.9, -0.8, 0.1], [-0.5, 0.7, 0.9], [0.2, 0.2, -0.9]], np.float32)
    x = np.broadcast_to(rgb[:, :, None, None], (3, 3, 16, 16)).copy()
    y32, y8 = r.run(x), r8.run(x)
    np.testing.assert_allclose(y32, _expected_tiny(x, 1001), atol=1e-5)
    assert np.abs(y8 - y32).max() < 0.1 * np.abs(y32).max()
    assert (y8.argmax(1) == y32.argmax(1)).all()
    with pytest.raises(MobilenetEdgeError, match="no model.tflite"):
        open_model(b, fmt="tflite")


def test_bundle_without_int8(tmp_path):
    b = tiny_bundle(tmp_path / "t", res=8, classes=10)
    with pytest.raises(MobilenetEdgeError, match="quantize"):
        open_model(b, int8=True)
    (b / bundle.MANIFEST).write_text("{}")
    with pytest.raises(MobilenetEdgeError, match="not a mobilenet-edge manifest"):
        open_model(b)


# -- TFLite (tiny flatbuffers) ----------------------------------------------------------------------------


@needs_litert
@pytest.mark.tflite
@pytest.mark.parametrize("dtype,scale,zp", [("uint8", 1 / 128, 128), ("int8", 1 / 100, -3)])
def test_tflite_quantized_io_roundtrip(tmp_path, dtype, scale, zp):
    """RESHAPE model: output = input's integers, so run(x) == dequantize(quantize(x)) exactly."""
    r = Runner(tiny_tflite(tmp_path / "t.tflite", res=4, dtype=dtype, scale=scale, zero_point=zp))
    scale = float(np.float32(scale))  # the flatbuffer stores float32
    assert (r.layout, r.res, r.input_dtype, r.input_quant, r.num_classes) == ("NHWC", 4, np.dtype(dtype), (scale, zp), 48)
    assert r.fixed_batch == 1 and not r.outputs_probabilities
    x = np.random.default_rng(0).uniform(-1.5, 1.5, (3, 4, 4, 3)).astype(np.float32)  # batch 3 on a batch-1 file
    info = np.iinfo(dtype)
    q = np.clip(np.rint(x.astype(np.float64) / scale) + zp, info.min, info.max)
    np.testing.assert_allclose(r.run(x), ((q - zp) * scale).reshape(3, -1), atol=1e-6)


@needs_litert
@pytest.mark.tflite
def test_tflite_softmax_quantization_means_probabilities(tmp_path):
    # TFLite fixes a softmax output to scale 1/256, zero point 0 (uint8): such outputs are probabilities
    r = Runner(tiny_tflite(tmp_path / "p.tflite", out_scale=1 / 256, out_zero_point=0))
    assert r.outputs_probabilities
    x = np.zeros((1, 4, 4, 3), np.float32)
    np.testing.assert_array_equal(r.probabilities(x), r.run(x))  # no second softmax


@needs_litert
@pytest.mark.tflite
def test_tflite_input_not_an_image(tmp_path):
    with pytest.raises(MobilenetEdgeError, match="not an image"):
        Runner(tiny_tflite(tmp_path / "v.tflite", dtype="float32", image=False))


@needs_tflite
@pytest.mark.tflite
def test_corrupt_tflite(tmp_path, reference_dir):
    p = tmp_path / "cut.tflite"
    p.write_bytes((reference_dir / "mobilenet_v1_0.5_160_quant.tflite").read_bytes()[:5000])
    with pytest.raises(MobilenetEdgeError, match="cannot load TFLite model"):
        Runner(p)


def test_tflite_backend_env(monkeypatch):
    monkeypatch.setenv(TFLITE_ENV, "tensorflow")
    with pytest.raises(UsageError, match=TFLITE_ENV):
        tflite_backend_name()


@needs_tflite
def test_tflite_backend_expected():
    """.ci/runtime-env.sh sets MOBILENET_EDGE_EXPECT_TFLITE=tflite-runtime: proves the fallback is used."""
    expect = os.environ.get("MOBILENET_EDGE_EXPECT_TFLITE")
    name = tflite_backend_name()
    if expect:
        assert name == expect
    else:
        assert name == ("ai-edge-litert" if HAS_LITERT else "tflite-runtime")


# -- Google's reference .tflite files (real data) ---------------------------------------------------------

REF = "mobilenet_v1_0.5_160_quant.tflite"


@needs_tflite
@pytest.mark.tflite
@pytest.mark.realdata
def test_reference_model_description(reference_dir):
    r, p, labels, man = open_model(reference_dir / REF)
    # data README: uint8 NHWC input, scale 1/128, zero point 128; uint8 (1, 1001) output, scale 1/256
    assert (r.layout, r.res, r.input_dtype, r.fixed_batch, r.num_classes) == ("NHWC", 160, np.uint8, 1, 1001)
    assert r.input_quant == (1 / 128, 128) and r.output_quant == (1 / 256, 0)
    assert r.outputs_probabilities  # MobilenetV1/Predictions (softmax)
    assert (p.mean, p.std, p.crop, p.resize, p.layout) == ((127.5,) * 3, (127.5,) * 3, 0.875, "tf_bilinear", "NHWC")
    assert labels == imagenet_labels(1001) and man is None


@needs_tflite
@pytest.mark.tflite
@pytest.mark.realdata
@pytest.mark.parametrize("crop", [1.0, 0.875])
def test_reference_parrot_and_cat(reference_dir, images_dir, crop):
    """Data README: with a plain resize to 160x160 (crop 1.0) parrot -> macaw, cat -> Egyptian cat.
    Measured: the TF-slim evaluation crop 0.875 gives the same top-1s (macaw 0.98, Egyptian cat 0.71)."""
    r, p, labels, _ = open_model(reference_dir / REF, prep_overrides={"crop": crop})
    x = np.stack([images.load(images_dir / f, p) for f in ("parrot.jpg", "cat.bmp")])
    idx, val = top_k(r.probabilities(x), 1)
    assert [labels[i] for i in idx[:, 0]] == ["macaw", "Egyptian cat"]
    assert (val > 0.5).all()


@needs_tflite
@pytest.mark.tflite
@pytest.mark.realdata
def test_reference_uint8_output_is_dequantized(reference_dir, images_dir):
    r, p, _, _ = open_model(reference_dir / REF)
    x = images.load(images_dir / "parrot.jpg", p)[None]
    # raw interpreter output, bypassing the runner's dequantization
    q = quantize(x, *r.input_quant, np.uint8)
    r._it.set_tensor(r._in_index, q)
    r._it.invoke()
    raw = np.array(r._it.get_tensor(r._out_index))
    assert raw.dtype == np.uint8 and (raw == 0).any()
    assert raw[0, np.argsort(-raw, axis=-1)[0, 0]] == 0  # naive sort would pick a zero class
    scores = r.run(x)
    np.testing.assert_allclose(scores, raw / 256.0, atol=1e-7)
    assert top_k(scores, 1)[0][0, 0] == int(np.argmax(raw)) == 89  # macaw's line in imagenet_labels.txt (1001)


@needs_tflite
@pytest.mark.tflite
@pytest.mark.realdata
def test_reference_batch_loops_like_single(reference_dir, images_dir):
    r, p, _, _ = open_model(reference_dir / REF)
    x = np.stack([images.load(images_dir / f, p) for f in ("parrot.jpg", "cat.bmp", "owl.jpg")])
    one_by_one = np.concatenate([r.run(x[i : i + 1]) for i in range(3)])
    np.testing.assert_array_equal(r.run(x), one_by_one)


# Google's published top-1 on the 50,000 ImageNet validation images for these exact files
# (tensorflow/models research/slim/nets/mobilenet_v1.md, 2018_08_02 release): 39.5 / 57.7 / 66.1 %.
# On our 100 images (one per 10th class) the binomial sd is ~5 points, so 3.3 sd (99.9%) bounds are
# checked. With the default TF-slim preprocessing (integer central crop 0.875 + TF1 resize_bilinear,
# images.tf_crop_resize) this pipeline gave 44/74/76 when this was written; Pillow's antialiased
# bilinear gave 45/71/73. These 100 images are easier than the full validation set.
PUBLISHED = {"0.25_128": 0.395, "0.5_160": 0.577, "0.75_192": 0.661}


def _eval_tflite(path: Path, calib_dir: Path) -> int:
    r, p, _, _ = open_model(path)
    rows = list(csv.DictReader(open(calib_dir / "labels.csv", newline="")))
    correct = 0
    for row in rows:
        s = r.run(images.load(calib_dir / row["file"], p)[None])
        correct += int(top_k(s, 1)[0][0, 0]) - background_offset(r.num_classes) == int(row["imagenet_index"])
    return correct


@needs_tflite
@pytest.mark.tflite
@pytest.mark.realdata
@pytest.mark.parametrize("variant", list(PUBLISHED))
def test_reference_top1_on_imagenet_calib(reference_dir, calib_dir, variant):
    correct = _eval_tflite(reference_dir / f"mobilenet_v1_{variant}_quant.tflite", calib_dir)
    n, pub = 100, PUBLISHED[variant]
    sd = math.sqrt(pub * (1 - pub) / n)
    assert abs(correct / n - pub) <= 3.3 * sd, (variant, correct)
