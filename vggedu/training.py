"""Training VGG on CIFAR-10, the parts a notebook shows: the config, the model, the step, the evaluation.

* :class:`TrainConfig` is everything that decides a run (saved in every checkpoint and result),
  checked field by field; :data:`PRESETS` are the two recipes (``cpu``: the classroom model,
  ``gpu``: VGG-16-BN).
* :func:`build_model`, :func:`make_optimizer`, :func:`make_scheduler`: the network, SGD with
  momentum, and the learning-rate schedule a config describes.
* :func:`train_one_epoch` is the whole algorithm: forward, loss, backward, step.
  :func:`evaluate` and :func:`predict` measure a model (with flip test-time augmentation from
  the same forward pass).

The run around them (validation split, checkpoints, time budget, several processes) is
:mod:`vggedu.runs`; the device and precision policy :mod:`vggedu.devices`; saving and loading
:mod:`vggedu.checkpoints`. Introduced in notebook 05; ``python -m vggedu.train`` is the command line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from . import distributed as dist
from .checkpoints import CheckpointError, is_finished, load_checkpoint, planned_epochs, save_checkpoint
from .configs import config_name
from .data import CIFAR10Split, stratified_split
from .devices import autocast_dtype, pick_device, precision
from .models import INITS, VGG, init_from, vgg

__all__ = [
    "PRESETS",
    "TrainConfig",
    "TrainingDiverged",
    "build_model",
    "make_optimizer",
    "make_scheduler",
    "split_validation",
    "train_one_epoch",
    "evaluate",
    "predict",
    # where notebooks import them from (they live in vggedu.devices and vggedu.checkpoints)
    "pick_device",
    "autocast_dtype",
    "CheckpointError",
    "load_checkpoint",
    "save_checkpoint",
]

# Chosen by measurement on the validation split (README, "Benchmarks"; benchmarks/results/cpu_preset/).
PRESETS: dict[str, dict] = {
    # The classroom model: VGG-11-BN at a quarter of the width, a 10-minute budget on whatever CPU it runs
    # on (the trainer times a few steps and plans the one-cycle schedule over the epochs that fit, at most
    # 60). Chosen on validation accuracy, fp32 on 2 cores, one seed each: A 82.2 % (15 epochs), B 81.4 %
    # (10), B with batch 512 and lr 0.2 81.6 % (11) (benchmarks/results/cpu_preset/search/).
    "cpu": dict(
        model="A",
        width=0.25,
        epochs=60,
        batch_size=256,
        lr=0.1,
        schedule="onecycle",
        label_smoothing=0.1,
        dropout=0.0,
        time_budget=600.0,
    ),
    # VGG-16-BN at full width, the recipe for a GPU. Not yet run on a GPU.
    "gpu": dict(
        model="D", width=1.0, epochs=30, batch_size=512, lr=0.2, schedule="onecycle", label_smoothing=0.1, dropout=0.0
    ),
}

SCHEDULES = ("plateau", "onecycle")


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# Each field's check and the words for its valid range; __post_init__ runs them all.
_CHECKS: dict[str, tuple[Callable[[object], bool], str]] = {
    "batch_norm": (lambda v: isinstance(v, bool), "True or False"),
    "width": (lambda v: _is_number(v) and v > 0, "a positive number such as 1.0 or 0.25"),
    "epochs": (lambda v: _is_whole(v) and v >= 1, "a whole number >= 1"),
    "batch_size": (lambda v: _is_whole(v) and v >= 1, "a whole number >= 1"),
    "lr": (lambda v: _is_number(v) and v > 0, "a positive number such as 0.05"),
    "momentum": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1), e.g. 0.9"),
    "weight_decay": (lambda v: _is_number(v) and v >= 0, "a number >= 0, e.g. 5e-4"),
    "schedule": (lambda v: v in SCHEDULES, "one of " + ", ".join(map(repr, SCHEDULES))),
    "label_smoothing": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1), e.g. 0.1"),
    "mixed_precision": (lambda v: isinstance(v, bool), "True or False"),
    "channels_last": (lambda v: isinstance(v, bool), "True or False"),
    "seed": (lambda v: _is_whole(v) and v >= 0, "a whole number >= 0"),
    "train_size": (lambda v: _is_whole(v) and v >= 0, "a whole number >= 0 (0: every image)"),
    "val_size": (lambda v: _is_whole(v) and v >= 0, "a whole number >= 0 (0: no validation split)"),
    "plateau_patience": (lambda v: _is_whole(v) and v >= 0, "a whole number >= 0"),
    "init": (lambda v: v in INITS, "one of " + ", ".join(map(repr, INITS))),
    "dropout": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1), e.g. 0.5"),
    "sync_batchnorm": (lambda v: isinstance(v, bool), "True or False"),
    "time_budget": (lambda v: _is_number(v) and v >= 0, "a number of seconds >= 0 (0: no budget)"),
    "init_from": (
        lambda v: isinstance(v, str),
        "a finished checkpoint's path (a shallower column or the same net), or ''",
    ),
    "scale_min": (lambda v: _is_whole(v) and (v == 0 or v >= 32), "0 (the padded crop) or a side >= 32 pixels"),
    "scale_max": (lambda v: _is_whole(v) and (v == 0 or v >= 32), "0 (the padded crop) or a side >= 32 pixels"),
    "split_seed": (lambda v: v is None or (_is_whole(v) and v >= 0), "None (the seed decides) or a whole number >= 0"),
}


# Fields that are numbers of any kind; stored as floats so that equal configs have equal names.
_FLOATS = ("width", "lr", "momentum", "weight_decay", "label_smoothing", "dropout", "time_budget")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; saved in every checkpoint and result."""

    model: str = "D"  # Table 1 column: "A".."E", "A-LRN"; aliases (11/13/16/19, "vgg16") become the letter
    batch_norm: bool = True  # BatchNorm2d after every convolution (not in the paper; see notebook 03)
    width: float = 1.0  # multiplies every convolution's channels (0.25: a CPU-sized model)
    epochs: int = 30  # passes over the training set
    batch_size: int = 256  # images per step (with several processes: all of them together)
    lr: float = 0.05  # peak learning rate (onecycle) or starting learning rate (plateau)
    momentum: float = 0.9  # SGD momentum, constant through every schedule (the paper's value, Section 3.1)
    weight_decay: float = 5e-4  # L2 penalty (the paper's value, Section 3.1)
    # "plateau": ReduceLROnPlateau, x0.1 when the validation loss stalls (the classic CIFAR-10 recipe);
    # "onecycle": linear warm-up to lr over a quarter of the steps, then linear decay to lr / 1000
    schedule: str = "onecycle"
    label_smoothing: float = 0.0  # share of each target spread over all classes (0.1 is common)
    mixed_precision: bool = True  # bf16 (or fp16 with a scaler) where the device runs it fast; fp32 elsewhere
    channels_last: bool = True  # NHWC memory layout: faster convolutions on GPUs and modern CPUs
    seed: int = 0  # decides the validation split, initial weights, data order, augmentation and dropout
    train_size: int = 0  # training images used after the validation split is held out (0: all the rest)
    val_size: int = 5000  # training images held out (stratified) for every choice; 0: train on all 50,000
    plateau_patience: int = 2  # epochs without improvement before "plateau" divides the learning rate by 10
    init: str = "kaiming"  # "kaiming", "paper" (N(0, 10^-2), Section 3.1) or "glorot" (vggedu.models.initialize)
    dropout: float = 0.5  # dropout before fc7 and fc8 (the paper's 0.5, Section 3.1)
    sync_batchnorm: bool = False  # several processes: batch norm over the global batch, as one process would
    # Seconds for the whole run (0: none). With a budget, `epochs` is the most the run may use: the trainer
    # times a few steps first, then plans the schedule over the epochs that fit (see plan_epochs).
    time_budget: float = 0.0
    # A start from a finished checkpoint. A shallower column (net A): its first four convolutions and three FC
    # layers are copied in, Section 3.1's start for deep nets (vggedu.models.init_from); the same network: all of
    # it, fine-tuned (the paper's multi-scale training, notebook 06). "" starts from `init` alone.
    init_from: str = ""
    # Augmentation. 0, 0: the classic 4-pixel padded random crop and flip. Otherwise the paper's scale jittering
    # (Section 3.1) at CIFAR-10's size: each image rescaled to a random side in scale_min .. scale_max pixels,
    # then a random 32x32 crop and flip; scale_min == scale_max is a fixed training scale S (notebook 06).
    scale_min: int = 0
    scale_max: int = 0
    # The validation split's own seed (None: ``seed`` decides it): two initialisations on the same held-out images
    # (notebook 06 fuses them). Left out of to_dict and run_name while None, so older runs keep their names.
    split_seed: int | None = None

    def __post_init__(self) -> None:
        # The Table 1 letter, whatever alias was given (16, "vgg16"), so equal runs compare equal;
        # an unknown name raises a ConfigError naming the valid choices.
        object.__setattr__(self, "model", config_name(self.model))
        for name, (ok, valid) in _CHECKS.items():
            value = getattr(self, name)
            if not ok(value):
                raise ValueError(f"TrainConfig.{name} must be {valid}; got {value!r}")
        for name in _FLOATS:  # width=1 and width=1.0 are one run, with one run_name
            object.__setattr__(self, name, float(getattr(self, name)))
        if (self.scale_min == 0) != (self.scale_max == 0) or self.scale_min > self.scale_max:
            raise ValueError(
                "TrainConfig.scale_min and scale_max must both be 0 (the padded crop) or satisfy "
                f"32 <= scale_min <= scale_max; got {self.scale_min} and {self.scale_max}"
            )

    @property
    def scale(self) -> tuple[int, int] | None:
        """The training scale range (S_min, S_max) in pixels, or None for the padded crop."""
        return (self.scale_min, self.scale_max) if self.scale_min else None

    def to_dict(self) -> dict:
        fields = dataclasses.asdict(self)
        if fields["split_seed"] is None:  # the seed decides the split, as before split_seed existed
            del fields["split_seed"]
        return fields

    @property
    def validation_seed(self) -> int:
        """The seed of the validation split: ``split_seed``, or ``seed`` when that is None."""
        return self.seed if self.split_seed is None else self.split_seed

    def changes_from(self, other: TrainConfig) -> dict[str, tuple[object, object]]:
        """The fields in which this config differs from ``other``: ``{name: (other's, this one's)}``.

        An ablation changes one field per rung (notebook 05 asserts it with this).
        """
        theirs, ours = dataclasses.asdict(other), dataclasses.asdict(self)
        return {name: (theirs[name], ours[name]) for name in ours if theirs[name] != ours[name]}

    def run_name(self) -> str:
        """A file name stem that differs whenever the config does, e.g. ``D-w1.0-e30-3f9c2a1b``.

        Checkpoints named by it never collide: change any field and a new run starts beside
        the old one instead of being refused by it (notebook 05).
        """
        digest = hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.model}-w{self.width}-e{self.epochs}-{digest}"


class TrainingDiverged(RuntimeError):
    """The weights or a loss became NaN or infinite; the last good checkpoint is kept."""


def build_model(config: TrainConfig, num_classes: int = 10) -> VGG:
    """The CIFAR-head VGG a config describes (seeded, so the same config gives the same weights).

    With ``config.init_from`` (the checkpoint of a finished run), the start comes from that run's
    trained network: from a shallower column, the paper's layers are copied
    (:func:`vggedu.models.init_from`, notebook 07); from the same network (same column, width and
    batch norm), every weight is, and the run fine-tunes it, as the paper trained its multi-scale
    models from a single-scale one (Section 3.1, notebook 06).
    """
    torch.manual_seed(config.seed)
    net = vgg(
        config.model,
        batch_norm=config.batch_norm,
        width=config.width,
        head="cifar",
        num_classes=num_classes,
        init=config.init,
        dropout=config.dropout,
    )
    if config.init_from:
        state = load_checkpoint(config.init_from)
        if not is_finished(state):
            raise CheckpointError(
                f"{config.init_from} is a run stopped at epoch {state['epoch']} of {planned_epochs(state)}: the paper "
                "started deep nets from a trained net A. Finish it first (train(..., resume=True), or "
                "python -m vggedu.train ... --resume), then start from it."
            )
        source = TrainConfig(**{**TrainConfig().to_dict(), **state["config"]})
        if (source.model, source.width, source.batch_norm) == (config.model, config.width, config.batch_norm):
            net.load_state_dict(state["model"])  # the same network: fine-tune all of it
            return net
        shallow = build_model(source, num_classes)
        shallow.load_state_dict(state["model"])
        init_from(shallow, net)
    return net


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum and weight decay, as in the paper (Section 3.1)."""
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    steps_per_epoch: int,
    epochs: int | None = None,
    *,
    total_steps: int | None = None,
):
    """ReduceLROnPlateau (stepped once per epoch with the validation loss) or OneCycleLR (every batch).

    One-cycle moves the learning rate only: lr / 10 rising linearly to ``lr`` over the first
    quarter of the steps, then falling linearly to lr / 1000. Momentum stays at
    ``config.momentum`` (OneCycleLR would cycle it 0.95 -> 0.85 -> 0.95 unless told not to).
    ``epochs`` (default ``config.epochs``) is the length of the cycle, e.g. what a time budget allows;
    ``total_steps`` sets it to the step (a budget's shorter last epoch).
    """
    if config.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=config.plateau_patience)
    epochs = epochs or config.epochs
    total_steps = total_steps or epochs * steps_per_epoch
    if total_steps < 2:
        raise ValueError(
            f"the one-cycle schedule needs at least 2 steps, got {total_steps} "
            f"({epochs} epochs x {steps_per_epoch} steps); train longer, use a smaller batch_size, "
            "or schedule='plateau'"
        )
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=config.lr,
        total_steps=total_steps,
        pct_start=max(0.25, 1.5 / total_steps),  # a quarter rising; each phase at least one step on tiny runs
        anneal_strategy="linear",
        cycle_momentum=False,  # the momentum is config.momentum, as the run card says
        div_factor=10.0,
        final_div_factor=100.0,
    )


def split_validation(train_split: CIFAR10Split, config: TrainConfig) -> tuple[CIFAR10Split, CIFAR10Split | None]:
    """The images to train on and the held-out validation images (None when ``val_size`` is 0).

    The validation part is drawn first, stratified and fixed by ``config.validation_seed`` (the
    ``split_seed``, else the ``seed``), from the whole training set; ``train_size`` then keeps the
    first N of the rest.
    """
    if config.val_size >= len(train_split):
        raise ValueError(
            f"val_size ({config.val_size}) must be smaller than the {len(train_split)} training images; "
            "hold out fewer (e.g. a tenth), or val_size=0 to train on all of them"
        )
    if config.val_size:
        fit_index, val_index = stratified_split(train_split.labels, config.val_size, seed=config.validation_seed)
        fit, val = train_split.take(fit_index), train_split.take(val_index)
    else:
        fit, val = train_split, None
    return (fit.subset(config.train_size) if config.train_size else fit), val


def train_one_epoch(
    model, train_loader, optimizer, *, scheduler=None, scaler=None, amp_dtype=None, label_smoothing=0.0, progress=None
) -> dict:
    """One pass over ``train_loader``: the training step, written out. Returns mean loss and accuracy.

    The loss is the one optimised: label-smoothed when ``label_smoothing`` > 0, so it is not
    comparable with an evaluation loss. With several processes the means are over all of them.
    """
    model.train()
    device = next(model.parameters()).device
    autocast = precision(device, amp_dtype)  # built once: nullcontext() in fp32
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    seen = torch.zeros((), device=device)
    for step, (x, labels) in enumerate(train_loader):
        with autocast:
            logits = model(x)
            loss = nn.functional.cross_entropy(logits, labels, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:  # fp16: scale the loss so small gradients do not underflow
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None:  # one-cycle moves the learning rate every step
            scheduler.step()
        # Running sums stay on the device: no GPU sync per step.
        total_loss += loss.detach() * len(labels)
        correct += (logits.argmax(1) == labels).sum()
        seen += len(labels)
        if progress is not None and (step % 20 == 0 or step == len(train_loader) - 1):
            progress.set_postfix(loss=f"{(total_loss / seen).item():.3f}", refresh=False)
            progress.update(step + 1 - progress.n)
    total_loss, correct, seen = dist.all_reduce_sum(torch.stack([total_loss, correct, seen])).tolist()
    return {"loss": total_loss / max(seen, 1), "accuracy": correct / max(seen, 1)}


def _scores(model: nn.Module, x: torch.Tensor, tta: bool, autocast) -> tuple[torch.Tensor, torch.Tensor | None]:
    """float32 logits of a batch and, with ``tta``, the log of its flip-TTA posteriors, from ONE forward pass
    of the image and its mirror image together."""
    with autocast:
        if not tta:
            return model(x).float(), None
        both = model(torch.cat([x, x.flip(3)])).float()
    logits, mirrored = both[: len(x)], both[len(x) :]
    # log((softmax(a) + softmax(b)) / 2), computed stably: soft-max outputs averaged, as the paper did.
    posteriors = torch.logsumexp(torch.stack([logits.log_softmax(1), mirrored.log_softmax(1)]), 0) - math.log(2)
    return logits, posteriors


@torch.no_grad()
def predict(
    model: nn.Module, loader, *, tta: bool = False, amp_dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (float32, on the CPU) and labels of every batch, in eval mode.

    The scores are the logits, or with ``tta`` the log of the flip-TTA posteriors (the mean of the
    image's and its mirror image's soft-max outputs; see :func:`evaluate`), which are logits too:
    their soft-max is those posteriors and their argmax the TTA prediction.
    """
    model.eval()
    autocast = precision(next(model.parameters()).device, amp_dtype)
    all_scores, all_labels = [], []
    for x, labels in loader:
        logits, posteriors = _scores(model, x, tta, autocast)
        all_scores.append((posteriors if tta else logits).cpu())
        all_labels.append(labels.cpu())
    return torch.cat(all_scores), torch.cat(all_labels)


@torch.no_grad()
def evaluate(model: nn.Module, loader, *, tta: bool = False, amp_dtype: torch.dtype | None = None) -> dict:
    """Mean cross-entropy (plain, never label-smoothed) and accuracy on ``loader``, in eval mode.

    With ``tta`` the same pass also gives ``tta_loss`` and ``tta_accuracy``: flip test-time
    augmentation, the package's one definition of it, is the mean of the soft-max outputs of the
    image and its mirror image, as the paper averaged its "soft-max class posteriors of the
    original and flipped images" (Section 3.2); :mod:`vggedu.evaluation` uses the same. Both come
    from one forward pass of ``[x, x.flip(3)]``. Sums are float32 on the model's device (exact
    counts to 16.7 million images; Apple's ``mps`` has no float64); with several processes each
    holds part of the data and the sums are added over all of them.
    """
    model.eval()
    device = next(model.parameters()).device
    autocast = precision(device, amp_dtype)
    sums = torch.zeros(5, device=device)  # loss, correct, images, TTA loss, TTA correct
    for x, labels in loader:
        logits, posteriors = _scores(model, x, tta, autocast)
        sums[0] += nn.functional.cross_entropy(logits, labels, reduction="sum")
        sums[1] += (logits.argmax(1) == labels).sum()
        sums[2] += len(labels)
        if tta:
            sums[3] += nn.functional.nll_loss(posteriors, labels, reduction="sum")
            sums[4] += (posteriors.argmax(1) == labels).sum()
    loss, correct, seen, tta_loss, tta_correct = dist.all_reduce_sum(sums).tolist()
    seen = max(seen, 1)
    out = {"loss": loss / seen, "accuracy": correct / seen}
    if tta:
        out.update(tta_loss=tta_loss / seen, tta_accuracy=tta_correct / seen)
    return out
