"""The paper's initialisation from net A, and the grid runner's resume."""

import json

import pytest
import torch

from vggedu import vgg
from vggedu.data import load_cifar10
from vggedu.experiments import PAPER_TRANSFER, init_from, run_grid
from vggedu.training import TrainConfig

KW = dict(batch_norm=True, head="cifar", num_classes=10, width=0.125)


def _tensors(model):
    """Paper name -> the layer's tensors (conv + batch norm, or linear), read from the state dict by index."""
    from vggedu.models import _weights

    return {
        name: [t.clone() for m in modules for t in m.state_dict().values()] for name, modules in _weights(model).items()
    }


@pytest.mark.parametrize("deep", ["B", "C", "D", "E"])
def test_the_paper_transfer_copies_four_convolutions_and_three_fc_layers(deep):
    torch.manual_seed(0)
    a = vgg("A", **KW)
    for m in a.modules():  # trained-looking batch-norm statistics, so they are copied too
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
    torch.manual_seed(1)
    net = vgg(deep, **KW)
    before = _tensors(net)
    report = init_from(a, net)
    after, source = _tensors(net), _tensors(a)
    assert report["copied"] == list(PAPER_TRANSFER)
    assert set(report["copied"]) | set(report["fresh"]) == set(after)
    for name in PAPER_TRANSFER:
        assert all(torch.equal(x, y) for x, y in zip(after[name], source[name])), name
    for name in report["fresh"]:  # untouched: still the deep net's own initialisation
        assert all(torch.equal(x, y) for x, y in zip(after[name], before[name])), name
        weight = after[name][0]
        if name in source and source[name][0].shape == weight.shape:
            assert not torch.equal(weight, source[name][0]), name
    assert len(report["fresh"]) == {"B": 6, "C": 9, "D": 9, "E": 12}[deep]


def test_a_pair_that_cannot_be_matched_is_refused_before_anything_is_copied():
    a = vgg("A", **KW)
    wider = vgg("E", **dict(KW, width=0.25))
    before = _tensors(wider)
    with pytest.raises(ValueError, match=r"conv1_1: shapes .* same width"):
        init_from(a, wider)
    assert all(torch.equal(x, y) for n in before for x, y in zip(before[n], _tensors(wider)[n]))
    with pytest.raises(ValueError, match="conv3_3 is not in the shallow net"):
        init_from(a, vgg("E", **KW), layers=["conv3_3"])
    with pytest.raises(TypeError, match="two vggedu VGG"):
        init_from(a, torch.nn.Linear(2, 2))


@pytest.mark.slow
def test_the_grid_runner_skips_finished_runs(synthetic_root, tmp_path, monkeypatch):
    from vggedu import experiments

    splits = (
        load_cifar10(synthetic_root, train=True, verify=False),
        load_cifar10(synthetic_root, train=False, verify=False),
    )
    small = dict(model="A", width=0.125, batch_size=100, lr=0.05, dropout=0.0, val_size=100, epochs=1, train_size=300)
    configs = [TrainConfig(**small, seed=s) for s in (0, 1)]
    out = tmp_path / "grid.json"
    first = run_grid(configs[:1], *splits, out, device="cpu")
    assert list(first) == [configs[0].run_name()] and json.loads(out.read_text()) == first
    calls = []
    real_train = experiments.train
    monkeypatch.setattr(experiments, "train", lambda *a, **k: calls.append(a[0]) or real_train(*a, **k))
    both = run_grid(configs, *splits, out, device="cpu")
    assert calls == [configs[1]], "the finished run is not run again"
    assert set(both) == {c.run_name() for c in configs}
    assert both[configs[0].run_name()] == first[configs[0].run_name()]
    assert 0 <= both[configs[1].run_name()]["val_accuracy"] <= 1 and not (tmp_path / "grid.json.tmp").exists()


def test_a_config_can_start_from_a_trained_net_a(synthetic_root, tmp_path):
    from vggedu.runs import train
    from vggedu.training import build_model, load_checkpoint

    splits = (
        load_cifar10(synthetic_root, train=True, verify=False),
        load_cifar10(synthetic_root, train=False, verify=False),
    )
    small = dict(
        width=0.125,
        batch_size=100,
        lr=0.01,
        dropout=0.0,
        val_size=100,
        epochs=1,
        train_size=300,
        batch_norm=False,
        init="glorot",
    )
    checkpoint = tmp_path / "net-a.pt"
    train(
        TrainConfig(model="A", **small),
        *splits,
        device="cpu",
        checkpoint=checkpoint,
        progress=False,
        measure_test=False,
    )
    a = load_checkpoint(checkpoint)["model"]
    deep = build_model(TrainConfig(model="E", init_from=str(checkpoint), **dict(small, init="paper")))
    assert torch.equal(deep.features[0].weight, a["features.0.weight"])  # conv1_1
    assert torch.equal(deep.classifier[6].weight, a["classifier.6.weight"])  # fc8
    plain = build_model(TrainConfig(model="E", **dict(small, init="paper")))
    assert torch.equal(deep.features[2].weight, plain.features[2].weight)  # conv1_2: E's own, fresh
    with pytest.raises(ValueError, match="TrainConfig.init_from must be"):
        TrainConfig(init_from=None)
    # The same network (column, width, batch norm): every weight is copied, a fine-tuning start (notebook 06);
    # the fine-tuning run may change the recipe (here the learning rate and the training scale).
    same = build_model(
        TrainConfig(model="A", init_from=str(checkpoint), **dict(small, lr=0.001, scale_min=36, scale_max=48))
    )
    assert all(torch.equal(same.state_dict()[k], v) for k, v in a.items())
    fresh = build_model(TrainConfig(model="A", **small))
    assert not torch.equal(fresh.features[3].weight, a["features.3.weight"])  # training changed conv2_1


@pytest.mark.slow
def test_a_grid_run_stopped_part_way_resumes_from_its_checkpoint_exactly(synthetic_root, tmp_path):
    from vggedu.runs import train

    splits = (
        load_cifar10(synthetic_root, train=True, verify=False),
        load_cifar10(synthetic_root, train=False, verify=False),
    )
    config = TrainConfig(model="A", width=0.125, batch_size=100, val_size=100, train_size=300, epochs=2, dropout=0.0)
    whole = run_grid([config], *splits, tmp_path / "whole.json", device="cpu", measure_test=False)[config.run_name()]

    class Stop(Exception):
        pass

    folder = tmp_path / "checkpoints"
    with pytest.raises(Stop):  # the session ends after the first epoch: its checkpoint is on disk
        train(
            config,
            *splits,
            device="cpu",
            checkpoint=folder / f"{config.run_name()}.pt",
            progress=False,
            on_epoch_end=lambda row: (_ for _ in ()).throw(Stop()),
        )
    resumed = run_grid([config], *splits, tmp_path / "grid.json", device="cpu", measure_test=False, checkpoints=folder)
    resumed = resumed[config.run_name()]
    assert [r["epoch"] for r in resumed["history"]] == [1, 2]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert strip(resumed["history"]) == strip(whole["history"])
    assert resumed["val_accuracy"] == whole["val_accuracy"]


@pytest.mark.slow
def test_a_half_trained_net_a_is_refused_and_the_grid_finishes_it(synthetic_root, tmp_path):
    from vggedu.checkpoints import CheckpointError, is_finished, read_state
    from vggedu.runs import train
    from vggedu.training import build_model

    splits = (
        load_cifar10(synthetic_root, train=True, verify=False),
        load_cifar10(synthetic_root, train=False, verify=False),
    )
    small = dict(width=0.125, batch_size=100, val_size=100, epochs=2, train_size=300, batch_norm=False, dropout=0.0)
    net_a = TrainConfig(model="A", init="glorot", **small)
    checkpoint = tmp_path / "checkpoints" / f"{net_a.run_name()}.pt"
    train(net_a, *splits, device="cpu", checkpoint=checkpoint, progress=False, until_epoch=1)  # a session ended
    deep = TrainConfig(model="E", init="paper", init_from=str(checkpoint), **small)
    with pytest.raises(CheckpointError, match=r"stopped at epoch 1 of 2.*Finish it first"):
        build_model(deep)
    run_grid([net_a], *splits, tmp_path / "grid.json", device="cpu", checkpoints=checkpoint.parent, measure_test=False)
    assert is_finished(read_state(checkpoint)) and read_state(checkpoint)["epoch"] == 2  # resumed, not skipped
    build_model(deep)  # a finished net A is accepted


def test_a_failed_start_keeps_its_whole_message(synthetic_root, tmp_path, monkeypatch):
    from vggedu import experiments
    from vggedu.training import TrainingDiverged

    message = "a loss became NaN or infinite in epoch 1 (train_loss nan, val_loss 2.3026); training stopped."

    def diverges(*args, **kwargs):
        raise TrainingDiverged(message)

    monkeypatch.setattr(experiments, "train", diverges)
    results = run_grid([TrainConfig(model="A", width=0.125)], None, None, tmp_path / "g.json")
    (result,) = results.values()
    assert result["diverged"] == message and result["val_accuracy"] is None


def test_the_ladder_changes_what_each_rung_says_and_ends_at_the_classroom_recipe():
    import dataclasses

    from vggedu.experiments import LADDER, LADDER_EPOCHS, ladder_configs
    from vggedu.training import PRESETS, TrainConfig

    classroom = TrainConfig(**dict(PRESETS["cpu"], time_budget=0.0, epochs=LADDER_EPOCHS, mixed_precision=False))
    configs = ladder_configs(classroom, seeds=(0, 1))
    assert len(configs) == 2 * len(LADDER) and list(configs)[0] == "rung 0: the paper's recipe, seed 0"
    for seed in (0, 1):
        rungs = [configs[f"rung {k}: {name}, seed {seed}"] for k, (name, _, _) in enumerate(LADDER)]
        paper = rungs[0]
        assert (paper.batch_norm, paper.lr, paper.schedule, paper.dropout, paper.label_smoothing) == (
            False,
            0.01,
            "plateau",
            0.5,
            0.0,
        )
        for (_, _, change), before, after in zip(LADDER[1:], rungs, rungs[1:]):
            assert set(after.changes_from(before)) == set(change)  # the fields the rung names, and no others
        assert rungs[-1] == dataclasses.replace(classroom, seed=seed)  # the top rung is the classroom recipe
    assert [len(change) for _, _, change in LADDER[1:]] == [2, 1, 1, 1, 1]  # only "+ batch norm" changes two


def test_the_shipped_ladder_runs_are_the_ladders_configs():
    """Each finished rung in vggedu/results/ladder-cpu.json is the config ladder_configs gives its label (the grid
    is still being trained: whatever is there must be right, and resumable by the same command)."""
    from vggedu.experiments import LADDER_EPOCHS, ladder_configs
    from vggedu.studies import load_study
    from vggedu.training import PRESETS, TrainConfig

    study = load_study("ladder-cpu")
    classroom = TrainConfig(**dict(PRESETS["cpu"], time_budget=0.0, epochs=LADDER_EPOCHS, mixed_precision=False))
    expected = ladder_configs(classroom, seeds=(0, 1, 2))
    assert study and set(study) <= set(expected)
    for label, run in study.items():
        assert run["config"] == expected[label].to_dict(), label
        assert len(run["history"]) == LADDER_EPOCHS and run["card"]["precision"] == "float32"
        assert run["card"]["train_images"] == 45_000 and run["test_accuracy"] is None  # the test set untouched
