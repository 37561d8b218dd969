"""Analytic counts (variants.py, no torch) against the issue's independently computed table and
paper Table 2; bad arguments."""

import pytest

from mobilenet_edge.core.variants import Variant, make_channels, parse_name, variant_name

# Issue #2 table (independently computed; paper Tables 6 and 7 round them), 1000 classes.
PARAMS = {1.0: 4_231_976, 0.75: 2_585_560, 0.5: 1_331_592, 0.25: 470_072}
MACS = {
    1.0: {224: 568_740_352, 192: 418_121_728, 160: 290_675_200, 128: 186_400_768},
    0.75: {224: 325_400_448, 192: 239_273_472, 160: 166_396_800, 128: 106_770_432},
    0.5: {224: 149_497_088, 192: 109_970_432, 160: 76_524_800, 128: 49_160_192},
    0.25: {224: 41_030_272, 192: 30_212_608, 160: 21_059_200, 128: 13_570_048},
}


@pytest.mark.parametrize("alpha", sorted(PARAMS))
@pytest.mark.parametrize("res", [224, 192, 160, 128])
def test_grid_counts_match_table(alpha, res):
    v = Variant(alpha, res)
    assert v.params == PARAMS[alpha]
    assert v.macs == MACS[alpha][res]


def test_paper_table6_rounding():
    # Paper Table 6: 1.0 -> 569M mult-adds / 4.2M params; 0.75 -> 325/2.6; 0.5 -> 149/1.3; 0.25 -> 41/0.5
    for alpha, macs_m, params_m in [(1.0, 569, 4.2), (0.75, 325, 2.6), (0.5, 149, 1.3), (0.25, 41, 0.5)]:
        v = Variant(alpha, 224)
        assert round(v.macs / 1e6) == macs_m
        assert round(v.params / 1e6, 1) == params_m


def test_table2_shares_at_224():
    # Paper Table 2 (3x3 conv MACs printed 1.19%, a transposition of 1.91%).
    expected = {
        "1x1 conv": (94.86, 74.59),
        "3x3 depthwise": (3.06, 1.06),
        "3x3 conv": (1.91, 0.02),
        "fc": (0.18, 24.33),
    }
    shares = Variant(1.0, 224).shares()
    for name, (macs_pct, params_pct) in expected.items():
        assert shares[name]["macs_pct"] == pytest.approx(macs_pct, abs=0.01)
        assert shares[name]["params_pct"] == pytest.approx(params_pct, abs=0.01)


def test_layer_shapes_follow_table1():
    layers = Variant(1.0, 224).layers()
    assert len(layers) == 1 + 26 + 2
    assert layers[0].output_shape == (112, 112, 32)
    # the last depthwise conv has stride 1 (the paper's typo says 2): 7x7 stays 7x7
    last_dw = [r for r in layers if r.kind == "dw"][-1]
    assert last_dw.stride == 1 and last_dw.input_shape == (7, 7, 1024) and last_dw.output_shape == (7, 7, 1024)
    assert layers[-2].input_shape == (7, 7, 1024)


def test_channels_tf_slim_rule():
    assert make_channels(32, 0.25) == 8
    assert make_channels(32, 0.1) == 8  # floor at 8
    assert make_channels(1024, 0.35) == 358  # int(358.4)
    assert Variant(0.5, 160).channels[-1] == 512


def test_odd_resolution_final_map():
    v = Variant(0.35, 200)
    assert v.layers()[-2].input_shape[:2] == (7, 7)  # ceil(200 / 32) = 7


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"alpha": 0}, "alpha must be > 0, got 0"),
        ({"alpha": -1}, "alpha must be > 0, got -1"),
        ({"res": 16}, "res must be >= 32, got 16"),
        ({"res": "abc"}, "res must be an integer >= 32, got 'abc'"),
        ({"num_classes": 0}, "num_classes must be an integer >= 1, got 0"),
    ],
)
def test_bad_arguments_raise_valueerror(kwargs, message):
    with pytest.raises(ValueError) as e:
        Variant(**kwargs)
    assert message in str(e.value)


def test_names():
    assert variant_name(0.5, 160) == "mobilenet_v1_0.50_160"
    assert Variant(1.0, 224).name == "mobilenet_v1_1.00_224"
    assert parse_name("mobilenet_v1_0.5_160_quant.tflite") == (0.5, 160)
    assert parse_name("photo.jpg") is None


def test_names_of_near_alphas_do_not_collide():
    """Issue #20 item 10: 0.504 and 0.496 both printed as 0.50 and shared the bundle folder of 0.5."""
    names = {a: variant_name(a, 160) for a in (0.5, 0.504, 0.496, 0.5 + 1e-12)}
    assert len(set(names.values())) == 4, names
    # the paper's grid keeps its two-decimal names (DESIGN.md, the committed results)
    assert [variant_name(a, 224) for a in (1.0, 0.75, 0.5, 0.25)] == [
        "mobilenet_v1_1.00_224", "mobilenet_v1_0.75_224", "mobilenet_v1_0.50_224", "mobilenet_v1_0.25_224"]
    assert names[0.504] == "mobilenet_v1_0.504_160" and names[0.496] == "mobilenet_v1_0.496_160"
    # the name gives back the exact alpha, in positional notation (no exponent in a folder name)
    for a in (0.504, 0.125, 1 / 3, 1e-5, 0.1 + 0.2, 2.0):
        name = variant_name(a, 128)
        assert "e" not in name.split("_")[2] and parse_name(name) == (a, 128), name
