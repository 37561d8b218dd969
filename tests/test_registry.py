"""The weights registry as data, `weights list`, names on the command line and the offline-first default
of `export` (Google's three reference files shipped as package data)."""

from __future__ import annotations

import hashlib
import json

import pytest

from mobilenet_edge.build.weights import download as D
from mobilenet_edge.build.weights.registry import ALPHAS, REGISTRY, RESOLUTIONS, SOURCES, lookup
from mobilenet_edge.cli import main

REFERENCE = ("mobilenet_v1_0.25_128_quant.tflite", "mobilenet_v1_0.5_160_quant.tflite",
             "mobilenet_v1_0.75_192_quant.tflite")


def run(capsys, *args):
    code = main(list(args))
    o = capsys.readouterr()
    return code, o.out, o.err


@pytest.fixture
def empty_cache(monkeypatch, tmp_path):
    """A fresh cache and no reachable server (port 9, discard: connection refused)."""
    monkeypatch.setenv(D.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.setenv(D.ENV_URL, "http://127.0.0.1:9/none")
    return tmp_path


def test_registry_covers_the_grid_for_every_source():
    assert set(SOURCES) == {"google-quant", "google-float", "keras"}
    keys = {(e.source, e.alpha, e.res) for e in REGISTRY}
    assert len(REGISTRY) == len(keys) == 3 * 16
    assert keys == {(s, a, r) for s in SOURCES for a in (1.0, 0.75, 0.5, 0.25) for r in (224, 192, 160, 128)}
    assert len({e.url for e in REGISTRY}) == 48
    # the URL forms the TF-slim page and Keras' applications/mobilenet.py give
    g = "https://storage.googleapis.com/download.tensorflow.org/models/mobilenet_v1_2018_08_02/"
    assert lookup("google-quant", 0.5, 160).url == g + "mobilenet_v1_0.5_160_quant.tgz"
    assert lookup("google-float", 1.0, 224).url == g + "mobilenet_v1_1.0_224.tgz"
    assert lookup("google-float", 1.0, 224).member == "mobilenet_v1_1.0_224.tflite"
    assert lookup("keras", 0.75, 128).url == \
        "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/mobilenet_7_5_128_tf.h5"
    # TensorFlow's workspace.bzl pins the two 1.0/224 archives
    assert lookup("google-quant", 1.0, 224).archive_sha256.startswith("d32432d2")
    assert lookup("google-float", 1.0, 224).archive_sha256.startswith("2fadeabb")
    # TF-slim table (2018_08_02 revision): 1.0/224 float 70.9/89.9, quant 70.1/88.9; 0.25/128 quant 39.5
    assert (lookup("google-float", 1.0, 224).top1, lookup("google-float", 1.0, 224).top5) == (70.9, 89.9)
    assert (lookup("google-quant", 1.0, 224).top1, lookup("google-quant", 1.0, 224).top5) == (70.1, 88.9)
    assert lookup("google-quant", 0.25, 128).top1 == 39.5


def test_shipped_files_are_the_reference_files(reference_dir):
    """Package data holds exactly Google's three reference files and their LICENSE, byte for byte."""
    shipped = sorted(p.name for p in D.SHIPPED_DIR.iterdir())
    assert shipped == sorted([*REFERENCE, "LICENSE"])
    for name in (*REFERENCE, "LICENSE"):
        assert (D.SHIPPED_DIR / name).read_bytes() == (reference_dir / name).read_bytes()
    for name in REFERENCE:
        a, r = name.split("_")[2:4]
        e = lookup("google-quant", float(a), int(r))
        assert e.sha256 == hashlib.sha256((reference_dir / name).read_bytes()).hexdigest()
        assert D.shipped_path(e) == D.SHIPPED_DIR / name


def test_weights_list_json_and_table(capsys, empty_cache):
    code, out, _ = run(capsys, "weights", "list", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["cache"] == str(empty_cache / "cache" / "weights")
    rows = doc["entries"]
    assert len(rows) == 48 and {"source", "alpha", "res", "top1", "size", "cached", "shipped", "url"} <= set(rows[0])
    assert sorted(r["name"] for r in rows if r["shipped"]) == \
        ["google-quant/0.25/128", "google-quant/0.5/160", "google-quant/0.75/192"]
    assert not any(r["cached"] for r in rows)
    code, out, _ = run(capsys, "weights", "list", "--source", "keras")
    assert code == 0 and "keras/0.5/160" in out and "google-quant" not in out.split("\n", 2)[2]


@pytest.mark.parametrize("args, needle", [
    (("weights", "download", "google-qaunt"), "did you mean google-quant"),
    (("weights", "download", "keras/0.6/224"), "alpha 1, 0.75, 0.5, 0.25"),
    (("weights", "download", "keras/0.5/100"), "res 224, 192, 160, 128"),
    (("weights", "download"), "--all"),
    (("export", "--weights", "gogle-float", "--alpha", "0.5", "--res", "160"), "did you mean google-float"),
    (("export", "--weights", "google-quant", "--alpha", "0.6", "--res", "160"), "has no weights for alpha 0.6"),
    (("weights", "import", "keras-float", "-o", "x.safetensors"), "did you mean keras"),
])
def test_bad_names_one_line_exit_2(capsys, empty_cache, args, needle):
    code, _, err = run(capsys, *args)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_export_default_uses_the_shipped_file(capsys, empty_cache, images_dir):
    """The README's first command: Google's weights on a machine with no network and an empty cache;
    predict then says macaw for parrot.jpg."""
    out = empty_cache / "out"
    code, _, err = run(capsys, "export", "--alpha", "0.5", "--res", "160", "--out", str(out))
    assert code == 0, err
    m = json.loads((out / "mobilenet_v1_0.50_160" / "manifest.json").read_text())
    reg = m["weights"]["registry"]
    assert m["weights"]["source"] == "tflite" and m["weights"]["file"] == "mobilenet_v1_0.5_160_quant.tflite"
    assert reg["name"] == "google-quant/0.5/160" and reg["origin"] == "shipped" and reg["res_matches"] is True
    assert "warning" not in err
    code, stdout, err = run(capsys, "predict", str(out / "mobilenet_v1_0.50_160"), str(images_dir / "parrot.jpg"),
                            "--json")
    assert code == 0, err
    assert "macaw" in json.loads(stdout)[0]["top_k"][0]["label"]


def test_export_other_res_warns_once_and_manifest_says_so(capsys, empty_cache):
    out = empty_cache / "out"
    code, _, err = run(capsys, "export", "--alpha", "0.25", "--res", "96", "--out", str(out))
    assert code == 0, err
    assert err.count("trained at res 128, exporting at res 96") == 1
    reg = json.loads((out / "mobilenet_v1_0.25_96" / "manifest.json").read_text())["weights"]["registry"]
    assert (reg["trained_res"], reg["res_matches"]) == (128, False)


def test_export_default_offline_without_file_is_one_line(capsys, empty_cache):
    code, _, err = run(capsys, "export", "--alpha", "1.0", "--res", "224", "--out", str(empty_cache / "out"))
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "mobilenet-edge weights download google-quant/1.0/224" in err and "--weights random" in err
    assert "127.0.0.1:9" in err  # the URL it tried
    assert not (empty_cache / "out").exists()


def test_export_random_on_purpose_and_alpha_outside_the_grid(capsys, empty_cache):
    out = empty_cache / "out"
    code, _, err = run(capsys, "export", "--alpha", "0.35", "--res", "64", "--out", str(out))
    assert code == 1 and "no pretrained weights for alpha 0.35" in err and "--weights random" in err
    code, _, err = run(capsys, "export", "--alpha", "0.35", "--res", "64", "--weights", "random", "--out", str(out))
    assert code == 0, err
    assert json.loads((out / "mobilenet_v1_0.35_64" / "manifest.json").read_text())["weights"]["source"] == "random"


def test_weights_import_by_name(capsys, empty_cache):
    dst = empty_cache / "w.safetensors"
    code, out, err = run(capsys, "weights", "import", "google-quant", "--alpha", "0.25", "--res", "128",
                         "-o", str(dst), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["config"]["alpha"] == 0.25 and doc["source"]["file"] == "mobilenet_v1_0.25_128_quant.tflite"
    assert "google-quant/0.25/128" in err and "shipped" in err


def test_grid_axes():
    assert ALPHAS == (1.0, 0.75, 0.5, 0.25) and RESOLUTIONS == (224, 192, 160, 128)


@pytest.mark.slow
def test_bench_grid_uses_the_registry_per_point_and_marks_random(capsys, empty_cache, calib_dir):
    """With --calib each point gets Google's weights (0.25/128: the shipped file, and Google's own int8
    .tflite benched beside ours); a point outside the grid (alpha 0.35) falls back to random, marked."""
    pytest.importorskip("matplotlib")
    out = empty_cache / "grid"
    code, _, err = run(capsys, "bench", "--grid", "--alphas", "0.25,0.35", "--res", "128", "--calib", str(calib_dir),
                       "--runs", "1", "--warmup", "0", "--out", str(out))
    assert code == 0, err
    rows = json.loads((out / "grid.json").read_text())["results"]
    real = [r for r in rows if r["variant"] == "mobilenet_v1_0.25_128"]
    rand = [r for r in rows if r["variant"] == "mobilenet_v1_0.35_128"]
    assert real and rand
    assert all(r["weights"] == "mobilenet_v1_0.25_128_quant.tflite" and not r["weights_random"] for r in real)
    assert any("mobilenet_v1_0.25_128_quant" in r["model"] for r in real)  # Google's int8 file, benched too
    assert all(r["weights"] is None and r["weights_random"] for r in rand)
    assert err.count("mobilenet_v1_0.35_128: random weights (no pretrained weights for alpha 0.35") == 1


@pytest.mark.slow
def test_wheel_ships_the_three_reference_files(tmp_path):
    """The built wheel carries exactly the three .tflite files and their LICENSE as package data."""
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(tmp_path), str(root)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("mobilenet_edge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    data = sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("mobilenet_edge/build/weights/data/"))
    assert data == sorted([*REFERENCE, "LICENSE"])
