"""Checkpoints: written atomically, read with one loader whose errors say what to do.

* :func:`save_checkpoint` writes to a temporary file in the same folder and renames it
  (``os.replace``), so a kill at any moment leaves the old checkpoint or the new one, never half.
* :func:`read_state` is the package's one ``torch.load``: ``weights_only=True``, and a file that
  cannot be read is reported (and left untouched) with the fix for that kind of file. The
  trainer, the classroom model and the ImageNet weights all load through it.
* :func:`load_checkpoint` reads a training checkpoint and checks it belongs to this run (config,
  data, number of processes); :func:`is_finished` says whether its run has ended.

Nothing here knows the training loop. Introduced in notebook 05.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["CheckpointError", "save_checkpoint", "read_state", "load_checkpoint", "is_finished", "planned_epochs"]


class CheckpointError(RuntimeError, ValueError):
    """A file that cannot be used here (another model, config or data, unfinished, or unreadable)."""


def save_checkpoint(path: str | Path, **state) -> Path:
    """Write ``state`` atomically: to a temporary file in the same folder, fsync, then rename.

    A kill at any moment leaves either the old checkpoint or the new one, never half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_state(path: str | Path, *, what: str = "vggedu checkpoint", fix: str = "") -> object:
    """``torch.load(path, weights_only=True)`` on the CPU, or a :class:`CheckpointError` that names the file,
    says it is not a readable ``what`` and left untouched, and gives ``fix``."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"{path} is not a readable {what} ({type(error).__name__}: {str(error)[:200]}). "
            f"It is left untouched{'; ' + fix if fix else '.'}"
        ) from error


_DATA_KEYS = ("data", "train_images", "val_images", "test_images", "world_size")


def load_checkpoint(path: str | Path, config=None, *, data: dict | None = None) -> dict:
    """Load a training checkpoint (``weights_only=True``) and check it belongs to this run.

    If ``config`` (a :class:`~vggedu.training.TrainConfig`) is given, it must be the checkpoint's
    (fields added since the save take their defaults); if ``data`` is given (a run card, or a dict
    with the data's name, image counts and ``world_size``), those must be the checkpoint's too.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; start without --resume to train from scratch")
    state = read_state(path, fix="use another --checkpoint path to start a new run.")
    if not isinstance(state, dict) or "config" not in state or "model" not in state:
        raise CheckpointError(
            f"{path} is not a vggedu training checkpoint (no config or model state); it is left untouched"
        )
    if config is not None:
        saved, now = {**type(config)().to_dict(), **state["config"]}, config.to_dict()
        differ = {k: (saved.get(k), now.get(k)) for k in {**saved, **now} if saved.get(k) != now.get(k)}
        if differ:
            detail = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in differ.items())
            raise CheckpointError(
                f"{path} belongs to another run ({detail}). Resume with the checkpoint's settings, "
                "or give a new --checkpoint path to start this run; the old checkpoint is left untouched."
            )
    if data is not None:
        saved = state.get("card", {})
        differ = {k: (saved[k], data[k]) for k in _DATA_KEYS if k in saved and k in data and saved[k] != data[k]}
        if differ:
            detail = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in differ.items())
            raise CheckpointError(
                f"{path} was trained on other data or processes ({detail}). It is left untouched; resume with "
                "the same data and number of processes, or give a new checkpoint path."
            )
    return state


def planned_epochs(state: dict) -> int:
    """The epochs a checkpoint's run was to train: its time budget's plan, else its config's ``epochs``."""
    plan = state.get("plan")
    return plan["epochs"] if plan else state["config"]["epochs"]


def is_finished(state: dict) -> bool:
    """Whether a checkpoint's run trained every epoch it planned."""
    return state["epoch"] >= planned_epochs(state)
