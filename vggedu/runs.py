"""A whole training run: the five steps in order, fitted into a time budget, checkpointed at a cadence.

:func:`train` runs the steps of :mod:`vggedu.steps` (setup, resume, epochs, finite check, save,
the test measurement); :func:`plan_epochs` fits a run into a time budget by timing the real work
where it runs. Everything here keeps a learner's run safe (atomic checkpoints at a cadence, exact
resume, a clear stop before anything non-finite is saved) and honest (choices on a held-out
validation split, a run card with every result). With ``torchrun`` the same code trains on
several GPUs (:mod:`vggedu.distributed`). Introduced in notebook 05.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from . import distributed as dist
from .checkpoints import CheckpointError
from .data import CIFAR10Split
from .steps import (
    EVAL_BATCH,
    Run,
    TrainResult,
    _apply_plan,
    check_finite,
    finish_run,
    resume_run,
    run_card,
    run_epoch,
    save_run,
    setup_run,
)
from .training import TrainConfig, evaluate, train_one_epoch

__all__ = [
    "CHECKPOINT_EVERY",
    "plan_epochs",
    "epochs_that_fit",
    "train",
    # the steps, where notebooks import them from (they live in vggedu.steps)
    "EVAL_BATCH",
    "Run",
    "TrainResult",
    "run_card",
    "setup_run",
    "resume_run",
    "run_epoch",
    "check_finite",
    "save_run",
    "finish_run",
]

CHECKPOINT_EVERY = 60.0  # seconds between checkpoints; the last epoch is always saved


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds ``fn`` takes, the device's queue drained before the clock stops."""
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
    return time.perf_counter() - t0


def _checkpoints_written(epochs: int, epoch_seconds: float, every: float) -> int:
    """How many checkpoints a run of ``epochs`` writes: one each ``every`` seconds, and the last epoch's."""
    return min(epochs, math.floor(epochs * epoch_seconds / every) + 1) if every > 0 else epochs


def epochs_that_fit(
    *,
    budget: float,
    max_epochs: int,
    steps: int,
    step_seconds: float,
    eval_images: float,
    final_images: float,
    eval_image_seconds: float,
    finite_seconds: float,
    write_seconds: float,
    checkpoint_every: float,
) -> tuple[int, float]:
    """The most epochs (up to ``max_epochs``) whose training, validation, finite checks and checkpoint
    writes, plus the final test pass, fit in ``budget`` seconds; and the seconds of one epoch."""
    epoch_seconds = steps * step_seconds + eval_images * eval_image_seconds + finite_seconds
    left = budget - final_images * eval_image_seconds
    epochs = min(max_epochs, int(left // epoch_seconds)) if left > 0 else 0
    while (
        epochs > 0
        and epochs * epoch_seconds + _checkpoints_written(epochs, epoch_seconds, checkpoint_every) * (write_seconds)
        > left
    ):
        epochs -= 1
    return epochs, epoch_seconds


def plan_epochs(
    run: Run,
    started: float,
    *,
    checkpoint: Path | None = None,
    checkpoint_every: float = CHECKPOINT_EVERY,
    probe_steps: int = 6,
    margin: float = 0.9,
) -> dict:
    """Fit the run into ``config.time_budget`` seconds: time the real work, then plan the epochs.

    Timed where the run will run, on what it will run: the training step of ``run.model`` itself
    (the DistributedDataParallel wrapper with its gradient all-reduce, if there is one) for
    ``probe_steps`` steps after two untimed warm-up steps; an evaluation batch of the real size
    after an untimed one (the first pays cuDNN's autotuning); :func:`check_finite`; and, with a
    ``checkpoint``, one checkpoint write. The weights, batch-norm statistics, optimiser and scaler
    are then put back exactly as they were, so the run is the one its config describes (bit for
    bit on the CPU), over the planned number of epochs. The plan leaves room for the time already
    spent since ``started``, the final test pass, and ``margin`` for noise (on a shared 2-core
    machine single epochs vary by 10-25 %). Every process plans from the same (averaged) timings.
    The plan is stored in the run card (``time_budget``) and in every checkpoint, so a resumed
    run keeps it. Returns the plan.
    """
    config, loader = run.config, run.train_loader
    saved = copy.deepcopy(
        (run.net.state_dict(), run.optimizer.state_dict(), run.scaler.state_dict() if run.scaler else None)
    )
    steps = min(probe_steps, max(len(loader) - 2, 1))

    def step(n: int) -> None:
        train_one_epoch(
            run.model,
            itertools.islice(loader, n),
            run.optimizer,
            scaler=run.scaler,
            amp_dtype=run.amp_dtype,
            label_smoothing=config.label_smoothing,
        )

    step(2)  # warm-up: first calls allocate, and cuDNN tunes its kernels
    step_seconds = _timed(lambda: step(steps), run.device) / steps
    eval_loader = run.val_loader or run.test_loader
    batch = [next(iter(eval_loader))]
    evaluate(run.net, batch, amp_dtype=run.amp_dtype)  # warm-up at the real batch size and shapes
    eval_image_seconds = _timed(lambda: evaluate(run.net, batch, amp_dtype=run.amp_dtype), run.device) / len(
        batch[0][1]
    )
    finite_seconds = _timed(lambda: check_finite(run, {"epoch": 0}, None), run.device)
    write_seconds = 0.0
    if checkpoint is not None:
        probe_file = Path(checkpoint).with_name(f".{Path(checkpoint).name}.plan-probe")
        write_seconds = _timed(lambda: save_run(run, probe_file), run.device)
        probe_file.unlink(missing_ok=True)
        run.saved_epoch = 0
    net_state, optimizer_state, scaler_state = saved
    run.net.load_state_dict(net_state)
    run.optimizer.load_state_dict(optimizer_state)
    if run.scaler is not None:
        run.scaler.load_state_dict(scaler_state)
    # Every process plans from the same numbers (means over processes, on the run's device), so all plan the
    # same epochs: each evaluates its 1/world of the images.
    elapsed = time.perf_counter() - started
    timings = torch.tensor(
        [step_seconds, eval_image_seconds, finite_seconds, write_seconds, elapsed], device=run.device
    )
    step_seconds, eval_image_seconds, finite_seconds, write_seconds, elapsed = (
        dist.all_reduce_sum(timings) / dist.world_size()
    ).tolist()
    share = 1 / dist.world_size()
    epochs, epoch_seconds = epochs_that_fit(
        budget=margin * config.time_budget - elapsed,
        max_epochs=config.epochs,
        steps=len(loader),
        step_seconds=step_seconds,
        eval_images=run.card["val_images"] * share,
        final_images=2 * run.card["test_images"] * share,  # one pass of [x, x.flip(3)]
        eval_image_seconds=eval_image_seconds,
        finite_seconds=finite_seconds,
        write_seconds=write_seconds,
        checkpoint_every=checkpoint_every,
    )
    if epochs < 1 or epochs * len(loader) < 2:
        raise ValueError(
            f"a time budget of {config.time_budget:g} s does not fit one epoch here: an epoch takes about "
            f"{epoch_seconds:.0f} s on {run.card['device']} (batch {config.batch_size}, width {config.width}). "
            "Give a larger budget, or train a smaller model (--width, --model A) or fewer images (--train-size)."
        )
    plan = {
        "seconds": config.time_budget,
        "epochs": epochs,
        "max_epochs": config.epochs,
        "images_per_second": round(config.batch_size / step_seconds, 1),
        "epoch_seconds_planned": round(epoch_seconds, 2),
        "checkpoint_seconds": round(write_seconds, 3),
    }
    _apply_plan(run, plan)
    return plan


def _due(elapsed: float, every: float, device: torch.device) -> bool:
    """Whether a checkpoint is due, decided by all processes together (they must all save, or none)."""
    flag = torch.tensor([float(elapsed >= every)], device=device)
    return bool(dist.all_reduce_sum(flag).item() > 0) if dist.world_size() > 1 else bool(flag.item())


def train(
    config: TrainConfig,
    train_split: CIFAR10Split,
    test_split: CIFAR10Split,
    *,
    device: torch.device | str = "auto",
    checkpoint: str | Path | None = None,
    resume: bool = False,
    checkpoint_every: float = CHECKPOINT_EVERY,
    until_epoch: int | None = None,
    mode: str = "full",
    progress: bool = True,
    test_curve: bool = False,
    measure_test: bool = True,
    on_epoch_end: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train a CIFAR-head VGG as ``config`` says; checkpoint at a cadence; resume exactly.

    ``config.val_size`` training images are held out for validation; the test set is measured
    once, at the end (and every epoch with ``test_curve``, for curves only). The normalisation
    statistics come from the training images. ``measure_test=False`` skips the test set
    altogether (runs that only inform a choice). The checkpoint is written when
    ``checkpoint_every`` seconds have passed since the last one (0: every epoch), and always after
    the last epoch and before a planned stop (``until_epoch``: train up to that epoch, save, and
    return without the test measurement; resume later). With ``resume=True`` and an existing
    ``checkpoint``, training continues after the last saved epoch; on the CPU the result is
    bit-identical to an uninterrupted run.
    """
    checkpoint = Path(checkpoint) if checkpoint else None
    existing = checkpoint is not None and checkpoint.exists()
    if existing and not resume:
        raise CheckpointError(
            f"{checkpoint} already holds a run; it is left untouched. Resume it (resume=True, --resume), "
            "or give a new checkpoint path (or delete the file) to start again."
        )
    if checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be >= 0 seconds (0: every epoch), got {checkpoint_every!r}")
    started = time.perf_counter()
    run = setup_run(config, train_split, test_split, device=device, mode=mode)
    if existing:
        resume_run(run, checkpoint)
        run.saved_epoch = run.start_epoch
    elif config.time_budget:
        plan_epochs(run, started, checkpoint=checkpoint, checkpoint_every=checkpoint_every)
    stop = run.epochs if until_epoch is None else min(run.epochs, until_epoch)
    bar = None
    if progress and dist.is_main():
        from tqdm.auto import tqdm

        bar = tqdm(total=len(run.train_loader), leave=False, desc="epoch")
    last_save = time.perf_counter()
    try:
        for epoch in range(run.start_epoch, stop):
            if bar is not None:
                bar.reset(total=len(run.train_loader))
                bar.set_description(f"epoch {epoch + 1}/{run.epochs}")
            row = run_epoch(run, epoch, test_curve=test_curve, progress=bar)
            check_finite(run, row, checkpoint)
            run.history.append(row)
            if checkpoint is not None and (
                epoch + 1 == stop or _due(time.perf_counter() - last_save, checkpoint_every, run.device)
            ):
                save_run(run, checkpoint)
                last_save = time.perf_counter()
            if on_epoch_end is not None:
                on_epoch_end(row)
    finally:
        if bar is not None:
            bar.close()
    return finish_run(run, measure_test=measure_test and stop == run.epochs)
