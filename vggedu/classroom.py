"""The classroom model: the ``cpu`` preset's trained weights, shipped with the package.

A class can run notebooks 06-08 without training anything first::

    model, info = vggedu.load_classroom_model()          # VGG-11-BN, width 0.25, CIFAR head, eval mode
    x = DeviceLoader(split, 500, train=False, mean=info["mean"], std=info["std"])  # its normalisation

``info`` holds the run card (device, data, config, time budget), the training history, the
per-channel mean and standard deviation it was trained with, and its validation and test accuracy
(the test set measured once, at the end of training). ``benchmarks/classroom_model.py`` re-measures
the test accuracy on real data and writes this file from a training checkpoint (``export``).
Introduced in notebook 05 (how it was trained) and used from notebook 06 on.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from .checkpoints import is_finished, read_state
from .models import VGG
from .training import TrainConfig, build_model

__all__ = ["WEIGHTS", "CLASSROOM_WEIGHTS", "load_classroom_model", "export_classroom_model"]

WEIGHTS = Path(__file__).with_name("weights")
CLASSROOM_WEIGHTS = WEIGHTS / "classroom.pt"
_KEYS = ("model", "card", "history", "mean", "std", "val_accuracy", "test_accuracy", "test_accuracy_tta")


def load_classroom_model(device: torch.device | str = "cpu", *, path: str | Path | None = None) -> tuple[VGG, dict]:
    """The shipped classroom model (eval mode, on ``device``) and what it is: ``(model, info)``.

    ``path`` loads another file written by :func:`export_classroom_model` instead, e.g. notebook 06's
    jittered model in :data:`WEIGHTS`.

    The weights load strictly into the model the run card describes; ``info`` has the card,
    history, mean, std and the accuracies measured when it was trained.
    """
    file = Path(path) if path is not None else CLASSROOM_WEIGHTS
    if not file.is_file():
        raise FileNotFoundError(
            f"no classroom model at {file}. It ships with vggedu (vggedu/weights/classroom.pt); reinstall the "
            "package from the repository, or train it: python -m vggedu.train --preset cpu --checkpoint runs/cpu.pt"
        )
    state = read_state(
        file,
        what="classroom model",
        fix="reinstall vggedu to get the shipped file back, or pass path=... to another one",
    )
    missing = [k for k in _KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(f"{file} is not a classroom model file (missing {', '.join(missing)}); it is left untouched")
    # the shipped weights replace any start the run had (a fine-tuned model names its start's checkpoint)
    config = dataclasses.replace(TrainConfig(**state["card"]["config"]), init_from="")
    model = build_model(config, num_classes=state["model"]["classifier.6.weight"].shape[0])
    model.load_state_dict(state["model"], strict=True)
    info = {k: state[k] for k in _KEYS if k != "model"}
    info["mean"], info["std"] = tuple(info["mean"]), tuple(info["std"])
    return model.to(device).eval(), info


def export_classroom_model(
    checkpoint: str | Path, result: dict, mean, std, path: str | Path = CLASSROOM_WEIGHTS
) -> Path:
    """Write the shipped file from a finished training checkpoint and its JSON result (weights only: no
    optimiser state, float32), with its card, history, normalisation and accuracies."""
    state = read_state(checkpoint)
    if not is_finished(state):
        raise ValueError(f"{checkpoint} is not a finished run (epoch {state['epoch']}); finish it with --resume first")
    out = {
        "model": {k: v.float().contiguous() if v.is_floating_point() else v for k, v in state["model"].items()},
        "card": result["card"],
        "history": result["history"],
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "val_accuracy": result["val_accuracy"],
        "test_accuracy": result["test_accuracy"],
        "test_accuracy_tta": result["test_accuracy_tta"],
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, path)
    return path
