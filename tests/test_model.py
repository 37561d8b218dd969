"""The torch model against the analytic counts (hypothesis over alpha/res) and paper Table 1 shapes."""

import pytest

torch = pytest.importorskip("torch")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mobilenet_edge.build.model import MobileNetV1, feature_shapes, tf_same_pads  # noqa: E402
from mobilenet_edge.core.variants import Variant  # noqa: E402


def measured_macs(model: torch.nn.Module, res: int) -> int:
    """Multiply-adds from the actual conv/linear shapes seen by forward hooks (batch 1)."""
    total = 0

    def conv_hook(m, inp, out):
        nonlocal total
        kh, kw = m.kernel_size
        total += out.numel() * (m.in_channels // m.groups) * kh * kw

    def fc_hook(m, inp, out):
        nonlocal total
        total += m.in_features * m.out_features

    hooks = []
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, torch.nn.Linear):
            hooks.append(m.register_forward_hook(fc_hook))
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, res, res))
    for h in hooks:
        h.remove()
    return total


def trainable_params(model) -> int:
    return sum(p.numel() for p in model.parameters())  # running stats are buffers, not parameters


@settings(max_examples=12, deadline=None)
@given(
    alpha=st.floats(min_value=0.05, max_value=1.5, allow_nan=False),
    res=st.integers(min_value=32, max_value=260),
    classes=st.integers(min_value=1, max_value=1001),
    padding=st.sampled_from(["symmetric", "tf_same"]),
)
def test_analytic_counts_match_torch(alpha, res, classes, padding):
    model = MobileNetV1(alpha=alpha, num_classes=classes, padding=padding)
    v = Variant(alpha, res, classes)
    assert trainable_params(model) == v.params
    assert measured_macs(model, res) == v.macs


def test_feature_shapes_at_224():
    model = MobileNetV1()
    expected = (
        [(1, 32, 112, 112), (1, 64, 112, 112), (1, 128, 56, 56), (1, 128, 56, 56), (1, 256, 28, 28),
         (1, 256, 28, 28)] + [(1, 512, 14, 14)] * 6 + [(1, 1024, 7, 7), (1, 1024, 7, 7)]
    )
    assert list(feature_shapes(model, 224)) == expected
    with torch.no_grad():
        assert tuple(model.eval()(torch.zeros(1, 3, 224, 224)).shape) == (1, 1000)


def test_blocks_are_distinct_and_convs_before_bn_have_no_bias():
    model = MobileNetV1()
    assert len(model.blocks) == 13
    ids = {id(b.pointwise[0].weight) for b in model.blocks}
    assert len(ids) == 13  # no weight sharing between the five 512-channel blocks
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def test_tf_same_pads_like_tensorflow():
    # TF 'SAME': total = max((ceil(n/s)-1)*s + k - n, 0), extra pixel at the end
    assert tf_same_pads(224, 3, 2) == (0, 1)
    assert tf_same_pads(225, 3, 2) == (1, 1)
    assert tf_same_pads(7, 3, 1) == (1, 1)
    assert tf_same_pads(10, 1, 1) == (0, 0)


def test_tf_same_matches_explicit_asymmetric_conv():
    """A tf_same stem equals a conv on an input padded only bottom/right (even side, stride 2)."""
    model = MobileNetV1(alpha=0.25, padding="tf_same").eval()
    x = torch.randn(1, 3, 64, 64)
    conv = model.stem[0]
    ref = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (0, 1, 0, 1)), conv.weight, stride=2)
    with torch.no_grad():
        got = model.stem[0](torch.nn.functional.pad(x, tf_pad := (0, 1, 0, 1)))
        full = model.stem(x)
        manual = model.stem[2](model.stem[1](ref))
    assert tf_pad and torch.allclose(got, ref)
    assert torch.allclose(full, manual, atol=1e-6)


def test_relu6_vs_relu_and_split_forward():
    m6 = MobileNetV1(alpha=0.25, activation="relu6").eval()
    m = MobileNetV1(alpha=0.25, activation="relu").eval()
    assert isinstance(m6.stem[2], torch.nn.ReLU6) and type(m.stem[2]) is torch.nn.ReLU
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        feats = m6.forward_features(x)
        assert feats.shape == (2, 256, 3, 3)
        assert m6.forward_head(feats, pre_logits=True).shape == (2, 256)
        assert torch.allclose(m6.forward_head(feats), m6(x))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"alpha": 0}, "alpha must be > 0, got 0"),
        ({"num_classes": 0}, "num_classes must be an integer >= 1, got 0"),
        ({"activation": "gelu"}, "activation must be one of"),
        ({"padding": "valid"}, "padding must be one of"),
    ],
)
def test_bad_model_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MobileNetV1(**kwargs)
