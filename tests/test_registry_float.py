"""`--weights google-float` end to end, from a local HTTP server: a float32 TF-slim-style .tflite (written
by tests/test_weights.py's flatbuffers builder from the hand-dequantized weights of Google's 0.25/128
reference file) packed in a .tgz like Google's, downloaded by name, exported and quantized with the
default recipe. Being the same weights in float, its model must equal the google-quant one's."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pooch")
litert = pytest.importorskip("ai_edge_litert.interpreter")

from _http_server import Server  # noqa: E402
from test_download import serve  # noqa: E402
from test_weights import float_tflite, small_tflite  # noqa: E402, F401 - fixtures

from mobilenet_edge.build.weights import download as D  # noqa: E402
from mobilenet_edge.build.weights.registry import lookup  # noqa: E402
from mobilenet_edge.cli import main  # noqa: E402
from mobilenet_edge.core.sessions import ort_session  # noqa: E402


@pytest.mark.slow
def test_google_float_by_name_equals_google_quant_in_fp32_and_quantizes(float_tflite, calib_dir, tmp_path,  # noqa: F811
                                                                         monkeypatch, capsys):
    server = Server()
    try:
        monkeypatch.setenv(D.ENV_URL, server.url + "/mirror")  # serve() puts files under /mirror/
        monkeypatch.setenv(D.ENV_CACHE, str(tmp_path / "cache"))
        serve(server, lookup("google-float", 0.25, 128), float_tflite.read_bytes())
        common = ["--alpha", "0.25", "--res", "128", "--int8", "--calib", str(calib_dir)]
        assert main(["export", "--weights", "google-float", *common, "--out", str(tmp_path / "f")]) == 0
        assert main(["export", "--weights", "google-quant", *common, "--out", str(tmp_path / "q")]) == 0
        err = capsys.readouterr().err
    finally:
        server.stop()
    assert "google-float/0.25/128: no published sha256" in err  # trust on first use, said once
    bf, bq = tmp_path / "f" / "mobilenet_v1_0.25_128", tmp_path / "q" / "mobilenet_v1_0.25_128"
    mf, mq = (json.loads((b / "manifest.json").read_text()) for b in (bf, bq))
    assert (mf["weights"]["registry"]["trained"], mf["weights"]["registry"]["origin"]) == ("float", "download")
    assert (mq["weights"]["registry"]["trained"], mq["weights"]["registry"]["origin"]) == ("qat", "shipped")
    x = np.random.default_rng(0).uniform(-1, 1, (4, 3, 128, 128)).astype(np.float32)
    yf, yq = (ort_session(b / "model.onnx").run(None, {"input": x})[0] for b in (bf, bq))
    assert np.abs(yf - yq).max() <= 1e-4
    for m in (mf, mq):  # the default recipe ran on both, with its fidelity report
        assert m["quantization"]["recipe"]["recipe"]["name"] == "fidelity"
        assert m["quantization"]["fidelity"]["images"] > 0
