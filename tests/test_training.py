"""The training engine on synthetic data, on the CPU: learning, exact resume, atomic checkpoints, NaN stop, CLI."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vggedu import train as cli
from vggedu.data import load_cifar10
from vggedu.training import (
    CheckpointError,
    TrainConfig,
    TrainingDiverged,
    load_checkpoint,
    save_checkpoint,
    train,
)

ROOT = Path(__file__).resolve().parents[1]
# A small VGG that learns the synthetic data in a few epochs on a CPU.
SMALL = dict(model="A", width=0.125, batch_size=50, lr=0.05, dropout=0.0)


@pytest.fixture(scope="module")
def splits(synthetic_root):
    return load_cifar10(synthetic_root, train=True, verify=False), load_cifar10(
        synthetic_root, train=False, verify=False
    )


def test_training_learns_far_above_chance(splits):
    result = train(TrainConfig(epochs=4, **SMALL), *splits, device="cpu", progress=False)
    assert result.test_accuracy > 0.6, result.history  # chance is 0.1
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert set(result.history[0]) >= {"lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds"}
    assert result.card["data"].startswith("synthetic") and result.card["config"]["model"] == "A"
    assert 0 <= result.test_accuracy_tta <= 1


class Kill(Exception):
    pass


def _kill_after(epoch):
    def callback(row):
        if row["epoch"] == epoch:
            raise Kill

    return callback


@pytest.mark.parametrize("schedule", ["onecycle", "plateau"])
def test_resume_after_a_kill_ends_with_the_same_weights(splits, tmp_path, schedule):
    config = TrainConfig(
        epochs=3, schedule=schedule, val_size=100 if schedule == "plateau" else 0, **{**SMALL, "dropout": 0.5}
    )
    straight = train(config, *splits, device="cpu", progress=False, checkpoint=tmp_path / "a.pt")
    with pytest.raises(Kill):
        train(config, *splits, device="cpu", progress=False, checkpoint=tmp_path / "b.pt", on_epoch_end=_kill_after(1))
    assert load_checkpoint(tmp_path / "b.pt")["epoch"] == 1
    resumed = train(config, *splits, device="cpu", progress=False, checkpoint=tmp_path / "b.pt", resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed.history[-1]["test_accuracy"] == straight.history[-1]["test_accuracy"]


def test_fp16_with_a_gradient_scaler_learns_and_resumes_exactly(splits, tmp_path, monkeypatch):
    # The path a Colab T4 takes (no native bf16): fp16 autocast and a GradScaler, forced here on the CPU.
    import vggedu.training

    monkeypatch.setattr(vggedu.training, "autocast_dtype", lambda device, enabled=True: torch.float16)
    config = TrainConfig(epochs=2, train_size=500, **SMALL)
    straight = train(config, *splits, device="cpu", progress=False, checkpoint=tmp_path / "a.pt")
    assert straight.card["precision"] == "float16" and straight.test_accuracy > 0.3, straight.history
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


def test_checkpoint_of_another_config_is_refused_and_kept(splits, tmp_path):
    path = tmp_path / "run.pt"
    train(TrainConfig(epochs=1, **SMALL), *splits, device="cpu", progress=False, checkpoint=path)
    before = path.read_bytes()
    other = TrainConfig(epochs=1, **{**SMALL, "model": "B"})
    with pytest.raises(CheckpointError, match=r"belongs to another run \(model: checkpoint 'A' vs now 'B'\)"):
        train(other, *splits, device="cpu", progress=False, checkpoint=path, resume=True)
    assert path.read_bytes() == before


def test_checkpoint_of_other_data_is_refused_and_kept(splits, tmp_path):
    path = tmp_path / "run.pt"
    train(TrainConfig(epochs=1, **SMALL), *splits, device="cpu", progress=False, checkpoint=path)
    before = path.read_bytes()
    fewer = splits[0].subset(500)
    with pytest.raises(CheckpointError, match=r"trained on other data \(1000 training.*now 500 and 200"):
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


def test_checkpoint_survives_sigkill(synthetic_root, tmp_path):
    """A real process killed with SIGKILL while it trains and checkpoints: the file stays loadable."""
    path = tmp_path / "killed.pt"
    command = [
        sys.executable,
        "-m",
        "vggedu.train",
        "--data-root",
        str(synthetic_root),
        "--no-verify",
        "--model",
        "A",
        "--width",
        "0.125",
        "--batch-size",
        "50",
        "--epochs",
        "200",
        "--checkpoint",
        str(path),
        "--no-progress",
    ]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not path.exists():
            time.sleep(0.05)
        assert path.exists(), "no checkpoint within 60 s"
        time.sleep(0.37)  # somewhere in a later epoch, perhaps mid-write
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    state = load_checkpoint(path)
    assert state["epoch"] >= 1 and len(state["history"]) == state["epoch"]
    # A kill mid-write can leave only a temporary file beside it, never a broken killed.pt.
    assert all(p.name.startswith(".killed.pt.tmp") for p in tmp_path.iterdir() if p.name != "killed.pt")


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
        TrainingDiverged, match=r"became nan in epoch 2.*last good checkpoint \(epoch 1\).*lower learning rate"
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
    "kwargs, match",
    [
        (dict(model="F"), "unknown VGG configuration 'F'"),
        (dict(schedule="cosine"), "unknown schedule 'cosine'; choose one of 'plateau', 'onecycle'"),
        (dict(epochs=0), "epochs must be at least 1"),
        (dict(label_smoothing=1.0), "label_smoothing"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_cli_end_to_end_with_json(synthetic_root, tmp_path, capsys):
    run = [
        "--data-root",
        str(synthetic_root),
        "--no-verify",
        "--checkpoint",
        str(tmp_path / "cli.pt"),
        *"--model 11 --width 0.125 --batch-size 50 --epochs 2 --dropout 0 --no-progress".split(),
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


def test_cli_errors_say_what_to_do(tmp_path, capsys):
    assert cli.main(["--data-root", str(tmp_path), "--no-progress"]) == 2
    assert "--download" in capsys.readouterr().err
    assert cli.main(["--data-root", str(tmp_path), "--model", "Z"]) == 2
    assert "choose one of" in capsys.readouterr().err


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
