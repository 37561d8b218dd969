"""Issue #18 part 4, the user's story end to end, and part 2 (your classes and labels) on its bundle.

Google's 0.25/128 weights (shipped with the package) get a 5-class classifier, are trained for a few steps
here on five of ../shared/data/images (one class each), saved with ``torch.save(model.state_dict())``, then
``export --weights ckpt.pt --labels five.txt --int8 --calib``; ``predict``, ``eval`` on a class-folder tree
and ``verify`` run on the bundle. Expected values: the labels the images were trained with, and the trained
torch model's own probabilities (computed here, not by the package's runtime).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxsim")

from mobilenet_edge.cli.app import main  # noqa: E402
from mobilenet_edge.core.images import Preprocessing, load  # noqa: E402

pytestmark = [pytest.mark.realdata, pytest.mark.slow]  # one export with --int8: ~20 s CPU, ~60 s on this shared 2-core box

FIVE = {"parrot": "parrot.jpg", "cat": "cat.bmp", "owl": "owl.jpg", "hot dog": "hot_dog.jpg", "dragonfly": "dragonfly.bmp"}
RES = 128


@pytest.fixture(scope="module")
def story(tmp_path_factory, images_dir, calib_dir):
    """(ckpt.pt, five.txt, the trained torch model, the training batch, the bundle folder, export's exit code)."""
    from torch import nn

    import mobilenet_edge.build.weights as W

    tmp = tmp_path_factory.mktemp("story")
    google = Path(W.__file__).parent / "data" / "mobilenet_v1_0.25_128_quant.tflite"
    model = W.load_weights(google).model  # 1001 classes, relu6, tf_same padding
    model.classifier = nn.Linear(model.classifier.in_features, len(FIVE))
    x = torch.from_numpy(np.stack([load(images_dir / f, Preprocessing(res=RES)) for f in FIVE.values()]))
    y = torch.arange(len(FIVE))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.eval()  # BN keeps Google's statistics (5 images are no batch to estimate them from)
    torch.manual_seed(0)
    for _ in range(15):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    torch.save(model.state_dict(), tmp / "ckpt.pt")
    (tmp / "five.txt").write_text("\n".join(FIVE) + "\n", encoding="utf-8")
    calib = tmp / "calib"  # 24 of the ImageNet calibration images with their (ImageNet-indexed) labels.csv
    calib.mkdir()
    rows = (calib_dir / "labels.csv").read_text(encoding="utf-8").splitlines()
    (calib / "labels.csv").write_text("\n".join(rows[:25]) + "\n", encoding="utf-8")
    for row in rows[1:25]:
        name = row.split(",")[0]
        os.symlink(calib_dir / name, calib / name)
    out = tmp / "export"
    code = main(["export", "--weights", str(tmp / "ckpt.pt"), "--labels", str(tmp / "five.txt"), "--padding", "tf_same",
                 "--res", str(RES), "--int8", "--calib", str(calib), "--out", str(out)])
    return tmp / "ckpt.pt", tmp / "five.txt", model, x, out / "mobilenet_v1_0.25_128", code


def test_export_writes_the_labels_to_labels_txt_manifest_and_onnx_metadata(story):
    *_, bundle, code = story
    assert code == 0
    assert (bundle / "labels.txt").read_text(encoding="utf-8").splitlines() == list(FIVE)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["labels"]["count"] == 5 and manifest["labels"]["source"] == "given"
    assert manifest["variant"]["num_classes"] == 5 and manifest["model_config"]["padding"] == "tf_same"
    assert manifest["weights"]["mapping"]["sources"]["padding"] == "given"
    # ImageNet indices in the calibration folder's labels.csv are not this 5-class model's ground truth
    assert manifest["quantization"]["evaluation_source"]["labels"] == "none"
    import onnx

    for f in ("model.onnx", "model.int8.onnx"):
        meta = {p.key: p.value for p in onnx.load(str(bundle / f)).metadata_props}
        assert json.loads(meta["labels"]) == list(FIVE)


def test_fp32_bundle_reproduces_the_trained_model_and_predict_prints_its_labels(story, images_dir, capsys):
    _, _, model, x, bundle, _ = story
    with torch.no_grad():
        want = torch.softmax(model(x), 1).numpy()
    assert list(want.argmax(1)) == list(range(5))  # trained on these: each image is its own class
    capsys.readouterr()
    assert main(["predict", str(bundle), *(str(images_dir / f) for f in FIVE.values()), "--json", "--top-k", "5"]) == 0
    rows = json.loads(capsys.readouterr().out)
    for row, truth, p in zip(rows, FIVE, want):
        assert row["top_k"][0]["label"] == truth
        got = {e["index"]: e["score"] for e in row["top_k"]}
        np.testing.assert_allclose([got[i] for i in range(5)], p, atol=1e-4)


def test_int8_predict_prints_one_of_the_five_labels_and_verify_passes(story, images_dir, capsys):
    *_, bundle, _ = story
    capsys.readouterr()
    assert main(["predict", str(bundle), str(images_dir / "parrot.jpg"), "--int8", "--top-k", "1"]) == 0
    text = capsys.readouterr().out  # one table, one row: the top-1
    assert sum(label in text for label in FIVE) == 1, text
    assert main(["verify", str(bundle)]) == 0


def test_eval_on_class_folders_named_by_the_labels_with_a_symlink_loop(story, images_dir, tmp_path, capsys):
    *_, bundle, _ = story
    root = tmp_path / "val"
    for label, f in FIVE.items():
        (root / label).mkdir(parents=True)
        os.symlink(images_dir / f, root / label / f)
    os.symlink(root, root / "again")  # a symlink to its own folder: every image must still count once
    capsys.readouterr()
    assert main(["eval", str(bundle), str(root), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 5 and res["top1"] == 1.0  # each image is in the folder of the label it was trained with
    assert res["ground_truth"] == "class folders named by the model's labels"
    assert main(["eval", str(bundle), str(root)]) == 0
    assert "ground truth: class folders named by the model's labels" in capsys.readouterr().out


@pytest.mark.parametrize("text, code, said", [
    ("parrot\ncat\nowl\nhot dog\n", 2, "--labels gives 4 labels but the model has 5 classes"),
    ("parrot\ncat\n\nowl\nhot dog\n", 1, "label 3 (line 3) is empty"),
    ("parrot\ncat\nowl\ncat\ndragonfly\n", 1, "label 'cat' appears twice (lines 2 and 4)"),
])
def test_bad_labels_are_one_line_and_write_nothing(story, tmp_path, capsys, text, code, said):
    ckpt = story[0]
    (tmp_path / "l.txt").write_text(text, encoding="utf-8")
    capsys.readouterr()
    got = main(["export", "--weights", str(ckpt), "--labels", str(tmp_path / "l.txt"), "--padding", "tf_same",
                "--res", str(RES), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert got == code and said in err, err
    assert [line for line in err.splitlines() if "error" in line] == [line for line in err.splitlines() if said in line]
    assert not (tmp_path / "o").exists()
