"""Checkpoints: a kill inside the write keeps the old file, the cadence, planned stops, the one loader."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vggedu import runs, steps
from vggedu.checkpoints import CheckpointError, is_finished, load_checkpoint, read_state, save_checkpoint
from vggedu.data import load_cifar10
from vggedu.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(model="A", width=0.125, batch_size=50, lr=0.05, dropout=0.5, val_size=100, train_size=300)

# A process that writes a first checkpoint, then starts a second write that blocks half way through:
# the state holds an object whose pickling announces itself (a file) and then sleeps until it is killed.
_WRITER = """
import importlib.util, pathlib, sys, time, torch

# vggedu/checkpoints.py alone (it needs only torch): a second less of start-up than the whole package.
spec = importlib.util.spec_from_file_location("checkpoints", "vggedu/checkpoints.py")
checkpoints = importlib.util.module_from_spec(spec)
spec.loader.exec_module(checkpoints)
save_checkpoint = checkpoints.save_checkpoint

path, mark, how = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]

class Blocks:
    def __reduce__(self):
        mark.write_text("inside the write")
        time.sleep(120)
        return (int, (0,))

save_checkpoint(path, epoch=1, config={}, model={"w": torch.ones(1000)})
state = dict(epoch=2, config={}, model={"w": torch.zeros(1000)}, blocker=Blocks())
if how == "atomic":
    save_checkpoint(path, **state)
else:  # what the atomic write replaces: torch.save straight onto the checkpoint
    torch.save(state, path)
"""


def _kill_inside_the_write(tmp_path: Path, how: str) -> Path:
    path, mark = tmp_path / "run.pt", tmp_path / "inside"
    process = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), str(mark), how], cwd=ROOT, stderr=subprocess.PIPE
    )
    try:
        deadline = time.time() + 60
        while not mark.exists():
            assert process.poll() is None, process.stderr.read().decode()
            assert time.time() < deadline, "the writer never reached its second write"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)  # the process is inside torch.save now
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    return path


@pytest.mark.slow
def test_a_kill_inside_the_write_leaves_the_old_checkpoint(tmp_path):
    path = _kill_inside_the_write(tmp_path, "atomic")
    assert torch.load(path, weights_only=True)["epoch"] == 1
    others = {p.name for p in tmp_path.iterdir()} - {"run.pt", "inside"}
    assert len(others) == 1 and others.pop().startswith(".run.pt.tmp-")  # the half-written temporary file


@pytest.mark.slow
def test_the_same_kill_destroys_a_checkpoint_written_with_plain_torch_save(tmp_path):
    """The test above can fail: without the temporary file and rename, the kill leaves a broken file."""
    path = _kill_inside_the_write(tmp_path, "plain")
    with pytest.raises(Exception):  # noqa: B017  (whatever torch.load says about a truncated file)
        torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def splits(synthetic_root):
    return load_cifar10(synthetic_root, train=True, verify=False), load_cifar10(
        synthetic_root, train=False, verify=False
    )


def _saves(monkeypatch):
    saved = []
    real = steps.save_checkpoint
    monkeypatch.setattr(
        steps, "save_checkpoint", lambda path, **state: saved.append(state["epoch"]) or real(path, **state)
    )
    return saved


@pytest.mark.slow
@pytest.mark.parametrize("every, expected", [(0.0, [1, 2, 3]), (1e9, [3])])
def test_checkpoints_are_written_at_the_cadence_and_after_the_last_epoch(
    splits, tmp_path, monkeypatch, every, expected
):
    saved = _saves(monkeypatch)
    config = TrainConfig(epochs=3, **SMALL)
    runs.train(config, *splits, device="cpu", progress=False, checkpoint=tmp_path / "a.pt", checkpoint_every=every)
    assert saved == expected and load_checkpoint(tmp_path / "a.pt")["epoch"] == 3


def test_a_checkpoint_is_due_when_its_time_has_come():
    cpu = torch.device("cpu")
    assert runs._due(60.0, 60.0, cpu) and runs._due(0.0, 0.0, cpu) and not runs._due(59.9, 60.0, cpu)
    assert runs._checkpoints_written(10, 15.0, 60.0) == 3  # 150 s of epochs: at 60 s, 120 s, and the last
    assert runs._checkpoints_written(10, 15.0, 0.0) == 10
    with pytest.raises(ValueError, match="checkpoint_every must be >= 0"):
        runs.train(TrainConfig(), None, None, checkpoint_every=-1)


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["onecycle", "plateau"])
def test_a_planned_stop_saves_and_the_resume_is_exact(splits, tmp_path, monkeypatch, schedule):
    config = TrainConfig(epochs=3, schedule=schedule, **SMALL)
    straight = runs.train(config, *splits, device="cpu", progress=False)
    saved = _saves(monkeypatch)
    path = tmp_path / "b.pt"
    stopped = runs.train(config, *splits, device="cpu", progress=False, checkpoint=path, until_epoch=1)
    assert saved == [1] and stopped.test_accuracy is None and len(stopped.history) == 1  # no test pass yet
    assert not is_finished(read_state(path))
    resumed = runs.train(config, *splits, device="cpu", progress=False, checkpoint=path, resume=True)
    assert saved == [1, 3] and is_finished(read_state(path))  # 60 s had not passed: only the last epoch
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed.test_accuracy == straight.test_accuracy


@pytest.mark.slow
def test_a_resume_onto_other_data_with_the_same_counts_is_refused(splits, tmp_path):
    import dataclasses

    config = TrainConfig(epochs=2, **SMALL)
    path = tmp_path / "c.pt"
    runs.train(config, *splits, device="cpu", progress=False, checkpoint=path, until_epoch=1)
    relabelled = dataclasses.replace(splits[0], source="CIFAR-10 (JPEG copy)")
    with pytest.raises(CheckpointError, match=r"other data.*data: checkpoint 'synthetic.*'CIFAR-10 \(JPEG copy\)'"):
        runs.train(config, relabelled, splits[1], device="cpu", progress=False, checkpoint=path, resume=True)
    assert load_checkpoint(path)["epoch"] == 1


def test_one_loader_says_what_was_unreadable_and_leaves_it(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"junk")
    with pytest.raises(CheckpointError, match=r"junk.pt is not a readable classroom model.*left untouched; reinstall"):
        read_state(path, what="classroom model", fix="reinstall vggedu")
    assert path.read_bytes() == b"junk" and issubclass(CheckpointError, ValueError)
    save_checkpoint(tmp_path / "ok.pt", epoch=2, config={"epochs": 3}, model={})
    assert not is_finished(read_state(tmp_path / "ok.pt"))
    save_checkpoint(tmp_path / "ok.pt", epoch=2, config={"epochs": 3}, model={}, plan={"epochs": 2})
    assert is_finished(read_state(tmp_path / "ok.pt"))  # a time budget planned 2 of the 3
