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
    "steps_left_over",
    "steps_still_fit",
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


def steps_left_over(
    *,
    budget: float,
    epochs: int,
    max_epochs: int,
    steps: int,
    step_seconds: float,
    eval_images: float,
    final_images: float,
    eval_image_seconds: float,
    finite_seconds: float,
    write_seconds: float,
    checkpoint_every: float,
) -> int:
    """Training steps of one more, shorter epoch that still fit after ``epochs`` whole ones (0: none).

    The budget is used to the step, not to the epoch: on a slow machine one epoch can be a tenth of
    the budget or more, and a plan in whole epochs would leave that much unused. The short epoch
    pays its validation, finite check and checkpoint write like any other.
    """
    if epochs >= max_epochs:
        return 0
    epoch_seconds = steps * step_seconds + eval_images * eval_image_seconds + finite_seconds
    used = epochs * epoch_seconds + final_images * eval_image_seconds
    used += _checkpoints_written(epochs + 1, epoch_seconds, checkpoint_every) * write_seconds
    spare = budget - used - eval_images * eval_image_seconds - finite_seconds
    extra = math.floor(spare / step_seconds + 1e-9) if spare > 0 else 0
    return min(extra, steps - 1) if epochs * steps + extra >= 2 else 0


def plan_epochs(
    run: Run,
    started: float,
    *,
    checkpoint: Path | None = None,
    checkpoint_every: float = CHECKPOINT_EVERY,
    probe_steps: int = 10,
    margin: float = 0.95,
) -> dict:
    """Fit the run into ``config.time_budget`` seconds: time the real work, then plan the epochs.

    Timed where the run will run, on what it will run: the training step of ``run.model`` itself
    (the DistributedDataParallel wrapper with its gradient all-reduce, if there is one) for
    ``probe_steps`` steps after three untimed warm-up steps; an evaluation batch of the real size
    after an untimed one (the first pays cuDNN's autotuning); :func:`check_finite`; and, with a
    ``checkpoint``, one checkpoint write. The weights, batch-norm statistics, optimiser and scaler
    are then put back exactly as they were, so the run is the one its config describes (bit for
    bit on the CPU), over the planned number of epochs. The plan leaves room for the time already
    spent since ``started``, the final test pass, and ``margin`` for noise (single epochs vary by
    about 6 % either way on a quiet 2-core machine; over a run that averages out), and fills the
    rest to the step: a last epoch cut short (``last_epoch_steps``) when a whole one does not fit.
    Every process plans from the same (averaged) timings. The plan is stored in the run card
    (``time_budget``) and in every checkpoint, so a resumed run keeps it. Returns the plan.
    """
    config, loader = run.config, run.train_loader
    saved = copy.deepcopy(
        (run.net.state_dict(), run.optimizer.state_dict(), run.scaler.state_dict() if run.scaler else None)
    )
    steps = min(probe_steps, max(len(loader) - 3, 1))

    def step(n: int) -> None:
        train_one_epoch(
            run.model,
            itertools.islice(loader, n),
            run.optimizer,
            scaler=run.scaler,
            amp_dtype=run.amp_dtype,
            label_smoothing=config.label_smoothing,
        )

    step(3)  # warm-up: first calls allocate, and cuDNN tunes its kernels
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
    timed = dict(
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
    epochs, epoch_seconds = epochs_that_fit(**timed)
    last_steps = steps_left_over(epochs=epochs, **timed)
    if epochs * len(loader) + last_steps < 2:
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
        "eval_seconds": round(timed["eval_images"] * eval_image_seconds + finite_seconds, 3),
        "final_seconds": round(timed["final_images"] * eval_image_seconds, 3),
    }
    if last_steps:  # one more epoch, cut short: it trains on the first last_steps batches of its order
        plan.update(epochs=epochs + 1, last_epoch_steps=last_steps)
    _apply_plan(run, plan)
    return plan


def steps_still_fit(*, time_left: float, steps: int, step_seconds: float, eval_seconds: float) -> int:
    """Training steps of the next epoch that fit in ``time_left`` seconds with its validation: ``steps`` if all do."""
    if time_left <= eval_seconds:
        return 0
    return min(steps, math.floor((time_left - eval_seconds) / step_seconds))


def _keep_to_budget(run: Run, epoch: int, started: float, budget: float) -> None:
    """Cut the run short where a machine that slowed down since the plan would take it past its budget.

    Before each epoch of a budgeted run: the seconds left (97 % of the budget, less what has passed,
    the final test pass and a checkpoint write) against this epoch's cost at the speed of the epochs so far.
    If it does not fit, this epoch becomes the last, with the steps that fit (none: the run ends
    here), and the plan says so (``cut_at_epoch``); the learning-rate schedule then stops before its
    end. Every process decides from the same (averaged) numbers.
    """
    plan = run.card["time_budget"]
    whole = [row["seconds"] for row in run.history if "steps" not in row]
    if not whole or epoch >= run.epochs:
        return
    steps = len(run.train_loader)
    speed = max(whole[-3:]) / plan["epoch_seconds_planned"]  # the slowest of the last three: err on the safe side
    eval_seconds = plan["eval_seconds"] * speed
    step_seconds = max(plan["epoch_seconds_planned"] * speed - eval_seconds, 1e-9) / steps
    # 3 % of the budget kept spare: the final pass (the test set and its mirror image in one forward) runs at a
    # batch twice the size the planner timed, and the last checkpoint and the return are not timed at all
    left = 0.97 * budget - (time.perf_counter() - started) - plan["final_seconds"] * speed - plan["checkpoint_seconds"]
    numbers = torch.tensor([left, step_seconds, eval_seconds], device=run.device)
    left, step_seconds, eval_seconds = (dist.all_reduce_sum(numbers) / dist.world_size()).tolist()
    planned = run.steps_in(epoch)
    fit = steps_still_fit(time_left=left, steps=planned, step_seconds=step_seconds, eval_seconds=eval_seconds)
    if fit >= planned:
        return
    if fit < 1:  # not one more step fits: the run ends with the epochs it has
        run.epochs = epoch
    else:
        run.epochs, run.last_epoch_steps = epoch + 1, fit
        plan["last_epoch_steps"] = fit
    plan.update(epochs=run.epochs, cut_at_epoch=run.epochs)  # the last epoch now: the one cut short, or the last run


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
    guard = bool(config.time_budget) and not existing  # a resumed run cannot know the time of its earlier sessions
    stop = run.epochs if until_epoch is None else min(run.epochs, until_epoch)
    bar = None
    if progress and dist.is_main():
        from tqdm.auto import tqdm

        bar = tqdm(total=len(run.train_loader), leave=False, desc="epoch")
    last_save = time.perf_counter()
    try:
        for epoch in range(run.start_epoch, stop):
            if guard:
                _keep_to_budget(run, epoch, started, config.time_budget)
                stop = min(stop, run.epochs)
                if epoch >= stop:  # the run ends here: its last epoch is the final one, on disk too
                    if checkpoint is not None and run.saved_epoch < len(run.history):
                        save_run(run, checkpoint)
                    break
            if bar is not None:
                bar.reset(total=run.steps_in(epoch))
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
