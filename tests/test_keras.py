"""Keras .h5 import checked against Keras itself (JAX backend, no TensorFlow), then the same file by name
through a local HTTP server: downloaded (trust on first use), exported, parity-checked and quantized
with the default recipe (float weights through the whole pipeline).

Keras runs in its own interpreter (it is ~700 MB with jaxlib): $MOBILENET_EDGE_KERAS_PYTHON, set by
.ci/keras.sh, or this interpreter when it has keras. Skipped otherwise (CI=true: fails)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("h5py")
pytest.importorskip("pooch")

from _http_server import Server  # noqa: E402

from mobilenet_edge.build.weights import download as D  # noqa: E402
from mobilenet_edge.build.weights import load_weights  # noqa: E402
from mobilenet_edge.cli import main  # noqa: E402

ALPHA, RES = 0.5, 128
ORACLE = Path(__file__).with_name("_keras_oracle.py")


def keras_python() -> str:
    py = os.environ.get("MOBILENET_EDGE_KERAS_PYTHON")
    if py:
        return py
    if importlib.util.find_spec("keras") is not None:
        return sys.executable
    msg = "no Keras: set MOBILENET_EDGE_KERAS_PYTHON (bash .ci/keras.sh makes that interpreter)"
    if os.environ.get("CI") == "true" and os.environ.get("MOBILENET_EDGE_KERAS_REQUIRED") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="module")
def keras_model(tmp_path_factory):
    """(h5 path, input NHWC, Keras logits) for a Keras MobileNet with randomised BN statistics."""
    py = keras_python()
    d = tmp_path_factory.mktemp("keras")
    x = np.random.default_rng(0).uniform(-1, 1, (3, RES, RES, 3)).astype(np.float32)
    np.save(d / "x.npy", x)
    h5, logits = d / "m.h5", d / "logits.npy"
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    r = subprocess.run([py, str(ORACLE), str(ALPHA), str(RES), str(d / "x.npy"), str(h5), str(logits)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "backend jax" in r.stdout
    return h5, x, np.load(logits)


@pytest.mark.slow
def test_keras_h5_matches_keras_logits(keras_model):
    import torch

    h5, x, want = keras_model
    w = load_weights(h5)
    assert (w.config["alpha"], w.config["num_classes"], w.config["bn_eps"]) == (ALPHA, 1000, 1e-3)
    assert w.config["padding"] == "tf_same" and len(w.labels) == 1000 and w.labels[0] != "background"
    with torch.no_grad():
        got = w.model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()
    assert np.abs(got - want).max() <= 1e-4, np.abs(got - want).max()
    assert (got.argmax(1) == want.argmax(1)).all()


@pytest.mark.slow
def test_keras_by_name_downloads_exports_and_quantizes(keras_model, tmp_path, monkeypatch, capsys, calib_dir):
    h5 = keras_model[0]
    server = Server()
    try:
        monkeypatch.setenv(D.ENV_URL, server.url + "/m")
        monkeypatch.setenv(D.ENV_CACHE, str(tmp_path / "cache"))
        server.routes[f"/m/mobilenet/mobilenet_5_0_{RES}_tf.h5"] = (h5.read_bytes(), "ok")
        out = tmp_path / "out"
        code = main(["export", "--weights", "keras", "--alpha", str(ALPHA), "--res", str(RES), "--int8",
                     "--calib", str(calib_dir), "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 0, err
        assert "trust on first use" in err
    finally:
        server.stop()
    m = json.loads((out / f"mobilenet_v1_0.50_{RES}" / "manifest.json").read_text())
    reg = m["weights"]["registry"]
    assert (m["weights"]["source"], reg["name"], reg["trained"], reg["origin"]) == \
        ("keras-h5", f"keras/0.5/{RES}", "float", "download")
    assert m["export"]["parity"]["max_abs_diff"] <= 1e-4
    q = m["quantization"]
    assert q["recipe"]["recipe"]["name"] == "fidelity" and "model.int8.onnx" in m["files"]
    # float-trained weights lie on no int8 grid: the grid alignment step finds nothing to keep exact
    assert q["recipe"]["weight_grid"]["tensors_on_grid"] == 0
    assert q["fidelity"]["images"] > 0 and q["fidelity"]["sqnr_db"]["mean"] > 0
