"""The builder and the model: torchvision as the oracle, the explicit VGG-19, the heads, the errors."""

import pytest
import torch
import torchvision
from torch import nn

from vggedu import VGG19, VGG_CONFIGS, ConfigError, count_parameters, make_layers, vgg
from vggedu.models import LRN_ALPHA, LRN_BETA, LRN_K, LRN_SIZE, lrn_krizhevsky

TORCHVISION = {"A": "vgg11", "B": "vgg13", "D": "vgg16", "E": "vgg19"}


def _outputs_equal(a: nn.Module, b: nn.Module, x: torch.Tensor) -> bool:
    a.eval(), b.eval()
    with torch.no_grad():
        return torch.equal(a(x), b(x))


@pytest.mark.slow
# Every column torchvision has, with and without batch norm between them (two 138M-parameter models
# per case: four cases, not eight, keep the suite within its 5 minutes).
@pytest.mark.parametrize("name, batch_norm", [("A", False), ("B", True), ("D", False), ("E", True)])
def test_torchvision_oracle(name, batch_norm):
    torch.manual_seed(0)
    ours = vgg(name, batch_norm=batch_norm)
    builder = getattr(torchvision.models, TORCHVISION[name] + ("_bn" if batch_norm else ""))
    with torch.device("meta"):  # its own random weights would be overwritten: allocate, do not draw them
        theirs = builder(weights=None)
    theirs.to_empty(device="cpu")
    n_ours = sum(p.numel() for p in ours.parameters())
    assert n_ours == sum(p.numel() for p in theirs.parameters()) == count_parameters(name, batch_norm=batch_norm)
    # Both directions, strictly: same names, same shapes, nothing left over.
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)  # 32x32 is enough to pass through every weight
    assert _outputs_equal(ours, theirs, x)
    torch.nn.init.normal_(theirs.classifier[6].weight)  # change theirs, then load it back into ours
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert _outputs_equal(ours, theirs, x)


def test_parameter_counts_reproduce_table_2():
    # Table 2 of the paper, in millions: A, A-LRN, B, C, D, E.
    millions = {name: round(count_parameters(name) / 1e6) for name in VGG_CONFIGS}
    assert millions == {"A": 133, "A-LRN": 133, "B": 133, "C": 134, "D": 138, "E": 144}
    assert count_parameters("E") == 143_667_240
    assert count_parameters("D") == 138_357_544
    assert count_parameters("C") == 133_638_952


@pytest.mark.slow
def test_explicit_vgg19_is_configuration_e():
    torch.manual_seed(0)
    explicit, built = VGG19(), vgg("E")
    assert sum(p.numel() for p in explicit.parameters()) == 143_667_240
    built.load_state_dict(explicit.state_dict(), strict=True)
    explicit.load_state_dict(built.state_dict(), strict=True)
    assert _outputs_equal(explicit, built, torch.randn(1, 3, 32, 32))  # 32x32 passes through every weight


@pytest.mark.parametrize("name", list(VGG_CONFIGS))
def test_cifar_head_gives_logits_for_every_configuration(name):
    model = vgg(name, head="cifar", num_classes=10, batch_norm=True, width=0.125).eval()
    with torch.no_grad():
        assert model(torch.randn(3, 3, 32, 32)).shape == (3, 10)


def test_cifar_head_is_global_average_pooling_on_large_inputs():
    model = vgg("A", head="cifar", num_classes=10, width=0.125).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = model.features(x)
        assert feats.shape[-2:] == (2, 2)
        pooled = model.avgpool(feats).flatten(1)
        assert torch.allclose(pooled, feats.mean(dim=(2, 3)))


def test_width_scales_every_convolution():
    model = vgg("D", width=0.25, head="cifar", num_classes=10)
    outs = [m.out_channels for m in model.features if isinstance(m, nn.Conv2d)]
    assert outs == [16, 16, 32, 32, 64, 64, 64, 128, 128, 128, 128, 128, 128]
    assert model.classifier[0].in_features == 128


def test_config_c_builds_1x1_convolutions():
    convs = [m for m in make_layers("C") if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs].count((1, 1)) == 3
    assert all(c.padding == (c.kernel_size[0] // 2,) * 2 for c in convs)


def test_lrn_follows_krizhevsky():
    # b = a / (k + alpha * sum over 5 neighbouring channels of a^2)^beta, Krizhevsky et al. (2012)
    assert (LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K) == (5, 1e-4, 0.75, 2.0)
    torch.manual_seed(0)
    a = torch.randn(1, 8, 3, 3) * 30
    expected = torch.empty_like(a)
    for i in range(8):
        lo, hi = max(0, i - 2), min(7, i + 2)
        expected[:, i] = a[:, i] / (2 + 1e-4 * (a[:, lo : hi + 1] ** 2).sum(1)) ** 0.75
    assert torch.allclose(lrn_krizhevsky()(a), expected, rtol=1e-5)
    assert any(isinstance(m, nn.LocalResponseNorm) for m in make_layers("A-LRN"))


def test_inits():
    torch.manual_seed(0)
    kaiming = vgg("A", head="cifar", num_classes=10, width=0.5)
    conv = kaiming.features[3]  # conv2_1: 32 -> 64 channels, fan_out = 64 * 9
    assert conv.weight.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.1)
    paper = vgg("A", head="cifar", num_classes=10, width=0.5, init="paper")
    weights = torch.cat([m.weight.flatten() for m in paper.modules() if isinstance(m, (nn.Conv2d, nn.Linear))])
    assert weights.std().item() == pytest.approx(0.1, rel=0.02)  # variance 10^-2 (Section 3.1)
    assert all((m.bias == 0).all() for m in paper.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    small = vgg("A", head="cifar", num_classes=10, width=0.5, init="paper-0.01")
    weights = torch.cat([m.weight.flatten() for m in small.modules() if isinstance(m, (nn.Conv2d, nn.Linear))])
    assert weights.std().item() == pytest.approx(0.01, rel=0.02)  # the other reading: standard deviation 10^-2
    # Glorot two ways, on conv2_1 (32 -> 64 channels, 3x3): PyTorch's 2 / (fan_in + fan_out), Caffe's 1 / fan_in.
    fan_in, fan_out = 32 * 9, 64 * 9
    glorot = vgg("A", head="cifar", num_classes=10, width=0.5, init="glorot").features[3].weight
    caffe = vgg("A", head="cifar", num_classes=10, width=0.5, init="caffe-xavier").features[3].weight
    assert glorot.var().item() == pytest.approx(2 / (fan_in + fan_out), rel=0.05)
    assert caffe.var().item() == pytest.approx(1 / fan_in, rel=0.05)
    assert caffe.abs().max().item() <= (3 / fan_in) ** 0.5  # uniform, bounded by sqrt(3 / fan_in)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(config="F"), ConfigError, r"choose one of 'A', 'A-LRN', 'B', 'C', 'D', 'E'"),
        (dict(config="A", width=0), ValueError, "width must be a positive number"),
        (dict(config="A", width=-1.0), ValueError, "width must be a positive number"),
        (dict(config="A", num_classes=0), ValueError, "num_classes must be a positive integer"),
        (dict(config="A", head="resnet"), ValueError, r"unknown head 'resnet'; choose one of 'imagenet', 'cifar'"),
        (dict(config="A", init="xavier"), ValueError, r"unknown init 'xavier'; choose one of 'kaiming', 'paper'"),
    ],
)
def test_bad_arguments_get_clear_errors(kwargs, error, match):
    config = kwargs.pop("config")
    with pytest.raises(error, match=match):
        vgg(config, **kwargs)


@pytest.fixture(scope="module")
def small_model():
    return vgg("A", head="cifar", num_classes=10, width=0.125).eval()


@pytest.mark.parametrize(
    "shape, match",
    [
        ((2, 1, 32, 32), "takes 3 input channels, got 1"),
        ((2, 3, 31, 31), "at least 32x32"),
        ((2, 3, 224, 16), "at least 32x32"),
        ((3, 32, 32), r"x.unsqueeze\(0\)"),
    ],
)
def test_bad_inputs_are_caught_before_any_layer(small_model, shape, match):
    with pytest.raises(ValueError, match=match):
        small_model(torch.randn(*shape))


def test_vgg_says_what_its_features_need():
    from torch import nn

    from vggedu import VGG

    with pytest.raises(ValueError, match=r"VGG needs features with at least one Conv2d.*make_layers\('D'\)"):
        VGG(nn.Sequential(nn.MaxPool2d(2), nn.ReLU()))
    with pytest.raises(TypeError, match=r"as an nn.Sequential.*got list"):
        VGG([nn.Conv2d(3, 8, 3)])
