"""A model opened from a bundle is the one its manifest records (issue #20 item 1).

The corruption is the issue's: one byte flipped in the middle of a model's weights, which leaves the file
loadable (ONNX Runtime runs it and prints results) and its size unchanged; only the sha256 tells. Expected
values are the manifest's own records and the flipped file's bytes, computed here.
"""

from __future__ import annotations

import csv
import shutil

import numpy as np
import onnx
import pytest
from _tiny_models import tiny_bundle
from onnx import numpy_helper
from PIL import Image

from mobilenet_edge.core import bundle as B
from mobilenet_edge.core.errors import MobilenetEdgeError
from mobilenet_edge.core.manifest import Manifest

PROG = "mobilenet-edge: error: "


def _run(capsys, *args):
    from mobilenet_edge.cli import main

    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _flip_a_weight_byte(path):
    """XOR one mantissa bit of the middle value of the largest initializer, in place: still a valid model."""
    data = bytearray(path.read_bytes())
    model = onnx.load(str(path))
    init = max(model.graph.initializer, key=lambda t: numpy_helper.to_array(t).nbytes)
    raw = numpy_helper.to_array(init).tobytes()
    at = bytes(data).find(raw)
    assert at > 0 and bytes(data).count(raw) == 1, "the weights' bytes must be findable once in the file"
    data[at + len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    onnx.checker.check_model(str(path))  # still a well-formed model: nothing but the checksum can tell


@pytest.fixture
def corrupt(tmp_path):
    """A tiny bundle (fp32 + int8) whose model.int8.onnx has one flipped byte; plus two images and labels.csv."""
    b = tiny_bundle(tmp_path / "b", res=16, classes=1001, int8=True)
    _flip_a_weight_byte(b / B.FILE_INT8)
    assert (b / B.FILE_INT8).stat().st_size == Manifest.read(b).file(B.FILE_INT8)["size"]
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i, colour in enumerate([(200, 30, 30), (30, 30, 200)]):
        Image.new("RGB", (20, 20), colour).save(imgs / f"{i}.png")
    with open(imgs / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["file", "imagenet_index"], ["0.png", 1], ["1.png", 2]])
    return b, imgs


def _refusal(err: str, path) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith(PROG) and str(path) in line and "manifest.json" in line and "--no-verify" in line, line
    return line


def test_open_model_refuses_a_flipped_byte_and_names_the_file(corrupt):
    from mobilenet_edge.runtime.load import open_model

    b, _ = corrupt
    with pytest.raises(MobilenetEdgeError, match="sha256") as e:
        open_model(b, int8=True)
    assert str(b / B.FILE_INT8) in str(e.value)
    assert open_model(b, int8=False).runner.path == b / B.FILE_FP32  # the intact file still opens
    assert open_model(b, int8=True, verify=False).runner.num_classes == 1001


def test_predict_eval_bench_refuse_a_corrupt_bundle_file(capsys, corrupt):
    b, imgs = corrupt
    for args in (["predict", b, imgs / "0.png", "--int8"], ["eval", b, imgs, "--int8"],
                 ["bench", b, "--runtimes", "ort", "--runs", "2", "--warmup", "0"]):
        code, out, err = _run(capsys, *args)
        assert code == 1, (args, err)
        _refusal(err, b / B.FILE_INT8)
        assert out == "", args  # nothing ran: no table, no results


def test_no_verify_runs_it_and_says_so(capsys, corrupt):
    b, imgs = corrupt
    for args in (["predict", b, imgs / "0.png", "--int8", "--json"], ["eval", b, imgs, "--int8", "--json"]):
        code, out, err = _run(capsys, *args, "--no-verify")
        assert code == 0, err
        assert "warning: --no-verify" in err and out.strip().startswith(("[", "{"))


def test_size_mismatch_and_unlisted_model_are_refused(capsys, tmp_path):
    b = tiny_bundle(tmp_path / "b", res=16, classes=10)
    with open(b / B.FILE_FP32, "ab") as f:
        f.write(b"\0")  # a copy that grew (or, as often, was cut short)
    code, _, err = _run(capsys, "predict", b, _png(tmp_path))
    line = _refusal(err, b / B.FILE_FP32)
    size = (b / B.FILE_FP32).stat().st_size
    assert code == 1 and f"size {size} bytes, manifest says {size - 1}" in line
    c = tiny_bundle(tmp_path / "c", res=16, classes=10)
    shutil.copy(c / B.FILE_FP32, c / B.FILE_INT8)  # dropped in by hand: not in the manifest
    code, _, err = _run(capsys, "predict", c, _png(tmp_path), "--int8")
    assert code == 1 and "is not listed in manifest.json" in _refusal(err, c / B.FILE_INT8)


def test_a_corrupt_labels_file_is_refused(capsys, tmp_path):
    b = tiny_bundle(tmp_path / "b", res=16, classes=10)
    text = (b / B.LABELS).read_text()
    (b / B.LABELS).write_text(text[0].swapcase() + text[1:])  # same size, other bytes
    code, _, err = _run(capsys, "predict", b, _png(tmp_path))
    assert code == 1 and "sha256" in _refusal(err, b / B.LABELS)


def test_quantize_refuses_a_corrupt_fp32_model(capsys, tmp_path):
    b = tiny_bundle(tmp_path / "b", res=16, classes=10)
    _flip_a_weight_byte(b / B.FILE_FP32)
    code, _, err = _run(capsys, "quantize", b, "--synthetic")
    assert code == 1
    _refusal(err, b / B.FILE_FP32)
    assert not (b / B.FILE_INT8).exists()


def test_a_bundle_file_given_by_its_path_is_checked_too(capsys, corrupt, tmp_path):
    """`predict export/x/model.int8.onnx`: the file is still the bundle's, and its record still holds."""
    b, imgs = corrupt
    for args in (["predict", b / B.FILE_INT8, imgs / "0.png"],
                 ["bench", b / B.FILE_INT8, "--runs", "2", "--warmup", "0"]):
        code, out, err = _run(capsys, *args)
        assert code == 1 and out == "", (args, err)
        _refusal(err, b / B.FILE_INT8)
    c = tiny_bundle(tmp_path / "c", res=16, classes=10)
    _flip_a_weight_byte(c / B.FILE_FP32)
    code, _, err = _run(capsys, "quantize", c / B.FILE_FP32, "--synthetic")
    assert code == 1
    _refusal(err, c / B.FILE_FP32)
    assert not (c / "model.int8.onnx").exists()


def test_a_lone_file_has_no_manifest_and_is_not_checked(capsys, corrupt, tmp_path):
    b, imgs = corrupt
    lone = tmp_path / "copied.int8.onnx"
    shutil.copy(b / B.FILE_INT8, lone)
    code, out, err = _run(capsys, "predict", lone, imgs / "0.png", "--json")
    assert code == 0, err
    assert "manifest" not in err


def test_digest_cache_follows_the_file(tmp_path):
    """Same file, same digest without rereading; a rewrite (new mtime/size) is hashed again."""
    import hashlib

    f = tmp_path / "m.onnx"
    f.write_bytes(b"a" * 1000)
    assert B.cached_sha256(f) == hashlib.sha256(b"a" * 1000).hexdigest()
    f.write_bytes(b"b" * 1001)
    assert B.cached_sha256(f) == hashlib.sha256(b"b" * 1001).hexdigest()


def _png(tmp_path):
    p = tmp_path / "img.png"
    if not p.exists():
        Image.fromarray(np.full((20, 20, 3), 128, np.uint8)).save(p)
    return p
