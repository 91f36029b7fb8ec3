"""Notebook 09's study: disjoint parts, one-pass features equal to the per-layer ones, a resumable study."""

import json

import pytest
import torch

import vggedu
from vggedu import transfer_study as ts
from vggedu.data import load_splits, write_synthetic_cifar10
from vggedu.studies import load_study
from vggedu.transfer import TRANSFER_LAYERS, descriptor, labelled_index, layer_features


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = write_synthetic_cifar10(tmp_path_factory.mktemp("cifar"), n_train=600, n_test=100, seed=0)
    return load_splits(root, verify=False)


def test_the_validation_part_is_held_out_before_any_draw(splits):
    train, _ = splits
    pool, val = ts.target_parts(train, val_per_class=20)
    target = sum(int((train.labels == train.classes.index(c)).sum()) for c in vggedu.transfer.TARGET_CLASSES)
    share = torch.bincount(torch.cat([pool.labels, val.labels])) * 100 / target
    assert len(val) == 100 and (torch.bincount(val.labels) - share).abs().max() < 1  # stratified: each class its share
    assert len(pool) + len(val) == target
    # no image of the validation part is in the pool a draw is taken from (the synthetic images are distinct)
    flat = lambda s: {bytes(im.flatten().tolist()) for im in s.images}  # noqa: E731
    assert not flat(pool) & flat(val)
    index = labelled_index(pool, 10, seed=1)
    assert torch.bincount(pool.labels[index]).tolist() == [10] * 5 and len(set(index.tolist())) == 50
    assert not torch.equal(index, labelled_index(pool, 10, seed=2))


def test_one_pass_gives_every_layer_as_the_per_layer_functions_do(splits):
    train, _ = splits
    torch.manual_seed(0)
    net = vggedu.vgg("A", batch_norm=True, head="cifar", num_classes=5, width=0.125).eval()
    part = train.take(torch.arange(12))
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    x = (part.images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    centre = ts.all_layer_features(net, part, mean, std, batch_size=5)
    dense = ts.all_layer_features(net, part, mean, std, sizes=(32, 64), flip=True, batch_size=5)
    for layer in TRANSFER_LAYERS:
        expected = torch.nn.functional.normalize(layer_features(net, x, layer), dim=1)
        torch.testing.assert_close(centre[layer], expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(dense[layer], descriptor(net, x, layer, sizes=(32, 64)), rtol=1e-4, atol=1e-5)


def test_fine_tuning_starts_from_the_source_but_fc8_and_scratch_from_nothing():
    source, info = vggedu.load_classroom_model(path=ts.SOURCE_MODEL)
    config = vggedu.training.TrainConfig(**{**info["card"]["config"], "init_from": ""})
    tuned, scratch = ts._start("fine-tune", source, config, 0), ts._start("scratch", source, config, 0)
    s, t, f = source.state_dict(), tuned.state_dict(), scratch.state_dict()
    assert all(torch.equal(s[k], t[k]) for k in s if not k.startswith("classifier.6"))
    assert not torch.equal(s["classifier.6.weight"], t["classifier.6.weight"])
    assert not torch.equal(s["features.0.weight"], f["features.0.weight"])


def test_a_training_reports_its_accuracy_on_its_own_labels(splits):
    """The regime: accuracy on the labelled images themselves, unaugmented, of the model returned."""
    from vggedu.loaders import DeviceLoader

    train, _ = splits
    pool, val = ts.target_parts(train, val_per_class=20)
    labelled = vggedu.transfer.labelled_subset(pool, 4, seed=0)
    source, info = vggedu.load_classroom_model(path=ts.SOURCE_MODEL)
    config = vggedu.training.TrainConfig(**{**info["card"]["config"], "init_from": ""})
    model, row = ts.train_on_labels(
        ts._start("scratch", source, config, 0), labelled, val, (0.5,) * 3, (0.25,) * 3, lr=0.01, steps=2
    )
    fit = DeviceLoader(labelled, 7, train=False, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert row["train_accuracy"] == vggedu.training.evaluate(model, fit)["accuracy"]
    assert set(row) == {"val_accuracy", "train_accuracy", "seconds", "epochs"}


def test_the_study_runs_resumes_and_tests_only_the_chosen_rate(splits, tmp_path):
    train, test = splits
    out = tmp_path / "train.json"
    first = ts.run_training(train, test, out, sizes=(4,), draws=(0, 1), steps=2, val_per_class=20)
    assert set(first["train"]) == {f"{m}, 4 per class, draw {d}" for m in ("fine-tune", "scratch") for d in (0, 1)}
    for m in ("fine-tune", "scratch"):
        trials = first["lr_trials"][f"{m}, 4"]
        assert set(trials) == {str(lr) for lr in ts.LEARNING_RATES}
        assert first["chosen_lr"][f"{m}, 4"] == max(ts.LEARNING_RATES, key=lambda lr: trials[str(lr)])
        assert all(first["train"][f"{m}, 4 per class, draw {d}"]["lr"] == first["chosen_lr"][f"{m}, 4"] for d in (0, 1))
    stamp = out.stat().st_mtime_ns
    assert ts.run_training(train, test, out, sizes=(4,), draws=(0, 1), steps=2, val_per_class=20) == json.loads(
        out.read_text()
    )
    assert out.stat().st_mtime_ns == stamp  # nothing was trained or rewritten the second time
    probes = ts.run_probes(train, test, tmp_path / "probe.json", sizes=(4,), draws=(0,), val_per_class=20)
    assert len(probes["probe"]) == 2 * len(TRANSFER_LAYERS)
    assert all(
        r["c"] in (0.01, 0.1, 1.0, 10.0) and r["val_accuracy"] == r["val_by_c"][str(r["c"])]
        for r in probes["probe"].values()
    )


def test_the_shipped_study_holds_every_probe_and_training():
    """Notebook 09 reads it: every view x layer x labels x draw probed, every method x labels x draw trained."""
    r = load_study("transfer-cpu")
    sizes, draws = ts.LABELS_PER_CLASS, ts.DRAWS
    assert set(r["probe"]) == {
        f"{v}, {layer}, {n} per class, draw {d}"
        for v in ts.VIEWS
        for layer in TRANSFER_LAYERS
        for n in sizes
        for d in draws
    }
    assert set(r["train"]) == {
        f"{m}, {n} per class, draw {d}" for m in ("fine-tune", "scratch") for n in sizes for d in draws
    }
    assert set(r["chosen_lr"]) == set(r["lr_trials"]) == {f"{m}, {n}" for m in ("fine-tune", "scratch") for n in sizes}
    assert all({"train_accuracy", "val_accuracy", "test_accuracy"} <= set(row) for row in r["train"].values())
    assert set(r["feature_seconds"]) == set(ts.VIEWS)
    assert r["card"]["data"] == "CIFAR-10 (JPEG copy)" and r["card"]["precision"] == "float32"


@pytest.mark.slow
def test_the_imagenet_probe_runs_offline_on_a_locally_saved_state_dict(splits, tmp_path):
    """The mechanics of notebook 09's ImageNet section, without the 528 MB download: a random VGG-16 saved
    as torchvision would, loaded by path, probed at 224x224 (weights sets named as torchvision names them)."""
    from vggedu.inspection import imagenet_weights, load_imagenet_weights

    torch.manual_seed(0)
    path = tmp_path / "vgg16-local.pth"
    torch.save(vggedu.vgg("D", num_classes=1000).state_dict(), path)
    model = load_imagenet_weights("vgg16", weights="IMAGENET1K_FEATURES", path=path)
    train, test = splits
    pool, val = ts.target_parts(train, val_per_class=2)
    labelled = vggedu.transfer.labelled_subset(pool, 2, seed=0)
    standard = imagenet_weights("vgg16", "IMAGENET1K_FEATURES").transforms()
    target_test = vggedu.transfer.class_subset(test, vggedu.transfer.TARGET_CLASSES).take(torch.arange(6))
    result = ts.imagenet_probe(model, labelled, val, target_test, standard.mean, standard.std)
    assert (
        set(result) == {"pool5"} and result["pool5"]["dims"] == 512 and result["pool5"]["c"] in (0.01, 0.1, 1.0, 10.0)
    )
    with pytest.raises(ValueError, match="no 'IMAGENET1K_FEATURES' weights for vgg19"):
        imagenet_weights("vgg19", "IMAGENET1K_FEATURES")
