"""The training engine on synthetic data, on the CPU: learning, exact resume, atomic checkpoints, NaN stop, CLI."""

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vggedu import runs, steps
from vggedu import train as cli
from vggedu.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from vggedu.data import load_cifar10
from vggedu.training import TrainConfig, TrainingDiverged


def train(*args, **kwargs):
    """vggedu.runs.train, checkpointing every epoch (as these tests kill runs after a given epoch)."""
    return runs.train(*args, **{"checkpoint_every": 0, **kwargs})


ROOT = Path(__file__).resolve().parents[1]
# A small VGG that learns the synthetic data in a few epochs on a CPU; 100 of the 1,000 images held out.
# fp32 (mixed_precision=False): the same numbers on a CPU with native bf16 and on one without.
SMALL = dict(model="A", width=0.125, batch_size=50, lr=0.05, dropout=0.0, val_size=100, mixed_precision=False)


@pytest.fixture(scope="module")
def splits(synthetic_root):
    return load_cifar10(synthetic_root, train=True, verify=False), load_cifar10(
        synthetic_root, train=False, verify=False
    )


@pytest.mark.slow
def test_training_learns_far_above_chance(splits):
    result = train(TrainConfig(epochs=4, **SMALL), *splits, device="cpu", progress=False)
    assert result.test_accuracy > 0.6 and result.val_accuracy > 0.6, result.history  # chance is 0.1
    assert result.test_accuracy_tta > 0.6
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert set(result.history[0]) == {
        *("epoch", "lr", "momentum", "seconds"),
        *("train_loss", "train_accuracy", "val_loss", "val_accuracy"),
    }  # no test numbers while training: the test set is measured once, at the end
    assert result.val_accuracy == result.history[-1]["val_accuracy"]
    card = result.card
    assert card["data"].startswith("synthetic") and card["config"]["model"] == "A"
    assert (card["train_images"], card["val_images"], card["test_images"]) == (900, 100, 200)


class Kill(Exception):
    pass


def _kill_after(epoch):
    def callback(row):
        if row["epoch"] == epoch:
            raise Kill

    return callback


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["onecycle", "plateau"])
def test_resume_after_a_kill_ends_with_the_same_weights(splits, tmp_path, schedule):
    config = TrainConfig(epochs=3, schedule=schedule, **{**SMALL, "dropout": 0.5})
    straight = train(config, *splits, device="cpu", progress=False, checkpoint=tmp_path / "a.pt")
    with pytest.raises(Kill):
        train(config, *splits, device="cpu", progress=False, checkpoint=tmp_path / "b.pt", on_epoch_end=_kill_after(1))
    assert load_checkpoint(tmp_path / "b.pt")["epoch"] == 1
    resumed = train(config, *splits, device="cpu", progress=False, checkpoint=tmp_path / "b.pt", resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed.history == [{**r, "seconds": s["seconds"]} for r, s in zip(straight.history, resumed.history)]
    assert resumed.test_accuracy == straight.test_accuracy


@pytest.mark.slow
def test_fp16_with_a_gradient_scaler_learns_and_resumes_exactly(splits, tmp_path, monkeypatch):
    # The path a Colab T4 takes (no native bf16): fp16 autocast and a GradScaler, forced here on the CPU.
    monkeypatch.setattr(steps, "autocast_dtype", lambda device, enabled=True: torch.float16)
    config = TrainConfig(epochs=2, train_size=300, **SMALL)
    straight = train(config, *splits, device="cpu", progress=False, checkpoint=tmp_path / "a.pt")
    assert straight.card["precision"] == "float16" and straight.test_accuracy > 0.2, straight.history
    with pytest.raises(Kill):
        train(config, *splits, device="cpu", progress=False, checkpoint=tmp_path / "b.pt", on_epoch_end=_kill_after(1))
    scaler = load_checkpoint(tmp_path / "b.pt")["scaler"]
    assert scaler is not None and scaler["scale"] > 0  # the scaler's state travels with the checkpoint
    resumed = train(config, *splits, device="cpu", progress=False, checkpoint=tmp_path / "b.pt", resume=True)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    "capability, dtype", [((7, 5), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)]
)
def test_cuda_precision_follows_the_compute_capability(monkeypatch, capability, dtype):
    # T4 (7.5): fp16 with a scaler; A100 (8.0), H100/H200 (9.0): bf16. No GPU needed to check the choice.
    from vggedu.training import autocast_dtype

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert autocast_dtype(torch.device("cuda"), True) == dtype
    assert autocast_dtype(torch.device("cuda"), False) is None


@pytest.mark.slow
def test_checkpoint_of_another_config_is_refused_and_kept(splits, tmp_path):
    path = tmp_path / "run.pt"
    train(TrainConfig(epochs=1, **SMALL), *splits, device="cpu", progress=False, checkpoint=path)
    before = path.read_bytes()
    other = TrainConfig(epochs=1, **{**SMALL, "model": "B"})
    with pytest.raises(CheckpointError, match=r"belongs to another run \(model: checkpoint 'A' vs now 'B'\)"):
        train(other, *splits, device="cpu", progress=False, checkpoint=path, resume=True)
    assert path.read_bytes() == before


@pytest.mark.slow
def test_checkpoint_of_other_data_is_refused_and_kept(splits, tmp_path):
    path = tmp_path / "run.pt"
    train(TrainConfig(epochs=1, **SMALL), *splits, device="cpu", progress=False, checkpoint=path)
    before = path.read_bytes()
    fewer = splits[0].subset(500)
    with pytest.raises(
        CheckpointError, match=r"trained on other data or processes \(train_images: checkpoint 900 vs now 400"
    ):
        train(
            TrainConfig(epochs=1, **SMALL), fewer, splits[1], device="cpu", progress=False, checkpoint=path, resume=True
        )
    assert path.read_bytes() == before


def test_run_names_differ_exactly_when_configs_do():
    base = TrainConfig(**SMALL)
    assert base.run_name() == TrainConfig(**SMALL).run_name()
    assert base.run_name().startswith("A-w0.125-e30-") and len(base.run_name().split("-")[-1]) == 8
    variants = [dataclasses.replace(base, **change) for change in (dict(epochs=3), dict(lr=0.1), dict(seed=1))]
    names = {base.run_name(), *(v.run_name() for v in variants)}
    assert len(names) == 4
    # An alias is the same run: the config keeps the Table 1 letter.
    assert TrainConfig(**{**SMALL, "model": "vgg11"}).run_name() == base.run_name()
    assert TrainConfig(**{**SMALL, "model": 11}).model == "A"


@pytest.mark.slow
def test_an_existing_checkpoint_is_never_overwritten_by_a_new_run(splits, tmp_path):
    path = tmp_path / "run.pt"
    train(TrainConfig(epochs=1, **SMALL), *splits, device="cpu", progress=False, checkpoint=path)
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=r"already holds a run; it is left untouched.*--resume"):
        train(TrainConfig(epochs=1, **SMALL), *splits, device="cpu", progress=False, checkpoint=path)
    assert path.read_bytes() == before


def test_unreadable_checkpoint_gets_a_clear_error(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable vggedu checkpoint.*left untouched"):
        load_checkpoint(path)
    assert path.read_bytes() == b"not a checkpoint"


def test_a_failed_write_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.pt", epoch=1, config={}, model={"w": torch.ones(3)})

    def dies_halfway(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # the process is stopped in the middle of writing

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, epoch=2, config={}, model={"w": torch.zeros(3)})
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind


@pytest.mark.slow
def test_nan_loss_stops_with_advice_and_keeps_the_last_good_checkpoint(splits, tmp_path):
    path = tmp_path / "run.pt"
    config = TrainConfig(epochs=3, **SMALL)
    with pytest.raises(Kill):
        train(config, *splits, device="cpu", progress=False, checkpoint=path, on_epoch_end=_kill_after(1))
    # Poison the weights as a diverging run would, keeping the checkpoint's config.
    state = load_checkpoint(path)
    state["model"] = {
        k: v.fill_(float("nan")) if k.endswith("classifier.6.weight") else v for k, v in state["model"].items()
    }
    save_checkpoint(path, **state)
    good = path.read_bytes()
    with pytest.raises(
        TrainingDiverged, match=r"became NaN or infinite in epoch 2.*last good checkpoint \(epoch 1\).*lower learning"
    ):
        train(config, *splits, device="cpu", progress=False, checkpoint=path, resume=True)
    assert path.read_bytes() == good


@pytest.mark.parametrize("steps", [2, 3, 5])
def test_one_cycle_works_on_tiny_runs(steps):
    from vggedu.training import make_scheduler

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = make_scheduler(optimizer, TrainConfig(epochs=steps), steps_per_epoch=1)
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
    with pytest.raises(ValueError, match="at least 2 steps"):
        make_scheduler(optimizer, TrainConfig(epochs=1), steps_per_epoch=1)


def test_divergence_from_scratch_says_no_checkpoint_yet(splits):
    config = TrainConfig(epochs=1, **{**SMALL, "lr": 1e12, "batch_norm": False, "mixed_precision": False})
    with pytest.raises(TrainingDiverged, match="no checkpoint had been written yet"):
        train(config, *splits, device="cpu", progress=False)


@pytest.mark.parametrize(
    "field, value, valid",
    [
        ("width", 0, "a positive number"),
        ("width", float("nan"), "a positive number"),
        ("epochs", 0, "a whole number >= 1"),
        ("epochs", 2.0, "a whole number >= 1"),
        ("batch_size", 2.5, "a whole number >= 1"),
        ("batch_size", True, "a whole number >= 1"),
        ("lr", 0, "a positive number"),
        ("lr", float("inf"), "a positive number"),
        ("momentum", -1, r"a number in \[0, 1\)"),
        ("momentum", 1.0, r"a number in \[0, 1\)"),
        ("weight_decay", -5e-4, "a number >= 0"),
        ("schedule", "cosine", "one of 'plateau', 'onecycle'"),
        ("label_smoothing", 1.0, r"a number in \[0, 1\)"),
        ("mixed_precision", 1, "True or False"),
        ("channels_last", "yes", "True or False"),
        ("batch_norm", None, "True or False"),
        ("seed", -1, "a whole number >= 0"),
        ("train_size", -1, "a whole number >= 0"),
        ("val_size", 0.1, "a whole number >= 0"),
        ("plateau_patience", -2, "a whole number >= 0"),
        ("init", "xavier", "one of 'kaiming', 'paper', 'paper-0.01', 'glorot', 'caffe-xavier'"),
        ("dropout", 1.0, r"a number in \[0, 1\)"),
        ("sync_batchnorm", "no", "True or False"),
        ("split_seed", -1, "None"),
        ("split_seed", 1.0, "None"),
    ],
)
def test_every_config_field_is_checked_where_it_is_set(field, value, valid):
    # The error names the field, the value and what would be valid, before any data or model exists.
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field} must be {valid}.*got {re.escape(repr(value))}"):
        TrainConfig(**{field: value})


def test_every_config_field_has_a_check():
    from vggedu.training import _CHECKS

    assert set(_CHECKS) | {"model"} == {f.name for f in dataclasses.fields(TrainConfig)}
    with pytest.raises(ValueError, match="unknown VGG configuration 'F'"):
        TrainConfig(model="F")


# --- the schedule ----------------------------------------------------------------------------


def test_one_cycle_moves_the_learning_rate_only():
    from vggedu.training import make_scheduler

    config = TrainConfig(epochs=4, lr=0.2, momentum=0.9)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch=25)  # 100 steps
    lrs, momenta = [], []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        momenta.append(optimizer.param_groups[0]["momentum"])
        optimizer.step()
        scheduler.step()
    assert set(momenta) == {0.9}  # as configured: OneCycleLR's default would cycle it 0.95 -> 0.85
    peak = lrs.index(max(lrs))
    assert lrs[0] == pytest.approx(0.02) and max(lrs) == pytest.approx(0.2) and peak in (24, 25)
    assert lrs[-1] == pytest.approx(0.2 / 1000, rel=0.5)  # lr / 1000 at the last step
    rising, falling = torch.tensor(lrs[: peak + 1]), torch.tensor(lrs[peak:])
    assert (rising.diff() > 0).all() and (falling.diff() < 0).all()
    # Linear in both phases: constant steps up, constant steps down.
    assert rising.diff().std() < 1e-6 and falling.diff().std() < 1e-6


@pytest.mark.slow
def test_the_run_reports_the_momentum_that_ran(splits):
    result = train(TrainConfig(epochs=2, momentum=0.8, **SMALL), *splits, device="cpu", progress=False)
    assert [row["momentum"] for row in result.history] == [0.8, 0.8]
    assert result.card["momentum"] == "0.8, constant" and result.card["schedule"].startswith("one-cycle")


@pytest.mark.slow
def test_plateau_watches_the_validation_loss(splits, monkeypatch):
    seen = []
    step = torch.optim.lr_scheduler.ReduceLROnPlateau.step
    monkeypatch.setattr(
        torch.optim.lr_scheduler.ReduceLROnPlateau,
        "step",
        lambda self, metric: seen.append(metric) or step(self, metric),
    )
    result = train(TrainConfig(epochs=3, schedule="plateau", **SMALL), *splits, device="cpu", progress=False)
    assert seen == [row["val_loss"] for row in result.history]
    assert "validation loss" in result.card["schedule"]


# --- nothing non-finite is ever saved --------------------------------------------------------


@pytest.mark.slow
def test_weights_that_turn_nan_in_an_epochs_last_step_are_never_checkpointed(splits, tmp_path, monkeypatch):
    """The last step of epoch 2 makes the weights NaN: that epoch's mean loss is still finite."""
    config = TrainConfig(epochs=3, **SMALL)
    steps_per_epoch = 900 // 50
    make_optimizer = steps.make_optimizer

    def poisoned(model, config):
        optimizer = make_optimizer(model, config)
        steps = []

        def hook(optimizer, args, kwargs):
            steps.append(1)
            if len(steps) == 2 * steps_per_epoch:
                next(model.parameters()).data.fill_(float("nan"))

        optimizer.register_step_post_hook(hook)
        return optimizer

    monkeypatch.setattr(steps, "make_optimizer", poisoned)
    path = tmp_path / "run.pt"
    rows = []
    with pytest.raises(TrainingDiverged, match=r"the weights became NaN or infinite in epoch 2.*\(epoch 1\) is kept"):
        train(config, *splits, device="cpu", progress=False, checkpoint=path, on_epoch_end=rows.append)
    assert [row["epoch"] for row in rows] == [1]
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and all(
        torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point()
    )


@pytest.mark.slow
def test_a_non_finite_evaluation_loss_stops_the_run(splits, tmp_path, monkeypatch):
    evaluate = steps.evaluate
    monkeypatch.setattr(steps, "evaluate", lambda *a, **k: {**evaluate(*a, **k), "loss": float("inf")})
    with pytest.raises(TrainingDiverged, match=r"a loss became NaN or infinite in epoch 1 \(.*val_loss inf"):
        train(TrainConfig(epochs=2, **SMALL), *splits, device="cpu", progress=False, checkpoint=tmp_path / "r.pt")
    assert not (tmp_path / "r.pt").exists()


# --- evaluation, by hand ---------------------------------------------------------------------


class _PixelLogits(torch.nn.Module):
    """Logits read straight from the image: class k's logit is pixel (0, 0, k) of channel 0."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x[:, 0, 0, :3] + 0 * self.unused


def test_evaluate_and_flip_tta_by_hand():
    """Flip TTA is the mean of the two soft-max outputs, the paper's definition, from one forward pass."""
    from vggedu.training import evaluate, predict

    x = torch.zeros(2, 3, 4, 4)
    x[0, 0, 0] = torch.tensor([3.0, 0.0, 0.0, 1.0])  # logits [3, 0, 0]; mirrored row [1, 0, 0, 3]: [1, 0, 0]
    x[1, 0, 0] = torch.tensor([2.0, 0.0, 0.0, -6.0])  # logits [2, 0, 0]; mirrored: [-6, 0, 0]
    labels = torch.tensor([0, 0])
    loader = [(x, labels)]
    model = _PixelLogits()
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    both = evaluate(model, loader, tta=True)
    assert calls == [4], "one forward pass of the two images and their two mirror images"
    logits = torch.tensor([[3.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    mirrored = torch.tensor([[1.0, 0.0, 0.0], [-6.0, 0.0, 0.0]])
    assert both["accuracy"] == 1.0
    assert both["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item())
    posteriors = (logits.softmax(1) + mirrored.softmax(1)) / 2
    # Image 2: the soft-max outputs [0.79, 0.11, 0.11] and [0.001, 0.50, 0.50] average to 0.39 for class 0,
    # 0.30 for the others: still class 0. Averaged logits, [-2, 0, 0], would say class 1.
    assert posteriors.argmax(1).tolist() == [0, 0] and ((logits + mirrored) / 2).argmax(1).tolist() == [0, 1]
    assert both["tta_accuracy"] == 1.0
    assert both["tta_loss"] == pytest.approx(-posteriors[[0, 1], labels].log().mean().item())
    scores, _ = predict(model, loader, tta=True)
    torch.testing.assert_close(scores.softmax(1), posteriors)
    assert set(evaluate(model, loader)) == {"loss", "accuracy"}


def test_channels_last_is_applied(splits):
    from vggedu.runs import setup_run

    for channels_last in (True, False):
        run = setup_run(TrainConfig(epochs=1, channels_last=channels_last, **SMALL), *splits, device="cpu")
        conv = run.net.features[0].weight
        x, _ = next(iter(run.train_loader))
        assert conv.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert x.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_validation_and_training_parts_are_disjoint(splits):
    from vggedu.training import split_validation

    fit, val = split_validation(splits[0], TrainConfig(**{**SMALL, "train_size": 500}))
    assert (len(fit), len(val)) == (500, 100)
    rows = lambda split: {bytes(image.numpy()) for image in split.images}  # noqa: E731
    assert not rows(fit) & rows(val)
    assert split_validation(splits[0], TrainConfig(**{**SMALL, "val_size": 0}))[1] is None
    with pytest.raises(ValueError, match=r"val_size \(1000\) must be smaller than the 1000 training images"):
        split_validation(splits[0], TrainConfig(**{**SMALL, "val_size": 1000}))


# --- devices ---------------------------------------------------------------------------------


def test_auto_picks_apples_gpu_where_there_is_one(monkeypatch):
    from vggedu.devices import pick_device
    from vggedu.runs import run_card

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    device = pick_device("auto")
    assert device.type == "mps" and pick_device("mps").type == "mps"
    card = run_card(TrainConfig(), device, data="x", train_images=1, test_images=1)
    assert card["device"] == "Apple GPU (mps)" and card["precision"] == "float32"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("auto").type == "cpu"
    with pytest.raises(ValueError, match="'mps'.*cannot use one here"):
        pick_device("mps")


def test_a_device_object_is_taken_like_its_name():
    from vggedu.devices import pick_device

    assert pick_device(torch.device("cpu")) == torch.device("cpu")  # what a notebook's settings() holds
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no GPU"):
            pick_device(torch.device("cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_smoke_one_short_epoch_and_exact_resume(splits, tmp_path, monkeypatch, dtype):
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    monkeypatch.setattr(steps, "autocast_dtype", lambda device, enabled=True: dtype)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    config = TrainConfig(epochs=2, **SMALL)
    first = train(config, *splits, device="cuda", progress=False)
    assert first.card["precision"] == str(dtype).removeprefix("torch.") and first.test_accuracy > 0.3
    assert torch.backends.cudnn.benchmark  # what a real run uses; switched off below to compare bit for bit
    real_setup = runs.setup_run

    def deterministic(*args, **kwargs):
        run = real_setup(*args, **kwargs)
        torch.backends.cudnn.benchmark = False
        return run

    monkeypatch.setattr(runs, "setup_run", deterministic)
    torch.use_deterministic_algorithms(True, warn_only=True)  # 2x2/2 max-pool's backward never collides
    try:
        straight = train(config, *splits, device="cuda", progress=False)
        with pytest.raises(Kill):
            train(
                config,
                *splits,
                device="cuda",
                progress=False,
                checkpoint=tmp_path / "b.pt",
                on_epoch_end=_kill_after(1),
            )
        resumed = train(config, *splits, device="cuda", progress=False, checkpoint=tmp_path / "b.pt", resume=True)
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    # The resume is exact where the kernels are: cuDNN's autotuner is switched off and deterministic
    # algorithms are asked for, so both runs take the same kernels in the same order.
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.slow
def test_cli_end_to_end_with_json(synthetic_root, tmp_path, capsys):
    run = [
        "--data-root",
        str(synthetic_root),
        "--no-verify",
        "--checkpoint",
        str(tmp_path / "cli.pt"),
        *"--model 11 --width 0.125 --batch-size 50 --epochs 2 --dropout 0 --val-size 100 --no-progress".split(),
    ]
    assert cli.main([*run, "--json", str(tmp_path / "first.json")]) == 0
    result = json.loads((tmp_path / "first.json").read_text())
    assert result["test_accuracy"] > 0.3 and len(result["history"]) == 2 and result["wall_seconds"] > 0
    # --model 11 is stored as its Table 1 letter.
    assert result["card"]["data"].startswith("synthetic") and result["card"]["config"]["model"] == "A"
    assert "test accuracy" in capsys.readouterr().out
    # Resuming a finished run trains nothing and gives the same answer.
    assert cli.main([*run, "--resume", "--json", str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["history"] == result["history"] and again["test_accuracy"] == result["test_accuracy"]
    assert result["val_accuracy"] == result["history"][-1]["val_accuracy"]
    assert "test_accuracy" not in result["history"][-1]  # measured once, at the end


@pytest.mark.slow
def test_cli_test_curve_is_labelled_as_a_curve(synthetic_root, tmp_path, capsys):
    run = ["--data-root", str(synthetic_root), "--no-verify", "--json", str(tmp_path / "curve.json")]
    flags = "--model A --width 0.125 --batch-size 50 --epochs 2 --val-size 100 --no-progress --test-curve"
    assert cli.main([*run, *flags.split()]) == 0
    rows = json.loads((tmp_path / "curve.json").read_text())["history"]
    assert all("test_accuracy" in row and "val_accuracy" in row for row in rows)
    assert "(curve only)" in capsys.readouterr().out


def test_cli_errors_say_what_to_do(tmp_path, capsys):
    assert cli.main(["--data-root", str(tmp_path), "--no-progress"]) == 2
    assert "--download" in capsys.readouterr().err
    assert cli.main(["--data-root", str(tmp_path), "--model", "Z"]) == 2
    assert "choose one of" in capsys.readouterr().err
    assert cli.main(["--data-root", str(tmp_path), "--width", "0"]) == 2
    assert "TrainConfig.width must be a positive number" in capsys.readouterr().err


def test_cli_help_explains_every_flag():
    text = cli.build_parser().format_help()
    for flag in [
        "--data-root",
        "--download",
        "--device",
        "--checkpoint",
        "--resume",
        "--no-verify",
        "--json",
        "--preset",
        "--schedule",
        "--label-smoothing",
        "--mixed-precision",
        "--channels-last",
        "--seed",
    ]:
        assert flag in text


# --- several processes: torchrun + DistributedDataParallel, gloo on the CPU ----------------------


@pytest.mark.slow
def test_two_processes_train_as_one_does(synthetic_root, tmp_path):
    """torchrun with two gloo processes: same global batch, same losses as one process, a loadable checkpoint."""
    flags = [
        *("--data-root", str(synthetic_root), "--no-verify", "--device", "cpu", "--no-progress"),
        *"--model A --width 0.125 --batch-size 50 --epochs 2 --train-size 200 --val-size 100 --dropout 0".split(),
        *("--no-mixed-precision", "--sync-batchnorm"),  # fp32 everywhere: only the order of sums differs
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    two = subprocess.run(
        [
            *torchrun,
            "-m",
            "vggedu.train",
            *flags,
            "--json",
            str(tmp_path / "two.json"),
            "--checkpoint",
            str(tmp_path / "two.pt"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert two.returncode == 0, two.stdout + two.stderr
    assert "x 2 processes" in two.stdout and two.stdout.count("epoch   1") == 1  # one process speaks
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the two processes had: the same arithmetic, in this process
    try:
        assert cli.main([*flags, "--json", str(tmp_path / "one.json")]) == 0
    finally:
        torch.set_num_threads(threads)
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert b["card"]["world_size"] == 2 and a["card"]["world_size"] == 1
    assert b["card"]["train_images"] == a["card"]["train_images"] == 200
    # Equal to float tolerance, which grows with every step (here 4 an epoch); without SyncBatchNorm the
    # two runs differ by about 7e-4 after epoch 1 and 3e-3 after epoch 2, with it by 3e-5 and 6e-4.
    for row_one, row_two, rel in zip(a["history"], b["history"], (1e-4, 2e-3), strict=True):
        for key in ("train_loss", "val_loss"):
            assert row_two[key] == pytest.approx(row_one[key], rel=rel), (key, a["history"], b["history"])
    # The checkpoint holds plain VGG weights: a one-process model loads them strictly.
    from vggedu.training import build_model

    state = load_checkpoint(tmp_path / "two.pt")
    model = build_model(TrainConfig(**state["config"]))
    model.load_state_dict(state["model"], strict=True)
    assert state["epoch"] == 2 and state["card"]["world_size"] == 2


# --- a time budget ---------------------------------------------------------------------------


def test_the_plan_counts_every_part_of_an_epoch():
    from vggedu.runs import epochs_that_fit

    # 18 steps at 50 ms + 100 validation images at 1 ms + 10 ms of finite checks = 1.01 s an epoch;
    # the final pass, 400 images at 1 ms, leaves 19.6 s of 20: 19 epochs, without checkpoints.
    kw = dict(max_epochs=200, steps=18, step_seconds=0.05, eval_images=100, final_images=400)
    kw.update(eval_image_seconds=0.001, finite_seconds=0.01, checkpoint_every=60.0)
    assert epochs_that_fit(budget=20.0, write_seconds=0.0, **kw) == (19, pytest.approx(1.01))
    # A 0.5 s checkpoint: 19 epochs (19.19 s) write one (the last): 19.69 s > 19.6 s, so 18 (18.18 + 0.5).
    assert epochs_that_fit(budget=20.0, write_seconds=0.5, **kw)[0] == 18
    # Every epoch written (checkpoint_every=0): 1.51 s an epoch, 12 of them.
    assert epochs_that_fit(budget=20.0, write_seconds=0.5, **{**kw, "checkpoint_every": 0.0})[0] == 12
    assert epochs_that_fit(budget=20.0, write_seconds=0.0, **{**kw, "max_epochs": 5})[0] == 5
    assert epochs_that_fit(budget=0.3, write_seconds=0.0, **kw)[0] == 0


def test_the_budget_is_used_to_the_step_not_to_the_epoch():
    from vggedu.runs import epochs_that_fit, steps_left_over

    # Epochs of 100 steps at 0.1 s + 1 s of validation + 0.1 s finite check = 11.1 s; the final pass
    # takes 2 s. 60 s: 5 whole epochs (55.5 s) and 2.5 s left; a short epoch pays 1.1 s of
    # validation and finite check, so 1.4 s buy 14 more steps.
    kw = dict(max_epochs=50, steps=100, step_seconds=0.1, eval_images=1000, final_images=2000)
    kw.update(eval_image_seconds=0.001, finite_seconds=0.1, write_seconds=0.0, checkpoint_every=60.0)
    assert epochs_that_fit(budget=60.0, **kw)[0] == 5
    assert steps_left_over(budget=60.0, epochs=5, **kw) == 14
    # Two 0.4 s checkpoint writes (one after 60 s, one after the last epoch) leave 0.6 s: 6 steps.
    assert steps_left_over(budget=60.0, epochs=5, **{**kw, "write_seconds": 0.4}) == 6
    assert steps_left_over(budget=60.0, epochs=5, **{**kw, "max_epochs": 5}) == 0  # no epoch beyond the cap
    assert steps_left_over(budget=58.6, epochs=5, **kw) == 0  # nothing left after the short epoch's costs


def test_the_steps_that_still_fit_before_the_budget_ends():
    from vggedu.runs import steps_still_fit

    assert steps_still_fit(time_left=30.0, steps=100, step_seconds=0.2, eval_seconds=2.0) == 100
    assert steps_still_fit(time_left=12.0, steps=100, step_seconds=0.2, eval_seconds=2.0) == 50
    assert steps_still_fit(time_left=1.5, steps=100, step_seconds=0.2, eval_seconds=2.0) == 0


@pytest.mark.slow
def test_a_run_whose_machine_slows_down_is_cut_short_within_its_budget(splits, monkeypatch):
    # The plan is made on a machine 20 times faster than the one that runs it (as when a laptop throttles):
    # the guard cuts the run where its budget ends, and says so.
    real = runs.epochs_that_fit
    monkeypatch.setattr(runs, "epochs_that_fit", lambda **kw: real(**{**kw, "step_seconds": kw["step_seconds"] / 20}))
    config = TrainConfig(epochs=200, time_budget=12.0, **SMALL)
    import time

    started = time.perf_counter()
    result = train(config, *splits, device="cpu", progress=False)
    wall = time.perf_counter() - started
    plan = result.card["time_budget"]
    assert wall <= 12.0, f"{wall:.1f} s for a 12 s budget"
    assert plan["cut_at_epoch"] == len(result.history) == plan["epochs"] < 200
    assert result.test_accuracy is not None  # the test set is still measured once, at the end


def test_a_short_last_epoch_trains_its_steps_and_the_cycle_ends_on_it(splits):
    config = TrainConfig(epochs=9, **SMALL)  # 900 training images in batches of 50: 18 steps an epoch
    run = steps.setup_run(config, *splits, device="cpu")
    steps._apply_plan(run, {"seconds": 60.0, "epochs": 2, "max_epochs": 9, "last_epoch_steps": 5})
    assert [run.steps_in(e) for e in range(2)] == [18, 5]
    assert run.scheduler.total_steps == 23
    rows = [steps.run_epoch(run, epoch) for epoch in range(2)]
    assert run.scheduler.last_epoch == 23  # stepped exactly to its end (OneCycleLR refuses a step past it)
    assert "steps" not in rows[0] and rows[1]["steps"] == 5


@pytest.mark.slow
def test_a_time_budget_plans_the_epochs_that_fit_and_a_resume_keeps_the_plan(splits, tmp_path):
    config = TrainConfig(epochs=3, time_budget=120.0, **SMALL)  # 3 epochs of a few seconds fit anywhere
    path = tmp_path / "budget.pt"
    with pytest.raises(Kill):
        train(config, *splits, device="cpu", progress=False, checkpoint=path, on_epoch_end=_kill_after(2))
    plan = load_checkpoint(path)["plan"]
    assert plan["epochs"] == 3 and plan["max_epochs"] == 3 and plan["images_per_second"] > 0
    assert plan["checkpoint_seconds"] > 0  # the planner timed a checkpoint write too
    assert [p.name for p in tmp_path.iterdir()] == ["budget.pt"]  # and left no probe file behind
    resumed = train(config, *splits, device="cpu", progress=False, checkpoint=path, resume=True)
    assert len(resumed.history) == plan["epochs"] and resumed.card["time_budget"] == plan
    assert load_checkpoint(path)["scheduler"]["total_steps"] == plan["epochs"] * (900 // 50)


def test_a_budget_too_small_for_one_epoch_says_so(splits):
    with pytest.raises(ValueError, match=r"time budget of 0.01 s does not fit one epoch.*Give a larger budget"):
        train(TrainConfig(epochs=5, time_budget=0.01, **SMALL), *splits, device="cpu", progress=False)


@pytest.mark.parametrize("text, seconds", [("600", 600), ("600s", 600), ("10m", 600), ("1.5h", 5400), ("0", 0)])
def test_durations_on_the_command_line(text, seconds):
    assert cli.parse_duration(text) == seconds


def test_a_bad_duration_is_refused(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--time-budget", "ten minutes"])
    assert "write e.g. 600, 600s, 10m or 1.5h" in capsys.readouterr().err


def test_changes_between_configs_are_listed_field_by_field():
    a = TrainConfig(**SMALL)
    b = dataclasses.replace(a, schedule="plateau", label_smoothing=0.1)
    assert b.changes_from(a) == {"schedule": ("onecycle", "plateau"), "label_smoothing": (0.0, 0.1)}
    assert a.changes_from(a) == {}


def test_a_split_seed_shares_one_split_between_initialisations_and_keeps_the_old_names(splits):
    from vggedu.studies import load_study
    from vggedu.training import build_model, split_validation

    # Two initialisation seeds on one split_seed: the same held-out images, different weights.
    a, b = TrainConfig(**SMALL, seed=0, split_seed=7), TrainConfig(**SMALL, seed=1, split_seed=7)
    (_, val_a), (_, val_b) = split_validation(splits[0], a), split_validation(splits[0], b)
    assert torch.equal(val_a.labels, val_b.labels) and torch.equal(val_a.images, val_b.images)
    _, val_seed_1 = split_validation(splits[0], TrainConfig(**SMALL, seed=1))
    assert not torch.equal(val_a.images, val_seed_1.images)  # without it, the seed moves the split
    first = lambda config: next(build_model(config).parameters())
    assert not torch.equal(first(a), first(b))
    assert b.changes_from(TrainConfig(**SMALL, seed=1)) == {"split_seed": (None, 7)}
    assert a.run_name() != TrainConfig(**SMALL, seed=0).run_name()
    # While None it is left out of the config's dict: every run stored before it still has its name.
    study = load_study("depth-converged-cpu")
    assert all(TrainConfig(**r["config"]).run_name() == key for key, r in study.items())
    assert all(TrainConfig(**r["config"]).to_dict() == r["config"] for r in study.values())


def test_equal_configs_have_equal_names_whatever_the_number_type():
    assert TrainConfig(width=1) == TrainConfig(width=1.0)
    assert TrainConfig(width=1).run_name() == TrainConfig(width=1.0).run_name()
    assert TrainConfig(lr=1, time_budget=600).run_name() == TrainConfig(lr=1.0, time_budget=600.0).run_name()
    assert isinstance(TrainConfig(width=1).width, float) and TrainConfig(width=1).to_dict()["width"] == 1.0
