"""quantize/weight_grid.py, quantize/bias_correction.py, quantize/recipes.py and the research code of
benchmarks/research/equalize.py (imported through a sys.path insert of benchmarks/): fp32 equivalence of cross-layer equalization (<= 1e-4, issue #10), exact
grid-aligned weights through ORT, bias correction against an independent numpy computation, recipe plans.

Expected values come from independent computations written here (numpy convolutions of the tiny
models, ORT's documented symmetric scale ``max|r| / 127``), never from the code under test."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from mobilenet_edge.core.sessions import ort_session  # noqa: E402
from mobilenet_edge.quantize import bias_correction as bc  # noqa: E402
from mobilenet_edge.quantize import recipes  # noqa: E402
from mobilenet_edge.quantize import weight_grid as wg  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # research code is not in the package
from research import equalize as eq  # noqa: E402


def _grid_weights(rng, shape, *, step=0.02, zp=None):
    """Google-like weights: (q - zp) * step with q uniform in [1, 255] (narrow-range uint8)."""
    zp = int(rng.integers(60, 200)) if zp is None else zp
    q = rng.integers(1, 256, size=shape)
    return ((q - zp) * step).astype(np.float32)


def tiny_model(rng, *, grid: bool = True, res: int = 12, c0: int = 4, c1: int = 6, classes: int = 5):
    """input (N,3,res,res) -> Conv 3x3 s2 -> Clip(0,6) -> depthwise 3x3 -> Clip(0,6) -> pointwise -> Clip(0,6)
    -> depthwise 3x3 -> Clip(0,6) -> GlobalAveragePool -> Flatten -> Gemm (transB=1): the MobileNet pattern."""

    def w(shape, step):
        return _grid_weights(rng, shape, step=step) if grid else (rng.standard_normal(shape) * step * 40).astype(np.float32)

    inits = {
        "w0": w((c0, 3, 3, 3), 0.02), "b0": (rng.standard_normal(c0) * 0.5).astype(np.float32),
        "w1": w((c0, 1, 3, 3), 0.03), "b1": (rng.standard_normal(c0) * 0.5).astype(np.float32),
        "w2": w((c1, c0, 1, 1), 0.01), "b2": (rng.standard_normal(c1) * 0.5).astype(np.float32),
        "w3": w((c1, 1, 3, 3), 0.03), "b3": (rng.standard_normal(c1) * 0.5).astype(np.float32),
        "wf": w((classes, c1), 0.01), "bf": (rng.standard_normal(classes) * 0.1).astype(np.float32),
        "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["input", "w0", "b0"], ["c0"], name="stem", kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Clip", ["c0", "lo", "hi"], ["a0"], name="stem_relu6"),
        helper.make_node("Conv", ["a0", "w1", "b1"], ["c1"], name="dw1", kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=c0),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["a1"], name="dw1_relu6"),
        helper.make_node("Conv", ["a1", "w2", "b2"], ["c2"], name="pw1", kernel_shape=[1, 1]),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["a2"], name="pw1_relu6"),
        helper.make_node("Conv", ["a2", "w3", "b3"], ["c3"], name="dw2", kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=c1),
        helper.make_node("Clip", ["c3", "lo", "hi"], ["a3"], name="dw2_relu6"),
        helper.make_node("GlobalAveragePool", ["a3"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], name="classifier", transB=1),
    ]
    g = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, res, res])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 7
    onnx.checker.check_model(m)
    return m


def run(model, x):
    s = ort_session(model.SerializeToString())
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def inputs(rng, n=4, res=12, scale=1.0):
    return (rng.uniform(-1, 1, size=(n, 3, res, res)) * scale).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# weight grids
# ----------------------------------------------------------------------------------------------


def test_weight_grid_recovers_the_step_of_a_uint8_grid():
    rng = np.random.default_rng(0)
    w = _grid_weights(rng, (16, 8, 1, 1), step=0.0123)
    assert wg.weight_grid(w) == pytest.approx(0.0123, rel=1e-6)
    # a single 3x3 depthwise channel: the smallest gap between magnitudes is a multiple of the step
    ch = np.array([-75, -120, 9, 33, 60, -3, 102, 48, 15], np.float32) * np.float32(0.0123)
    s = wg.weight_grid(ch)
    assert s is not None and np.allclose(ch / s, np.round(ch / s), atol=1e-3)


def test_weight_grid_survives_float32_rounding_of_large_integers():
    """Every integer in [-127, 127] times a step, stored in float32: the smallest gap between two large
    magnitudes is then off by ~1e-5 of a step, 1.5e-3 of a step after 127 levels (more than the 1e-3
    tolerance). The step must still be found (it was not, before the least-squares refinement came first)."""
    step = 0.002183880
    k = np.tile(np.arange(-127, 128), 64)
    w = k.astype(np.float32) * np.float32(step)
    s = wg.weight_grid(w)
    assert s == pytest.approx(step, rel=1e-6)
    assert np.abs(w / s - k).max() < 1e-3


def test_weight_grid_is_none_for_float_weights():
    rng = np.random.default_rng(1)
    assert wg.weight_grid(rng.standard_normal((32, 16)).astype(np.float32)) is None
    assert wg.weight_grid(np.zeros((4, 4), np.float32)) is None


@pytest.mark.parametrize("reduce_range", [False, True])
def test_grid_overrides_make_ort_weights_exact(tmp_path, reduce_range):
    """Quantized with ORT and the overrides, every channel whose integer range fits in [-127, 127] ([-64, 64]
    with reduce_range) dequantizes to exactly the fp32 weight; ORT's default scale (max|w| / 127) does not."""
    qmax = 64 if reduce_range else 127
    sys.modules.setdefault("torch", None)
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if sys.modules.get("torch", 0) is None:
        del sys.modules["torch"]
    rng = np.random.default_rng(2)
    m = tiny_model(rng)
    for init in m.graph.initializer:  # depthwise weights with small integer ranges (|k| <= 40): fit in 7 bits too
        if init.name in ("w1", "w3"):
            k = rng.integers(-40, 41, size=tuple(init.dims))
            init.CopyFrom(numpy_helper.from_array((k * 0.03).astype(np.float32), init.name))
    src = tmp_path / "m.onnx"
    onnx.save(m, src)
    x = inputs(rng, 8)

    class R(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": x[i : i + 1]} for i in range(len(x))])

        def get_next(self):
            return next(self.it, None)

    def dequantized_weights(overrides):
        dst = tmp_path / f"q{len(overrides)}.onnx"
        extra = {"WeightSymmetric": True, "ActivationSymmetric": False}
        if overrides:
            extra["TensorQuantOverrides"] = overrides
        quantize_static(str(src), str(dst), R(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        extra_options=extra)
        q = onnx.load(str(dst))
        inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
        out = {}
        for n in q.graph.node:
            if n.op_type == "DequantizeLinear" and n.input[0].endswith("_quantized") and n.output[0] != n.input[0]:
                base = n.input[0][: -len("_quantized")]
                if base in ("w0", "w1", "w2", "w3", "wf"):
                    scale = inits[n.input[1]].astype(np.float64)
                    shape = (-1,) + (1,) * (inits[n.input[0]].ndim - 1)
                    out[base] = inits[n.input[0]].astype(np.float64) * scale.reshape(shape)
        return out

    ov, rec = wg.grid_weight_overrides(m, reduce_range=reduce_range)
    assert rec["tensors_on_grid"] == rec["tensors"] == 5
    fp = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in m.graph.initializer}
    aligned, default = dequantized_weights(ov), dequantized_weights({})
    exact_checked, default_err = 0, 0.0
    for name, dq in aligned.items():
        s = wg.weight_grid(fp[name])
        for c in range(fp[name].shape[0]):
            if np.abs(np.round(fp[name][c] / s)).max() <= qmax:
                np.testing.assert_allclose(dq[c], fp[name][c], rtol=0, atol=1e-6 * np.abs(fp[name][c]).max())
                exact_checked += 1
                default_err = max(default_err, float(np.abs(default[name][c] - fp[name][c]).max() / s))
    assert exact_checked >= (5 if qmax == 127 else 1)
    assert default_err > 0.05  # ORT's own scale misses the grid by a visible fraction of a step


# ----------------------------------------------------------------------------------------------
# cross-layer equalization
# ----------------------------------------------------------------------------------------------


def test_equalization_pairs_are_conv_relu6_depthwise():
    m = tiny_model(np.random.default_rng(3))
    pairs = eq.equalization_pairs(m)
    assert [(p["a"].name, p["b"].name) for p in pairs] == [("stem", "dw1"), ("pw1", "dw2")]
    assert all(p["hi"] == 6.0 for p in pairs)


@pytest.mark.parametrize("grid", [True, False])
@pytest.mark.parametrize("mode", ["weights", "activations"])
def test_equalized_model_is_equivalent_in_fp32(grid, mode):
    rng = np.random.default_rng(4)
    m = tiny_model(rng, grid=grid)
    x_cal = inputs(rng, 6, scale=3.0)
    act_max = eq.activation_channel_max(m, x_cal) if mode == "activations" else None
    e, rec = eq.cross_layer_equalize(m, act_max=act_max)
    assert rec["pairs"] == 2 and rec["mode"] == mode
    onnx.checker.check_model(e)
    for scale in (1.0, 5.0, 50.0):  # 50: many activations saturate at 6, where ReLU6's bound matters
        x = inputs(rng, 4, scale=scale)
        ref = run(m, x)
        assert np.abs(run(e, x) - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())


def test_equalization_needs_the_per_channel_bound():
    """Scaling across a plain Clip(0, 6) changes the function once activations saturate: the per-channel
    Min bound is what keeps the equalized graph equivalent (the test above would catch its removal)."""
    rng = np.random.default_rng(5)
    m = tiny_model(rng)
    e, _ = eq.cross_layer_equalize(m)
    naive = onnx.ModelProto.FromString(e.SerializeToString())
    for n in naive.graph.node:  # Min(x, 6 / s) -> Min(x, 6): a scalar-bound ReLU6 after scaling
        if n.op_type == "Min":
            b = next(i for i in naive.graph.initializer if i.name == n.input[1])
            b.CopyFrom(numpy_helper.from_array(np.full(numpy_helper.to_array(b).shape, 6.0, np.float32), b.name))
    x = inputs(rng, 4, scale=50.0)
    ref = run(m, x)
    assert np.abs(run(e, x) - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
    assert np.abs(run(naive, x) - ref).max() > 1e-2


def test_equalization_leaves_the_input_model_alone():
    m = tiny_model(np.random.default_rng(6))
    before = m.SerializeToString()
    eq.cross_layer_equalize(m)
    assert m.SerializeToString() == before


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.export
def test_equalized_reference_model_is_equivalent_on_real_images(tmp_path, reference_dir, calib_dir):
    pytest.importorskip("torch")
    from mobilenet_edge.build.export import ExportOptions, export_bundle
    from mobilenet_edge.core.images import Preprocessing, expand_paths, load

    b = export_bundle(ExportOptions(alpha=0.25, res=128, out=tmp_path,
                                    weights=reference_dir / "mobilenet_v1_0.25_128_quant.tflite"))["bundle"]
    m = onnx.load(str(b / "model.onnx"))
    paths = expand_paths([calib_dir])[:16]
    x = np.stack([load(p, Preprocessing(res=128)) for p in paths])
    e, rec = eq.cross_layer_equalize(m, act_max=eq.activation_channel_max(m, x[:8]))
    assert rec["pairs"] == 13  # stem -> depthwise 1, and pointwise k -> depthwise k+1 for the 12 first of 13 blocks
    rng = np.random.default_rng(7)
    for xs in (x[8:], rng.uniform(-1, 1, size=(4, 3, 128, 128)).astype(np.float32)):
        assert np.abs(run(e, xs) - run(m, xs)).max() <= 1e-4


# ----------------------------------------------------------------------------------------------
# bias correction
# ----------------------------------------------------------------------------------------------


def test_local_bias_correction_matches_numpy(tmp_path):
    """b += sum_kernel(W) @ E[x - fake_quant(x)] for the pointwise conv, with the int8 model's own scale."""
    sys.modules.setdefault("torch", None)
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if sys.modules.get("torch", 0) is None:
        del sys.modules["torch"]
    rng = np.random.default_rng(8)
    m = tiny_model(rng)
    src, dst = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(m, src)
    x = inputs(rng, 6)

    class R(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": x[i : i + 1]} for i in range(len(x))])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(src), str(dst), R(), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=False,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    q = onnx.load(str(dst))
    corrected, rec = eq.bias_correct(m, q, x, local=True)
    assert rec["layers"] == 5
    # independent: the pointwise conv's input is a1 (the dw1 ReLU6 output); its quantizer in the int8 model
    qi = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    qn = next(n for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in ("a1", "c1"))
    scale, zp = float(qi[qn.input[1]]), int(qi[qn.input[2]])
    mid = onnx.ModelProto.FromString(m.SerializeToString())
    mid.graph.output.append(helper.make_empty_tensor_value_info("a1"))
    a1 = ort_session(mid.SerializeToString()).run(["a1"], {"input": x})[0]
    fq = (np.clip(np.round(a1 / scale) + zp, 0, 255) - zp) * scale
    e = (a1.astype(np.float64) - fq).mean(axis=(0, 2, 3))
    w2 = numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == "w2")).astype(np.float64)
    expect = numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == "b2")) + w2.sum(axis=(2, 3)) @ e
    got = numpy_helper.to_array(next(i for i in corrected.graph.initializer if i.name == "b2"))
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# recipes
# ----------------------------------------------------------------------------------------------


def test_recipe_plans():
    m = tiny_model(np.random.default_rng(9))
    plain = recipes.plan(m, "plain")
    assert plain.extra_options() == {} and plain.nodes_to_exclude == ()
    fid = recipes.plan(m, recipes.DEFAULT_RECIPE)
    assert recipes.DEFAULT_RECIPE == "fidelity"
    assert fid.nodes_to_exclude == ("stem", "dw1")
    assert fid.extra_options()["OpTypesToExcludeOutputQuantization"] == ["Gemm"]
    assert set(fid.tensor_quant_overrides) == {"w0", "w1", "w2", "w3", "wf"}
    assert fid.record["float_output_of"] == ["classifier"]
    grid = recipes.plan(tiny_model(np.random.default_rng(9), grid=False), "grid")
    assert grid.tensor_quant_overrides == {} and grid.record["weight_grid"]["tensors_on_grid"] == 0
    with pytest.raises(ValueError, match="recipe must be one of plain, grid, fidelity, qat-ranges, got 'best'"):
        recipes.get_recipe("best")


def _tensor(model, name, x):
    m = onnx.ModelProto.FromString(model.SerializeToString())
    m.graph.output.append(helper.make_empty_tensor_value_info(name))
    return ort_session(m.SerializeToString()).run([name], {"input": x})[0]


def test_weight_bias_correction_matches_numpy():
    """b += (W - W_q) E[x] with W_q = clip(round(W / (rmax / 127)), -127, 127) * rmax / 127 (ORT's symmetric rule)."""
    rng = np.random.default_rng(10)
    m = tiny_model(rng)
    ov, _ = wg.grid_weight_overrides(m)
    x = inputs(rng, 5, scale=2.0)
    corrected, rec = bc.weight_bias_correct(m, ov, [x[:2], x[2:]])  # streamed in two batches
    assert rec["layers"] == 5
    fp = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in m.graph.initializer}
    got = {i.name: numpy_helper.to_array(i) for i in corrected.graph.initializer}
    # pointwise conv w2 (6, 4, 1, 1) on a1
    scale = np.array([abs(c["rmax"]) for c in ov["w2"]]) / 127
    wq = np.clip(np.round(fp["w2"] / scale[:, None, None, None]), -127, 127) * scale[:, None, None, None]
    ea1 = _tensor(m, "a1", x).astype(np.float64).mean(axis=(0, 2, 3))
    np.testing.assert_allclose(got["b2"], fp["b2"] + (fp["w2"] - wq)[:, :, 0, 0] @ ea1, rtol=1e-5, atol=1e-6)
    # classifier Gemm (transB=1) on the flattened pool output
    scale = np.array([abs(c["rmax"]) for c in ov["wf"]]) / 127
    wq = np.clip(np.round(fp["wf"] / scale[:, None]), -127, 127) * scale[:, None]
    ef = _tensor(m, "f", x).astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(got["bf"], fp["bf"] + (fp["wf"] - wq) @ ef, rtol=1e-5, atol=1e-6)


def test_weight_bias_correction_is_zero_for_exact_weights():
    rng = np.random.default_rng(11)
    m = tiny_model(rng)
    for init in m.graph.initializer:  # every integer within [-127, 127]: grid-aligned scales are exact
        if init.name.startswith("w"):
            k = rng.integers(-127, 128, size=tuple(init.dims))
            init.CopyFrom(numpy_helper.from_array((k * 0.004).astype(np.float32), init.name))
    ov, rec = wg.grid_weight_overrides(m)
    assert rec["channels_exact"] == rec["channels"]
    corrected, _ = bc.weight_bias_correct(m, ov, inputs(rng, 3))
    for a, b in zip(m.graph.initializer, corrected.graph.initializer):
        np.testing.assert_allclose(numpy_helper.to_array(b), numpy_helper.to_array(a), atol=1e-6)


def test_recipe_apply_corrects_only_quantized_layers():
    rng = np.random.default_rng(12)
    m = tiny_model(rng)
    corrected, p = recipes.apply(m, "fidelity", inputs(rng, 4))
    assert p.record["weight_bias_correction"]["layers"] == 3  # pw1, dw2, classifier (stem and dw1 stay float)
    b = {i.name: numpy_helper.to_array(i) for i in corrected.graph.initializer}
    a = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    assert np.array_equal(a["b0"], b["b0"]) and np.array_equal(a["b1"], b["b1"])
    same, p_plain = recipes.apply(m, "plain", None)
    assert same is m and p_plain.record["float_nodes"] == []


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.export
def test_fidelity_recipe_beats_plain_on_reference_weights(tmp_path, reference_dir, calib_dir):
    """Google's weights lie on one uint8 grid per tensor (data README), so the recipe finds all 28 (27 Conv +
    the classifier); and with exact weights the logits SQNR must beat ORT's plain path by a wide margin."""
    pytest.importorskip("torch")
    import json

    from mobilenet_edge.build.export import ExportOptions, export_bundle
    from mobilenet_edge.quantize.options import QuantOptions
    from mobilenet_edge.quantize.pipeline import quantize_bundle

    b = export_bundle(ExportOptions(alpha=0.5, res=160, out=tmp_path,
                                    weights=reference_dir / "mobilenet_v1_0.5_160_quant.tflite"))["bundle"]
    sq = {}
    for recipe in ("plain", "fidelity"):
        rec = quantize_bundle(b, calib=calib_dir, options=QuantOptions(recipe=recipe), progress=False, force=True)
        sq[recipe] = rec["fidelity"]["sqnr_db"]["mean"]
    q = json.loads((b / "manifest.json").read_text())["quantization"]
    assert q["options"]["recipe"] == "fidelity" and q["recipe"]["recipe"]["name"] == "fidelity"
    assert q["recipe"]["weight_grid"]["tensors_on_grid"] == q["recipe"]["weight_grid"]["tensors"] == 28
    assert len(q["recipe"]["float_nodes"]) == 2 and q["ort_arguments"]["nodes_to_exclude"] == q["recipe"]["float_nodes"]
    assert sq["fidelity"] > sq["plain"] + 6.0, sq


def test_float_first_overrides_the_recipe(tmp_path):
    """--float-first N: the first N Conv nodes in graph order stay float (their weights are plain float
    initializers in the int8 model), the rest read int8 weights through DequantizeLinear; recorded."""
    from mobilenet_edge.quantize.options import QuantOptions
    from mobilenet_edge.quantize.stages import quantize_model

    rng = np.random.default_rng(4)
    m = tiny_model(rng)
    src = tmp_path / "fp32.onnx"
    onnx.save(m, str(src))
    convs = [n.name for n in m.graph.node if n.op_type == "Conv"]  # stem, dw1, pw1, dw2
    x = inputs(rng, n=8)
    for n_float in (0, 3):
        dst = tmp_path / f"int8_{n_float}.onnx"
        rec = quantize_model(src, dst, x, QuantOptions(float_first=n_float, samples=None), reduce_range=False)
        assert rec["recipe"]["float_nodes"] == convs[:n_float]
        assert rec["recipe"]["recipe"]["float_first"] == n_float and rec["recipe"]["recipe"]["requested"] == "fidelity"
        q = onnx.load(str(dst))
        inits = {i.name for i in q.graph.initializer}
        producer = {o: n.op_type for n in q.graph.node for o in n.output}
        # graph order of the int8 model's Conv nodes is the fp32 one (ORT keeps Conv nodes in QDQ form)
        weight_src = [("float" if n.input[1] in inits else producer.get(n.input[1]))
                      for n in q.graph.node if n.op_type == "Conv"]
        assert weight_src == ["float"] * n_float + ["DequantizeLinear"] * (len(convs) - n_float), weight_src
    from mobilenet_edge.core.errors import UsageError

    with pytest.raises(UsageError, match="float_first must be >= 0"):
        QuantOptions(float_first=-1)
