"""Notebook 09's transfer tools: layer features, the paper's descriptor, a linear probe, class halves."""

import numpy as np
import pytest
import torch

import vggedu
from vggedu.data import CIFAR10_CLASSES, CIFAR10Split
from vggedu.transfer import (
    SOURCE_CLASSES,
    TARGET_CLASSES,
    TRANSFER_LAYERS,
    class_subset,
    descriptor,
    labelled_subset,
    layer_features,
    linear_probe,
)

WIDTH = 0.125


def _net(column):
    torch.manual_seed(0)
    return vggedu.vgg(column, batch_norm=True, head="cifar", num_classes=10, width=WIDTH).eval()


@pytest.mark.parametrize("column", ["A", "B", "C", "D", "E"])
def test_every_layer_gives_one_vector_per_image_of_its_width(column):
    net = _net(column)
    x = torch.randn(3, 3, 32, 32)
    channels = {"pool1": 8, "pool2": 16, "pool3": 32, "pool4": 64, "pool5": 64, "fc6": 64, "fc7": 64}
    for layer in TRANSFER_LAYERS:
        assert layer_features(net, x, layer).shape == (3, channels[layer]), (column, layer)
    with pytest.raises(KeyError, match="no layer 'pool6'"):
        layer_features(net, x, "pool6")


@pytest.mark.parametrize("layer", ["pool3", "pool5", "fc7"])
def test_the_descriptor_at_the_training_size_is_the_layer_normalised(layer):
    net = _net("A")
    x = torch.randn(4, 3, 32, 32)
    expected = torch.nn.functional.normalize(layer_features(net, x, layer), dim=1)
    torch.testing.assert_close(descriptor(net, x, layer, sizes=(32,), flip=False), expected, rtol=1e-4, atol=1e-5)


def test_the_descriptor_is_unit_length_mirror_invariant_and_uses_every_size():
    net = _net("A")
    x = torch.randn(4, 3, 32, 32)
    d = descriptor(net, x, "fc7", sizes=(32, 64))
    torch.testing.assert_close(d.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(descriptor(net, x.flip(3), "fc7", sizes=(32, 64)), d, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(descriptor(net, x, "fc7", sizes=(32,)), d, atol=1e-3)  # 64 adds something
    with pytest.raises(ValueError, match="at least one test size"):
        descriptor(net, x, "fc7", sizes=())


def test_the_linear_probe_chooses_c_on_validation_and_separates_separable_features():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 5
    labels = rng.integers(0, 3, size=300)
    features = centres[labels] + rng.normal(size=(300, 8))
    probe = linear_probe(features[:200], labels[:200], features[200:], labels[200:], cs=(0.01, 1.0))
    assert probe["val_accuracy"] > 0.95 and probe["c"] in (0.01, 1.0) and set(probe["val_by_c"]) == {0.01, 1.0}
    assert probe["val_accuracy"] == max(probe["val_by_c"].values())
    assert (probe["classifier"].predict(features[200:]) == labels[200:]).mean() == probe["val_accuracy"]
    with pytest.raises(ValueError, match="one class"):
        linear_probe(features[:10], np.zeros(10), features[:5], labels[:5])


def test_the_halves_split_the_classes_and_relabel_them():
    assert set(SOURCE_CLASSES) | set(TARGET_CLASSES) == set(CIFAR10_CLASSES)
    assert not set(SOURCE_CLASSES) & set(TARGET_CLASSES)
    labels = torch.arange(100) % 10
    images = torch.zeros(100, 3, 32, 32, dtype=torch.uint8)
    images[:, 0, 0, 0] = labels  # each image carries its original label, to follow it through the relabelling
    split = CIFAR10Split(images, labels, CIFAR10_CLASSES, "test")
    target = class_subset(split, TARGET_CLASSES)
    assert len(target) == 50 and target.classes == TARGET_CLASSES
    assert sorted(set(target.labels.tolist())) == [0, 1, 2, 3, 4]
    for k, name in enumerate(TARGET_CLASSES):  # relabelled in the order given
        originals = target.images[target.labels == k][:, 0, 0, 0]
        assert originals.tolist() == [CIFAR10_CLASSES.index(name)] * 10
    few = labelled_subset(target, 3, seed=1)
    assert torch.bincount(few.labels).tolist() == [3] * 5
    assert torch.equal(labelled_subset(target, 3, seed=1).labels, few.labels)
    with pytest.raises(ValueError, match="fewer than per_class"):
        labelled_subset(target, 11, seed=0)
    with pytest.raises(ValueError, match="classes must be some of"):
        class_subset(split, ["unicorn"])


def test_the_source_network_trains_on_the_source_half_and_loads_as_a_shipped_model(synthetic_root, tmp_path):
    from vggedu import load_classroom_model
    from vggedu.transfer import main

    out = tmp_path / "source.pt"
    args = [
        "--data-root",
        str(synthetic_root),
        "--no-verify",
        "--epochs",
        "2",
        "--val-size",
        "100",
        "--checkpoint",
        str(tmp_path / "run.pt"),
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    model, info = load_classroom_model(path=out)
    assert model.classifier[-1].out_features == len(SOURCE_CLASSES)
    from vggedu.data import load_cifar10

    source = class_subset(load_cifar10(synthetic_root, train=True, verify=False), SOURCE_CLASSES)
    assert info["card"]["train_images"] == len(source) - 100 and info["card"]["val_images"] == 100
    assert info["card"]["mode"] == "CPU, source half (fp32)" and info["test_accuracy"] is not None
    assert layer_features(model, torch.randn(2, 3, 32, 32), "fc7").shape == (2, 128)  # width 0.25


def test_the_shipped_source_network_knows_only_the_source_half():
    from vggedu import load_classroom_model
    from vggedu.classroom import WEIGHTS

    model, info = load_classroom_model(path=WEIGHTS / "source-half.pt")
    assert model.classifier[-1].out_features == len(SOURCE_CLASSES)
    config, card = info["card"]["config"], info["card"]
    assert (config["epochs"], config["mixed_precision"], config["model"], config["width"]) == (13, False, "A", 0.25)
    assert card["mode"] == "CPU, source half (fp32)" and len(info["history"]) == 13
    assert card["train_images"] + card["val_images"] == 25_000  # the 5 source classes of the training set
    assert 0.5 < info["val_accuracy"] < 1 and info["test_accuracy"] is not None
