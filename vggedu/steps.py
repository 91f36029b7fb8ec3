"""The five steps of a training run, each a function a notebook can call and show.

:func:`setup_run` (split, loaders, model, optimiser), :func:`resume_run` (from a checkpoint),
:func:`run_epoch` (one epoch and its validation), :func:`check_finite` (stop before anything
non-finite is saved), :func:`save_run` (the checkpoint) and :func:`finish_run` (the one
measurement on the test set). :func:`vggedu.runs.train` calls them in order. Introduced in notebook 05.
"""

from __future__ import annotations

import itertools
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import __version__
from . import distributed as dist
from .checkpoints import load_checkpoint, save_checkpoint
from .data import CIFAR10Split, channel_stats
from .devices import autocast_dtype, device_name, pick_device
from .loaders import DeviceLoader
from .models import VGG
from .training import (
    TrainConfig,
    TrainingDiverged,
    build_model,
    evaluate,
    make_optimizer,
    make_scheduler,
    split_validation,
    train_one_epoch,
)

__all__ = [
    "Run",
    "TrainResult",
    "EVAL_BATCH",
    "run_card",
    "setup_run",
    "resume_run",
    "run_epoch",
    "check_finite",
    "save_run",
    "finish_run",
]

EVAL_BATCH = 1000  # divides 5,000 and 10,000: no ragged last batch for cuDNN to tune again


@dataclass
class TrainResult:
    model: VGG
    history: list[dict]  # one row per epoch: losses, accuracies, learning rate, momentum, seconds
    test_accuracy: float | None  # measured once, after the last epoch, without test-time augmentation
    test_accuracy_tta: float | None  # the same pass, with flip TTA (soft-max outputs averaged); None: not measured
    seconds: float  # wall time of the training epochs (their validation included)
    card: dict  # device, versions, data, mode, config
    val_accuracy: float | None = None  # after the last epoch (None without a validation split)


@dataclass
class Run:
    """Everything a training run holds between epochs (made by :func:`setup_run`)."""

    config: TrainConfig
    device: torch.device
    amp_dtype: torch.dtype | None
    model: nn.Module  # what trains: the VGG, or DistributedDataParallel around it
    net: VGG  # the VGG itself: evaluation and checkpoints use it
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler | None
    train_loader: DeviceLoader
    val_loader: DeviceLoader | None
    test_loader: DeviceLoader
    card: dict
    epochs: int  # config.epochs, or what the time budget allows (plan_epochs)
    history: list[dict] = field(default_factory=list)
    start_epoch: int = 0
    saved_epoch: int = 0  # the epoch of the checkpoint on disk (0: none written yet)
    last_epoch_steps: int = 0  # a time budget's shorter last epoch (0: the last epoch is whole)

    def steps_in(self, epoch: int) -> int:
        """Training steps of ``epoch`` (from 0): every batch, or fewer in a budget's shorter last epoch."""
        if self.last_epoch_steps and epoch == self.epochs - 1:
            return self.last_epoch_steps
        return len(self.train_loader)


class _FirstBatches:
    """The first ``n`` batches of a loader, with a length (the progress bar and the step counter read it)."""

    def __init__(self, loader, n: int):
        self.loader, self.n = loader, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.n)


def run_card(
    config: TrainConfig,
    device: torch.device,
    *,
    data: str,
    train_images: int,
    test_images: int,
    val_images: int = 0,
    mode: str = "full",
    amp_dtype: torch.dtype | None = None,
    world_size: int = 1,
) -> dict:
    """What a result came from: device, versions, data, split, mode, precision, schedule and config."""
    schedule = (
        f"one-cycle: lr {config.lr / 10:g} -> {config.lr:g} -> {config.lr / 1000:g}"
        if config.schedule == "onecycle"
        else f"plateau: lr {config.lr:g}, x0.1 after {config.plateau_patience} epochs without a lower "
        + ("validation loss" if val_images else "training loss")
    )
    return {
        "device": device_name(device),
        "world_size": world_size,
        "torch": str(torch.__version__),  # TorchVersion would not load with weights_only=True
        "vggedu": __version__,
        "python": platform.python_version(),
        "data": data,
        "train_images": train_images,
        "val_images": val_images,
        "test_images": test_images,
        "mode": mode,
        "precision": str(amp_dtype).removeprefix("torch.") if amp_dtype else "float32",
        "schedule": schedule,
        "momentum": f"{config.momentum:g}, constant",
        "augmentation": (
            f"rescaled to a random side in {config.scale_min}..{config.scale_max} px, random 32x32 crop, flip"
            if config.scale_min
            else "4-pixel padded random 32x32 crop, flip"
        ),
        "config": config.to_dict(),
    }


def _epoch_seed(config: TrainConfig, epoch: int) -> int:
    # Dropout's masks in epoch k depend only on (seed, epoch, process): a resumed run draws
    # what an uninterrupted one would, with no random state to save.
    return (config.seed * 1_000_003 + epoch) * 1_009 + dist.rank()


def setup_run(
    config: TrainConfig,
    train_split: CIFAR10Split,
    test_split: CIFAR10Split,
    *,
    device: torch.device | str = "auto",
    mode: str = "full",
) -> Run:
    """Step 1: hold out the validation split, build the loaders, the model and its optimiser."""
    device = pick_device(device) if isinstance(device, str) else device
    world, rank = dist.world_size(), dist.rank()
    if config.batch_size % world:
        raise ValueError(
            f"batch_size {config.batch_size} is the global batch and must be divisible by the {world} processes"
        )
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every batch has the same shape: let cuDNN pick the fastest kernels
    amp_dtype = autocast_dtype(device, config.mixed_precision)
    fit_split, val_split = split_validation(train_split, config)
    mean, std = channel_stats(fit_split.images)
    loader_args = dict(
        device=device, mean=mean, std=std, channels_last=config.channels_last, rank=rank, world_size=world
    )
    train_loader = DeviceLoader(
        fit_split, config.batch_size, train=True, seed=config.seed, scale=config.scale, **loader_args
    )
    if len(train_loader) == 0:
        raise ValueError(f"batch_size {config.batch_size} is larger than the {len(fit_split)} training images")
    test_loader = DeviceLoader(test_split, EVAL_BATCH, train=False, **loader_args)
    val_loader = DeviceLoader(val_split, EVAL_BATCH, train=False, **loader_args) if val_split else None

    net = build_model(config, num_classes=len(train_split.classes)).to(device)
    if config.channels_last:
        net = net.to(memory_format=torch.channels_last)
    model: nn.Module = net
    if world > 1:
        if config.sync_batchnorm:
            net = dist.convert_sync_batchnorm(net, device)
        model = nn.parallel.DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)
    optimizer = make_optimizer(model, config)
    card = run_card(
        config,
        device,
        data=train_split.source,
        train_images=len(fit_split),
        val_images=len(val_split) if val_split else 0,
        test_images=len(test_split),
        mode=mode,
        amp_dtype=amp_dtype,
        world_size=world,
    )
    return Run(
        config=config,
        device=device,
        amp_dtype=amp_dtype,
        model=model,
        net=net,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, config, len(train_loader)),
        scaler=torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None,
        train_loader=train_loader,
        val_loader=val_loader,
        test_loader=test_loader,
        card=card,
        epochs=config.epochs,
    )


def resume_run(run: Run, checkpoint: str | Path) -> None:
    """Step 2: continue from ``checkpoint`` (same config, data and number of processes, or a CheckpointError)."""
    state = load_checkpoint(checkpoint, run.config, data=run.card)
    if state.get("plan"):  # a time-budgeted run keeps the plan it started with (and its schedule's length)
        _apply_plan(run, state["plan"])
    run.net.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if run.scaler is not None and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    run.history = list(state["history"])
    run.start_epoch = state["epoch"]


def run_epoch(run: Run, epoch: int, *, test_curve: bool = False, progress=None) -> dict:
    """Step 3: train one epoch (``epoch`` counts from 0), then measure the validation split.

    Returns the epoch's row for the history. ``test_curve`` also measures the test set, for
    learning curves only: such a row's test numbers must never decide anything.
    """
    config, t0 = run.config, time.perf_counter()
    torch.manual_seed(_epoch_seed(config, epoch))
    run.train_loader.set_epoch(epoch)
    row = {"epoch": epoch + 1, "lr": run.optimizer.param_groups[0]["lr"]}
    row["momentum"] = run.optimizer.param_groups[0]["momentum"]
    steps = run.steps_in(epoch)
    batches = run.train_loader if steps == len(run.train_loader) else _FirstBatches(run.train_loader, steps)
    fit = train_one_epoch(
        run.model,
        batches,
        run.optimizer,
        scheduler=run.scheduler if config.schedule == "onecycle" else None,
        scaler=run.scaler,
        amp_dtype=run.amp_dtype,
        label_smoothing=config.label_smoothing,
        progress=progress,
    )
    row.update(train_loss=fit["loss"], train_accuracy=fit["accuracy"])
    if steps < len(run.train_loader):
        row["steps"] = steps
    dist.broadcast_buffers(run.net)  # every process evaluates with the same batch-norm statistics
    if run.val_loader is not None:
        val = evaluate(run.net, run.val_loader, amp_dtype=run.amp_dtype)
        row.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
    if test_curve:
        test = evaluate(run.net, run.test_loader, amp_dtype=run.amp_dtype)
        row.update(test_loss=test["loss"], test_accuracy=test["accuracy"])
    if config.schedule == "plateau":  # held-out data if there is some, never the test set
        run.scheduler.step(row.get("val_loss", row["train_loss"]))
    row["seconds"] = time.perf_counter() - t0
    return row


def check_finite(run: Run, row: dict, checkpoint: Path | None) -> None:
    """Step 4: stop with advice if a weight, a buffer or a loss of this epoch is NaN or infinite.

    Runs before the epoch is saved, so the checkpoint on disk stays the last good one. The
    verdict is the same in every process (summed over them), so none waits for another forever.
    """
    tensors = [t for t in (*run.net.parameters(), *run.net.buffers()) if t.is_floating_point()]
    bad_weights = torch.stack([(~torch.isfinite(t)).any() for t in tensors]).sum().float()
    losses = [v for k, v in row.items() if k.endswith("_loss")]
    bad_losses = torch.tensor(float(sum(not math.isfinite(v) for v in losses)), device=bad_weights.device)
    bad_weights, bad_losses = dist.all_reduce_sum(torch.stack([bad_weights, bad_losses])).tolist()
    if not (bad_weights or bad_losses):
        return
    if checkpoint is not None and run.saved_epoch:
        kept = f"the last good checkpoint (epoch {run.saved_epoch}) is kept at {checkpoint}"
    else:
        kept = "no checkpoint had been written yet"
    what = "the weights" if bad_weights else "a loss"
    detail = ", ".join(f"{k} {v}" for k, v in row.items() if k.endswith("_loss"))
    raise TrainingDiverged(
        f"{what} became NaN or infinite in epoch {row['epoch']} ({detail}); training stopped and {kept}. "
        f"Try a lower learning rate (now {run.config.lr}), batch norm (batch_norm=True), "
        "or mixed precision off (--no-mixed-precision)."
    )


def _checkpoint_state(run: Run) -> dict:
    return dict(
        model=run.net.state_dict(),
        optimizer=run.optimizer.state_dict(),
        # Older PyTorch (2.3) keeps OneCycleLR's annealing function, a bound method, in its
        # state; weights_only loading refuses it, and the new scheduler has it anyway.
        scheduler={k: v for k, v in run.scheduler.state_dict().items() if not callable(v)},
        scaler=run.scaler.state_dict() if run.scaler else None,
        epoch=len(run.history),
        plan=run.card.get("time_budget"),
        config=run.config.to_dict(),
        history=run.history,
        card=run.card,
    )


def save_run(run: Run, checkpoint: Path) -> None:
    """Step 5: write the checkpoint (one process writes; the others wait until it is on disk)."""
    if dist.is_main():
        save_checkpoint(checkpoint, **_checkpoint_state(run))
    run.saved_epoch = len(run.history)
    dist.barrier()


def _apply_plan(run: Run, plan: dict) -> None:
    run.epochs = plan["epochs"]
    run.last_epoch_steps = plan.get("last_epoch_steps", 0)
    run.card["time_budget"] = plan
    if run.config.schedule == "onecycle":  # the cycle spans the planned steps, ending at a low learning rate
        steps = sum(run.steps_in(epoch) for epoch in range(run.epochs))
        run.scheduler = make_scheduler(run.optimizer, run.config, len(run.train_loader), total_steps=steps)


def finish_run(run: Run, *, measure_test: bool = True) -> TrainResult:
    """The one measurement on the test set, plain and with flip TTA from the same forward pass.

    ``measure_test=False`` leaves it out (None): for runs that only inform a choice, which the
    validation split decides; the chosen model is then measured once.
    """
    dist.broadcast_buffers(run.net)
    test = evaluate(run.net, run.test_loader, tta=True, amp_dtype=run.amp_dtype) if measure_test else {}
    last = run.history[-1] if run.history else {}
    return TrainResult(
        model=run.net,
        history=run.history,
        test_accuracy=test.get("accuracy"),
        test_accuracy_tta=test.get("tta_accuracy"),
        seconds=sum(r["seconds"] for r in run.history),
        card=run.card,
        val_accuracy=last.get("val_accuracy"),
    )
