"""Notebook plumbing shared by notebooks 04 and 05: mode, data and run folders from the environment.

Environment variables (all optional):

* ``VGGEDU_MODE``: ``quick`` or ``full``. Unset: full where there is a GPU, quick elsewhere.
* ``VGGEDU_DATA``: a folder that holds (or will hold) ``cifar-10-batches-py`` (default
  ``data``), or ``synthetic`` for the small generated set the tests use (written under
  ``VGGEDU_RUNS``).
* ``VGGEDU_NO_VERIFY=1``: accept a copy in the official layout whose checksums differ.
* ``VGGEDU_DATA_LABEL``: how results should name the data (e.g. ``CIFAR-10 (JPEG copy)``).
* ``VGGEDU_RUNS``: where checkpoints and results go (default ``runs``).
* ``VGGEDU_OFFLINE=1``: never try a download that is optional (notebook 08's ImageNet weights); the
  tests set it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .data import CIFAR10Split, load_splits, write_synthetic_cifar10
from .devices import pick_device

__all__ = ["Settings", "settings", "load_data"]


@dataclass(frozen=True)
class Settings:
    quick: bool  # small runs (no GPU, or asked for)
    reason: str  # why this mode was chosen, to print
    device: torch.device
    data: str  # folder or "synthetic"
    verify: bool
    data_label: str | None
    runs: Path


def settings() -> Settings:
    """Read the environment; quick mode is chosen automatically where there is no GPU."""
    device = pick_device("auto")
    mode = os.environ.get("VGGEDU_MODE", "").strip().lower()
    if mode not in ("", "quick", "full"):
        raise ValueError(f"VGGEDU_MODE must be 'quick' or 'full', got {mode!r}")
    if mode:
        quick, reason = mode == "quick", f"VGGEDU_MODE={mode}"
    elif device.type == "cuda":
        quick, reason = False, "a GPU is available"
    else:
        quick, reason = True, "no GPU was found (quick mode chosen automatically; VGGEDU_MODE=full overrides)"
    return Settings(
        quick=quick,
        reason=reason,
        device=device,
        data=os.environ.get("VGGEDU_DATA", "data"),
        verify=os.environ.get("VGGEDU_NO_VERIFY", "") not in ("1", "true", "yes"),
        data_label=os.environ.get("VGGEDU_DATA_LABEL") or None,
        runs=Path(os.environ.get("VGGEDU_RUNS", "runs")),
    )


def load_data(
    s: Settings, *, synthetic_train: int = 2000, synthetic_test: int = 500
) -> tuple[CIFAR10Split, CIFAR10Split]:
    """Train and test splits as the settings say: synthetic, an existing folder, or a download."""
    if s.data == "synthetic":  # deterministic, so rewritten in place each time; it lives with the runs,
        # one folder per size, so notebooks that share a runs folder (nbval runs them in parallel) never mix sizes
        folder = s.runs / f"synthetic-data-{synthetic_train}-{synthetic_test}"
        root = write_synthetic_cifar10(folder, n_train=synthetic_train, n_test=synthetic_test)
        return load_splits(root, verify=False, label=s.data_label)
    root = Path(s.data)
    missing = not (root / "cifar-10-batches-py").is_dir() and root.name != "cifar-10-batches-py"
    return load_splits(root, verify=s.verify, label=s.data_label, download=missing)
