"""mobilenet_edge.quantize.fidelity.fidelity on two hand-made ONNX "models" whose logits are known exactly."""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mobilenet_edge.core.images import Preprocessing
from mobilenet_edge.quantize.fidelity import NEAR_TIE_LOGIT, fidelity


def _logits_model(path, offset=None, *, classes: int = 3, flatten: bool = True):
    """(N, classes, 1, 1) float -> logits = the input values (+ a constant offset), as (N, classes)
    or, with ``flatten=False``, as (N, classes, 1, 1) (a conv head without Flatten, as in foreign models)."""
    nodes = [helper.make_node("Flatten" if flatten else "Identity", ["input"], ["flat"])]
    inits = []
    out = "flat"
    if offset is not None:
        inits.append(numpy_helper.from_array(np.asarray(offset, np.float32), "offset"))
        nodes.append(helper.make_node("Add", ["flat", "offset"], ["logits"]))
        out = "logits"
    shape = ["N", classes] if flatten else ["N", classes, 1, 1]
    g = helper.make_graph(nodes, "logits",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", classes, 1, 1])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, shape)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 7
    onnx.save(m, str(path))
    return path


def test_near_ties_and_agreement_from_known_logits(tmp_path):
    ref = _logits_model(tmp_path / "fp32.onnx")
    shift = np.array([0.0, 0.05, 0.0], np.float32)  # the "int8" model adds 0.05 to class 1
    test = _logits_model(tmp_path / "int8.onnx", shift)
    logits = np.array([
        [1.0, 0.97, 0.0],   # margin 0.03: near-tie, class 1 overtakes (1.02 > 1.0): a disagreement
        [1.0, 0.5, 0.0],    # margin 0.5: agrees
        [0.0, 0.2, 0.28],   # margin 0.08: near-tie, 0.25 < 0.28: agrees
        [2.0, 1.0, 1.95],   # margin 0.05: near-tie, agrees (class 1 is far)
        [0.3, 0.1, 0.0],    # margin 0.2: agrees
    ], np.float32)
    prep = Preprocessing(res=1, crop=1.0, mean=(0, 0, 0), std=(1, 1, 1))
    rep = fidelity(ref, test, logits.reshape(5, 3, 1, 1), prep)

    assert rep["images"] == 5
    assert rep["agreement_top1"] == 4 / 5
    assert rep["disagreements"] == ["#0"]
    nt = rep["near_ties"]
    assert nt["images"] == 3 and nt["disagreements"] == 1
    assert nt["margin_logit"] == NEAR_TIE_LOGIT
    (d,) = nt["disagreement_margins"]
    assert d["image"] == "#0" and math.isclose(d["margin"], 0.03, abs_tol=1e-6)
    # logits SQNR per image, computed here: 10 log10(|f|^2 / |shift|^2), mean and worst over images
    db = [10 * math.log10(float((f.astype(np.float64) ** 2).sum()) / 0.05**2) for f in logits]
    assert math.isclose(rep["sqnr_db"]["mean"], float(np.mean(db)), abs_tol=1e-3)
    assert math.isclose(rep["sqnr_db"]["worst"], min(db), abs_tol=1e-3)
    assert rep["sqnr_db"]["worst_image"] == f"#{int(np.argmin(db))}"
    assert rep["labelled"] == 0 and rep["fp32"] is None


def test_conv_head_logits_and_a_single_class(tmp_path):
    """(N, C, 1, 1) logits (no Flatten) are ranked like (N, C); a 1-class model has no near-ties."""
    prep = Preprocessing(res=1, crop=1.0, mean=(0, 0, 0), std=(1, 1, 1))
    x = np.array([[1.0, 0.97, 0.0], [1.0, 0.5, 0.0]], np.float32).reshape(2, 3, 1, 1)
    ref = _logits_model(tmp_path / "f.onnx", flatten=False)
    test = _logits_model(tmp_path / "q.onnx", np.array([0, 0.05, 0], np.float32).reshape(3, 1, 1), flatten=False)
    rep = fidelity(ref, test, x, prep)
    assert rep["agreement_top1"] == 0.5 and rep["near_ties"]["images"] == 1 and rep["near_ties"]["disagreements"] == 1

    one = _logits_model(tmp_path / "one.onnx", classes=1)
    rep = fidelity(one, one, np.ones((3, 1, 1, 1), np.float32), prep)
    assert rep["agreement_top1"] == 1.0 and rep["near_ties"]["images"] == 0
