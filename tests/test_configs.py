"""Table 1 as data: every column, its aliases, and the paper's layer counts."""

import pytest

from vggedu import VGG_CONFIGS, ConfigError, Layer, config_name, count_weight_layers, parse_layer, resolve_config


def test_six_columns_in_table_order():
    assert list(VGG_CONFIGS) == ["A", "A-LRN", "B", "C", "D", "E"]
    assert len(VGG_CONFIGS) == 6


@pytest.mark.parametrize("name, weight_layers", [("A", 11), ("A-LRN", 11), ("B", 13), ("C", 16), ("D", 16), ("E", 19)])
def test_weight_layers_as_in_table_1(name, weight_layers):
    assert count_weight_layers(name) == weight_layers
    assert sum(layer.kind == "maxpool" for layer in VGG_CONFIGS[name]) == 5


@pytest.mark.parametrize(
    "alias, name",
    [
        (11, "A"),
        (13, "B"),
        (16, "D"),
        (19, "E"),
        ("vgg16", "D"),
        ("VGG19", "E"),
        ("a-lrn", "A-LRN"),
        ("d", "D"),
        ("16", "D"),
    ],
)
def test_aliases(alias, name):
    assert config_name(alias) == name
    assert VGG_CONFIGS[alias] is VGG_CONFIGS[name]
    assert alias in VGG_CONFIGS


def test_config_c_has_three_1x1_convolutions_and_a_lrn_one_lrn():
    one_by_one = [str(layer) for layer in VGG_CONFIGS["C"] if layer.kind == "conv" and layer.kernel_size == 1]
    assert one_by_one == ["conv1-256", "conv1-512", "conv1-512"]
    assert [str(layer) for layer in VGG_CONFIGS["A-LRN"]][:3] == ["conv3-64", "LRN", "maxpool"]
    # C and D differ exactly where C has 1x1 convolutions.
    diff = [(c, d) for c, d in zip(VGG_CONFIGS["C"], VGG_CONFIGS["D"]) if c != d]
    assert [(str(c), str(d)) for c, d in diff] == [("conv1-256", "conv3-256"), ("conv1-512", "conv3-512")] + [
        ("conv1-512", "conv3-512")
    ]


def test_layers_print_in_the_papers_notation():
    assert " ".join(map(str, VGG_CONFIGS["A"])) == (
        "conv3-64 maxpool conv3-128 maxpool conv3-256 conv3-256 maxpool "
        "conv3-512 conv3-512 maxpool conv3-512 conv3-512 maxpool"
    )
    assert parse_layer("conv1-512") == Layer("conv", 1, 512)
    assert resolve_config(["conv3-8", "M"]) == (Layer("conv", 3, 8), Layer("maxpool", 2))


@pytest.mark.parametrize("bad", ["F", "vgg15", 17, True, None, 3.5, "", []])
def test_unknown_configuration_names_the_choices(bad):
    with pytest.raises(ConfigError, match=r"'A', 'A-LRN', 'B', 'C', 'D', 'E'"):
        resolve_config(bad)


def test_unknown_configuration_is_a_key_error_too():
    with pytest.raises(KeyError):
        VGG_CONFIGS["Z"]
    assert "Z" not in VGG_CONFIGS


@pytest.mark.parametrize("bad", ["conv2-64", "conv3-0", "pool", 64])
def test_unreadable_layer(bad):
    with pytest.raises(ConfigError, match="conv3-64"):
        parse_layer(bad)


def test_rendered_table_1_lists_every_layer():
    from vggedu import render_table_1

    text = render_table_1()
    assert text.splitlines()[0].split() == ["A", "|", "A-LRN", "|", "B", "|", "C", "|", "D", "|", "E"]
    assert text.count("conv1-512") == 2 and text.count("conv1-256") == 1 and text.count("LRN") == 2  # header + cell
    assert text.count("maxpool") == 5


def test_the_shallow_5x5_net_is_b_with_each_pair_of_3x3_layers_as_one_5x5():
    from vggedu import DERIVED_CONFIGS, count_parameters, layer_stats, vgg

    shallow = DERIVED_CONFIGS["B-5x5"]
    assert config_name("b-5x5") == "B-5x5" and "B-5x5" not in VGG_CONFIGS and list(VGG_CONFIGS)[-1] == "E"
    assert count_weight_layers("B-5x5") == 8 and count_weight_layers("B") == 13
    assert [str(layer) for layer in shallow if layer.kind == "conv"] == [
        "conv5-64",
        "conv5-128",
        "conv5-256",
        "conv5-512",
        "conv5-512",
    ]
    # Same receptive field as B at the end of every block (Section 2.3: two 3x3 see what one 5x5 sees).
    fields = {name: [r.receptive_field for r in layer_stats(name) if r.kind == "maxpool"] for name in ("B", "B-5x5")}
    assert fields["B-5x5"] == fields["B"] == [6, 16, 36, 76, 156]
    # Parameters: 25 C_in C_out per 5x5 layer against 9 (C_in C_out + C_out^2) for B's pair.
    convs = [r for r in layer_stats("B-5x5") if r.kind == "conv"]
    pairs = [(3, 64), (64, 128), (128, 256), (256, 512), (512, 512)]
    assert [r.params for r in convs] == [25 * i * o + o for i, o in pairs]
    kw = dict(head="cifar", num_classes=10, width=0.125)
    assert sum(p.numel() for p in vgg("B-5x5", **kw).parameters()) == count_parameters("B-5x5", **kw)
    assert count_parameters("B-5x5") > count_parameters("B")  # wider kernels cost more weights, not fewer
