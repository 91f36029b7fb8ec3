"""The arithmetic: receptive fields, the 3x3 argument, parameters, MACs and FLOPs."""

import pytest
import torch

from vggedu import (
    VGG_CONFIGS,
    activation_memory,
    count_flops,
    count_macs,
    count_parameters,
    layer_stats,
    stack_weights,
    stacked_receptive_field,
    vgg,
)


def test_stacked_3x3_receptive_field_is_2n_plus_1():
    assert [stacked_receptive_field(n) for n in range(1, 6)] == [3, 5, 7, 9, 11]
    assert stacked_receptive_field(1, kernel_size=7) == 7


def test_three_3x3_against_one_7x7():
    c = 64
    three, one = stack_weights(3, 3, c), stack_weights(1, 7, c)
    assert (three, one) == (27 * c * c, 49 * c * c)
    assert round(100 * (1 - three / one)) == 45  # 45% fewer weights ...
    assert round(100 * (one / three - 1)) == 81  # ... or the 7x7 has 81% more (the paper's phrasing)


def test_vgg19_receptive_fields():
    rows = {r.name: r for r in layer_stats("E")}
    assert rows["conv1_1"].receptive_field == 3
    assert rows["conv1_2"].receptive_field == 5
    assert rows["pool1"].receptive_field == 6
    assert rows["conv5_4"].receptive_field == 252
    assert rows["pool5"].receptive_field == 268
    assert rows["pool5"].jump == 32
    assert rows["pool5"].output_size == 7


def _receptive_field_by_gradient(model, size):
    """Which input pixels change the centre output unit: measured, not derived."""
    x = torch.zeros(1, 1, size, size, requires_grad=True)
    y = model(x)
    y[0, 0, y.shape[-2] // 2, y.shape[-1] // 2].backward()
    rows = (x.grad[0, 0].abs().sum(1) > 0).nonzero()
    return int(rows.max() - rows.min() + 1)


def test_receptive_field_matches_a_measurement():
    # Linear stand-in (no ReLU, avg-pool, all-positive weights) so every path contributes.
    layers = []
    for spec in ["conv3-1", "conv3-1", "maxpool", "conv3-1", "conv1-1", "maxpool", "conv3-1"]:
        if spec == "maxpool":
            layers.append(torch.nn.AvgPool2d(2))
        else:
            k = int(spec[4])
            conv = torch.nn.Conv2d(1, 1, k, padding=k // 2, bias=False)
            torch.nn.init.constant_(conv.weight, 1.0)
            layers.append(conv)
    expected = layer_stats(["conv3-1", "conv3-1", "maxpool", "conv3-1", "conv1-1", "maxpool", "conv3-1"], input_size=64)
    assert _receptive_field_by_gradient(torch.nn.Sequential(*layers), 64) == expected[-4].receptive_field == 20


@pytest.mark.parametrize("name", list(VGG_CONFIGS))
@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize(
    "head, width, num_classes", [("imagenet", 1.0, 1000), ("cifar", 1.0, 10), ("cifar", 0.25, 10), ("imagenet", 0.5, 7)]
)
def test_analytic_parameters_equal_the_model(name, batch_norm, head, width, num_classes):
    kwargs = dict(batch_norm=batch_norm, head=head, width=width, num_classes=num_classes)
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = vgg(name, **kwargs)
    assert count_parameters(name, **kwargs) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, gmacs", [("vgg11", 7.61), ("vgg13", 11.31), ("vgg16", 15.47), ("vgg19", 19.63)])
def test_macs_match_torchvision_gflops_column(name, gmacs):
    # torchvision's "GFLOPS" column for VGG counts multiply-accumulates.
    assert round(count_macs(name) / 1e9, 2) == gmacs
    assert count_flops(name) == 2 * count_macs(name)


def test_activation_memory_counts_outputs():
    rows = layer_stats("D", input_size=224)
    assert rows[0].activations == 64 * 224 * 224
    assert activation_memory("D", batch_size=2) == 2 * 4 * sum(r.activations for r in rows)
    with_bn = layer_stats("D", input_size=224, batch_norm=True)
    assert with_bn[0].activations == 2 * rows[0].activations


def test_macs_scale_with_input_area():
    conv_macs = lambda size: sum(r.macs for r in layer_stats("D", input_size=size) if r.kind == "conv")  # noqa: E731
    assert conv_macs(224) == 49 * conv_macs(32)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(input_size=16), "at least 32"),
        (dict(head="resnet"), "'imagenet', 'cifar'"),
        (dict(width=0), "positive"),
        (dict(num_classes=0), "positive"),
    ],
)
def test_analysis_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        layer_stats("D", **bad)


@pytest.mark.parametrize("name", list(VGG_CONFIGS))
def test_flops_equal_pytorchs_flop_counter(name):
    """count_flops (pure arithmetic) against torch.utils.flop_counter on the model itself, at 224x224."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        model = vgg(name)
        x = torch.empty(1, 3, 224, 224)
    with FlopCounterMode(display=False) as counter:
        model(x)
    assert counter.get_total_flops() == count_flops(name)


def _measured_macs(module, x):
    """Multiply-accumulates of every convolution in ``module`` on ``x``, counted with forward hooks."""
    total = []

    def count(conv, inputs, output):
        total.append(output.numel() * conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1])

    handles = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        module(x)
    for h in handles:
        h.remove()
    return sum(total)


@pytest.mark.parametrize(
    "config, size, kwargs",
    [
        ("A", 256, {}),
        ("A", 288, {"width": 0.25}),
        ("A", 64, {"head": "cifar", "num_classes": 10, "width": 0.25}),
        ("E", 96, {"head": "cifar", "num_classes": 10, "width": 0.125}),
    ],
)
def test_dense_macs_match_the_converted_network(config, size, kwargs):
    from vggedu.analysis import count_dense_macs
    from vggedu.evaluation import fully_convolutional

    model_kwargs = {k: v for k, v in kwargs.items()}
    fcn = fully_convolutional(vgg(config, **model_kwargs).eval())
    assert count_dense_macs(config, size, **kwargs) == _measured_macs(fcn, torch.zeros(1, 3, size, size))


def test_dense_macs_at_the_training_size_are_one_pass_and_grow_with_the_map():
    from vggedu.analysis import count_dense_macs

    assert count_dense_macs("D", 224) == count_macs("D")
    cifar = {"head": "cifar", "num_classes": 10, "width": 0.25}
    assert count_dense_macs("A", 32, **cifar) == count_macs("A", input_size=32, **cifar)
    fc = sum(r.macs for r in layer_stats("D") if r.kind == "fc")
    conv = sum(r.macs for r in layer_stats("D", input_size=384) if r.kind != "fc")
    assert count_dense_macs("D", 384) == conv + 36 * fc  # pool5 12x12, the 7x7 window fits 6x6 times
    with pytest.raises(ValueError, match="smaller than one window"):
        count_dense_macs("D", 200)
