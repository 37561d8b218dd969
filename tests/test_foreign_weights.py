"""State dicts of other PyTorch MobileNet V1 code (issue #18 part 3) and their bad input.

Expected values: the blog checkpoint's own logits stored beside it (../shared/data/checkpoints, computed by
the original module), and for the other layouts the logits of small MobileNet V1 modules written here in
plain torch (their own forward, not ours), with random weights and non-trivial BN statistics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from mobilenet_edge.build.weights import load_weights  # noqa: E402
from mobilenet_edge.build.weights.module import load_module  # noqa: E402
from mobilenet_edge.cli.app import main  # noqa: E402
from mobilenet_edge.core.errors import UsageError, WeightsError  # noqa: E402

TABLE1 = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


def _ch(c: int, alpha: float) -> int:
    return max(int(c * alpha), 8)


class BlogBlock(nn.Module):
    """The blog's block: Sequential(dw conv (bias), BN, act, pw conv (bias), BN, act) as `depthwise_layer`."""

    def __init__(self, cin, cout, stride, act):
        super().__init__()
        self.depthwise_layer = nn.Sequential(
            nn.Conv2d(cin, cin, 3, stride, 1, groups=cin), nn.BatchNorm2d(cin), act(),
            nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout), act())

    def forward(self, x):
        return self.depthwise_layer(x)


class BlogMobileNet(nn.Module):
    """The layout of ../shared/data/checkpoints/README.md: conv1/bn1, dw_s1..dw_s6, dw_x5 applied five times,
    dw_s7, dw_s8, average pool, fc; convs with bias, symmetric padding 1, BN eps 1e-5."""

    def __init__(self, alpha=1.0, classes=1000, act=nn.ReLU):
        super().__init__()
        c = [_ch(32, alpha)] + [_ch(o, alpha) for o, _ in TABLE1]
        self.conv1 = nn.Conv2d(3, c[0], 3, 2, 1)
        self.bn1 = nn.BatchNorm2d(c[0])
        self.act = act()
        strides = [s for _, s in TABLE1]
        for i, j in enumerate(range(6)):
            setattr(self, f"dw_s{i + 1}", BlogBlock(c[j], c[j + 1], strides[j], act))
        self.dw_x5 = BlogBlock(c[6], c[7], 1, act)
        self.dw_s7 = BlogBlock(c[11], c[12], 2, act)
        self.dw_s8 = BlogBlock(c[12], c[13], 1, act)
        self.fc = nn.Linear(c[13], classes)

    def forward(self, x):
        x = self.act(self.bn1(self.conv1(x)))
        for i in range(1, 7):
            x = getattr(self, f"dw_s{i}")(x)
        for _ in range(5):
            x = self.dw_x5(x)
        x = self.dw_s8(self.dw_s7(x))
        return self.fc(x.mean((2, 3)))


class FoldedMobileNet(nn.Module):
    """BN folded into the convs (conv bias, no BN), ReLU, one flat Sequential `features` + `classifier`."""

    def __init__(self, alpha=0.25, classes=7):
        super().__init__()
        c = [_ch(32, alpha)] + [_ch(o, alpha) for o, _ in TABLE1]
        layers = [nn.Conv2d(3, c[0], 3, 2, 1), nn.ReLU()]
        for j, (_, s) in enumerate(TABLE1):
            layers += [nn.Conv2d(c[j], c[j], 3, s, 1, groups=c[j]), nn.ReLU(), nn.Conv2d(c[j], c[j + 1], 1), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c[-1], classes)

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and biases, and BN statistics that make every BN do something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / m.weight[0].numel()) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model.eval()


def _x(res: int, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, res, res, generator=torch.Generator().manual_seed(1))


def _max_diff(a: nn.Module, b: nn.Module, res: int) -> float:
    x = _x(res)
    with torch.no_grad():
        return float((a(x) - b(x)).abs().max())


# ---------------------------------------------------------------------------------------- the blog checkpoint


@pytest.mark.realdata
def test_blog_checkpoint_reproduces_its_stored_logits_at_224_and_160(data_dir):
    ckpt = data_dir / "checkpoints" / "seed_blog_mobilenet.pt"
    io = np.load(data_dir / "checkpoints" / "seed_blog_mobilenet_io.npz")
    w = load_weights(ckpt)
    assert (w.config["alpha"], w.config["num_classes"]) == (1.0, 1000)  # README: alpha 1.0 channels, 1000 classes
    # README: ReLU, symmetric padding, BN eps 1e-5, dw_x5 shared by the five 512-channel layers, convs with bias
    m = w.mapping
    assert (m["activation"], m["padding"], m["bn_eps"]) == ("relu", "symmetric", 1e-5)
    assert m["shared_blocks"] == {"dw_x5": 5} and m["conv_bias_folded"] == 27
    with torch.no_grad():
        for res in (224, 160):
            got = w.model(torch.from_numpy(io[f"x{res}"])).numpy()
            np.testing.assert_allclose(got, io[f"logits{res}"], atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------------------- other layouts


def test_blog_layout_at_alpha_025_saved_as_pt_loads_exactly(tmp_path):
    blog = _randomize(BlogMobileNet(alpha=0.25, classes=10))
    torch.save(blog.state_dict(), tmp_path / "blog.pt")
    w = load_weights(tmp_path / "blog.pt")
    assert (w.config["alpha"], w.config["num_classes"]) == (0.25, 10)
    assert _max_diff(w.model, blog, 96) < 1e-4


def test_folded_bn_generic_layout_uses_pytorch_defaults_and_says_so(tmp_path):
    folded = _randomize(FoldedMobileNet(alpha=0.25, classes=7))
    torch.save(folded.state_dict(), tmp_path / "folded.pth")
    w = load_weights(tmp_path / "folded.pth")
    assert w.config["num_classes"] == 7 and w.mapping["batch_norm"].startswith("folded")
    assert "assumed" in w.mapping["sources"]["activation"]
    assert _max_diff(w.model, folded, 64) < 1e-4


@pytest.mark.parametrize("act, want", [(nn.ReLU, "relu"), (nn.ReLU6, "relu6")])
def test_in_memory_module_conventions_are_found_by_running_it(act, want):
    blog = _randomize(BlogMobileNet(alpha=0.25, classes=5, act=act), seed=2)
    w = load_module(blog)
    assert w.config["activation"] == want and w.config["padding"] == "symmetric"
    assert w.mapping["shared_blocks"] == {} and w.mapping["layout"].startswith("module")  # unrolled by the trace
    assert _max_diff(w.model, blog, 128) < 1e-4


# ---------------------------------------------------------------------------------------- bad input


def _resnet_like() -> nn.Module:
    """A ResNet-18-style stem and first block (conv1 7x7, bn1, layer1.0.*, fc) in plain torch layers."""
    m = nn.Module()
    m.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    m.bn1 = nn.BatchNorm2d(64)
    m.layer1 = nn.Sequential(nn.Module())
    m.layer1[0].conv1 = nn.Conv2d(64, 64, 3, 1, 1, bias=False)
    m.layer1[0].bn1 = nn.BatchNorm2d(64)
    m.fc = nn.Linear(64, 1000)
    return m


def _blog_sd(alpha=0.25, classes=10) -> dict:
    return _randomize(BlogMobileNet(alpha=alpha, classes=classes)).state_dict()


def _cases() -> dict:
    sd = _blog_sd()
    missing = {k: v for k, v in sd.items() if not k.startswith("dw_s8.")}  # a whole block gone
    extra = dict(sd)
    fc_w, fc_b = extra.pop("fc.weight"), extra.pop("fc.bias")
    extra.update({f"dw_s9.{k[6:]}": v for k, v in sd.items() if k.startswith("dw_s8.")})  # a 14th block
    extra.update({"fc.weight": fc_w, "fc.bias": fc_b})
    narrow = dict(sd)
    narrow["fc.weight"] = torch.zeros(10, 128)  # alpha 0.25 gives 256 features
    return {
        "resnet": (_resnet_like().state_dict(), "conv1.weight (64, 3, 7, 7)"),
        "missing": (missing, "fc.weight (10, 256)"),
        "extra": (extra, "dw_s9.depthwise_layer.0.weight (256, 1, 3, 3)"),
        "classifier": (narrow, "fc.weight takes 128 features"),
    }


@pytest.mark.parametrize("case", ["resnet", "missing", "extra", "classifier"])
def test_not_a_mobilenet_is_one_line_naming_the_tensor_exit_1_no_file(case, tmp_path, capsys):
    sd, named = _cases()[case]
    torch.save(sd, tmp_path / f"{case}.pt")
    with pytest.raises(WeightsError, match=named.replace("(", r"\(").replace(")", r"\)")):
        load_weights(tmp_path / f"{case}.pt")
    out = tmp_path / "out"
    code = main(["export", "--weights", str(tmp_path / f"{case}.pt"), "--res", "64", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert [line for line in err if named in line], err
    assert len([line for line in err if "error" in line.lower()]) == 1
    assert not out.exists()


def test_blog_layout_missing_block_names_expected_and_found(tmp_path):
    sd = {k: v for k, v in _blog_sd().items() if not k.startswith("dw_s8.")}
    torch.save(sd, tmp_path / "m.pt")
    with pytest.raises(WeightsError) as e:
        load_weights(tmp_path / "m.pt")
    msg = str(e.value)
    assert "missing" in msg and "(256, 1, 3, 3)" in msg and "fc.weight" in msg  # expected dw of block 13, found fc


def test_alpha_given_that_does_not_fit_is_a_usage_error(tmp_path):
    torch.save(_blog_sd(alpha=0.25), tmp_path / "b.pt")
    with pytest.raises(UsageError, match=r"--alpha 0.5 does not fit .*conv1.weight has shape \(8, 3, 3, 3\)"):
        load_weights(tmp_path / "b.pt", alpha=0.5)
    assert main(["export", "--weights", str(tmp_path / "b.pt"), "--alpha", "0.5", "--res", "64",
                 "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_conventions_refused_for_checkpoints_that_carry_a_config(tmp_path):
    from mobilenet_edge.build.model import MobileNetV1
    from mobilenet_edge.build.weights import save_checkpoint

    model = MobileNetV1(alpha=0.25, num_classes=3).eval()
    save_checkpoint(model, tmp_path / "ours.safetensors")
    with pytest.raises(UsageError, match="carries its own config"):
        load_weights(tmp_path / "ours.safetensors", activation="relu")
    torch.save(model.state_dict(), tmp_path / "plain.pt")  # no config: the conventions are the user's to give
    assert load_weights(tmp_path / "plain.pt", padding="tf_same").config["padding"] == "tf_same"


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pt_with_code_is_refused_before_mapping(tmp_path):
    torch.save({"conv1.weight": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError, match="refusing to load evil.pt"):
        load_weights(Path(tmp_path / "evil.pt"))


def test_export_bundle_takes_an_in_memory_module_and_labels(tmp_path):
    """What the Python API passes through: ``ExportOptions(weights=module, labels=[...])``."""
    pytest.importorskip("onnxsim")
    import json

    from mobilenet_edge.build.export import ExportOptions, export_bundle

    blog = _randomize(BlogMobileNet(alpha=0.25, classes=3, act=nn.ReLU6), seed=3)
    res = export_bundle(ExportOptions(weights=blog, res=64, labels=["a", "b", "c"], out=tmp_path))
    bundle = res["bundle"]
    assert (bundle / "labels.txt").read_text().split() == ["a", "b", "c"]
    m = json.loads((bundle / "manifest.json").read_text())
    assert m["weights"]["source"] == "module" and m["model_config"]["activation"] == "relu6"
    with pytest.raises(UsageError, match="--labels gives 2 labels but the model has 3 classes"):
        export_bundle(ExportOptions(weights=blog, res=64, labels=["a", "b"], out=tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_classifier_registered_before_the_features_is_still_the_classifier(tmp_path):
    folded = _randomize(FoldedMobileNet(alpha=0.25, classes=4))
    sd = folded.state_dict()
    first = {k: v for k, v in sd.items() if k.startswith("classifier.")}
    torch.save({**first, **{k: v for k, v in sd.items() if k not in first}}, tmp_path / "fc_first.pt")
    assert _max_diff(load_weights(tmp_path / "fc_first.pt").model, folded, 64) < 1e-4
