"""Training VGG on CIFAR-10: a config, one readable loop, evaluation, checkpoints, run cards.

The loop in :func:`train_one_epoch` is the whole algorithm: forward, loss, backward,
step. :func:`train` is five short steps a notebook can show one at a time:
:func:`setup_run` (split, model, optimiser), :func:`resume_run`, :func:`run_epoch`
(one epoch and its validation), :func:`save_run` and :func:`finish_run` (the one
measurement on the test set). Everything else keeps a learner's run safe (atomic
checkpoints every epoch, exact resume, a clear stop before anything non-finite is
saved) and honest (choices on a held-out validation split, a run card with every
result). With ``torchrun`` the same code trains on several GPUs (:mod:`vggedu.distributed`).
Introduced in notebook 05; ``python -m vggedu.train`` is the command line.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import __version__
from . import distributed as dist
from .configs import config_name
from .data import CIFAR10Split, DeviceLoader, channel_stats, stratified_split
from .models import INITS, VGG, vgg

__all__ = [
    "TrainConfig",
    "TrainResult",
    "Run",
    "TrainingDiverged",
    "CheckpointError",
    "pick_device",
    "autocast_dtype",
    "build_model",
    "make_optimizer",
    "make_scheduler",
    "split_validation",
    "train_one_epoch",
    "evaluate",
    "predict",
    "setup_run",
    "resume_run",
    "run_epoch",
    "check_finite",
    "plan_epochs",
    "save_run",
    "finish_run",
    "train",
    "save_checkpoint",
    "load_checkpoint",
    "run_card",
]

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
    "init_from": (lambda v: isinstance(v, str), "a path to a finished checkpoint of a shallower column, or ''"),
    "scale_min": (lambda v: _is_whole(v) and (v == 0 or v >= 32), "0 (the padded crop) or a side >= 32 pixels"),
    "scale_max": (lambda v: _is_whole(v) and (v == 0 or v >= 32), "0 (the padded crop) or a side >= 32 pixels"),
}


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
    init: str = "kaiming"  # "kaiming" or "paper" (N(0, 10^-2), Section 3.1)
    dropout: float = 0.5  # dropout before fc7 and fc8 (the paper's 0.5, Section 3.1)
    sync_batchnorm: bool = False  # several processes: batch norm over the global batch, as one process would
    # Seconds for the whole run (0: none). With a budget, `epochs` is the most the run may use: the trainer
    # times a few steps first, then plans the schedule over the epochs that fit (see plan_epochs).
    time_budget: float = 0.0
    # Section 3.1's start for deep nets: a finished checkpoint of a shallower column (net A) whose first four
    # convolutions and three FC layers are copied in (vggedu.experiments.init_from); "" starts from `init` alone.
    init_from: str = ""
    # Augmentation. 0, 0: the classic 4-pixel padded random crop and flip. Otherwise the paper's scale jittering
    # (Section 3.1) at CIFAR-10's size: each image rescaled to a random side in scale_min .. scale_max pixels,
    # then a random 32x32 crop and flip; scale_min == scale_max is a fixed training scale S (notebook 06).
    scale_min: int = 0
    scale_max: int = 0

    def __post_init__(self) -> None:
        # The Table 1 letter, whatever alias was given (16, "vgg16"), so equal runs compare equal;
        # an unknown name raises a ConfigError naming the valid choices.
        object.__setattr__(self, "model", config_name(self.model))
        for name, (ok, valid) in _CHECKS.items():
            value = getattr(self, name)
            if not ok(value):
                raise ValueError(f"TrainConfig.{name} must be {valid}; got {value!r}")
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
        return dataclasses.asdict(self)

    def changes_from(self, other: TrainConfig) -> dict[str, tuple[object, object]]:
        """The fields in which this config differs from ``other``: ``{name: (other's, this one's)}``.

        An ablation changes one field per rung (notebook 05 asserts it with this).
        """
        theirs, ours = other.to_dict(), self.to_dict()
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


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used for this run (another model, config or data, or unreadable)."""


@dataclass
class TrainResult:
    model: VGG
    history: list[dict]  # one row per epoch: losses, accuracies, learning rate, momentum, seconds
    test_accuracy: float | None  # measured once, after the last epoch, without test-time augmentation
    test_accuracy_tta: float | None  # the same, with horizontal-flip test-time augmentation (None: not measured)
    seconds: float  # wall time of the training epochs (their validation included)
    card: dict  # device, versions, data, mode, config
    val_accuracy: float | None = None  # after the last epoch (None without a validation split)


def pick_device(name: str = "auto") -> torch.device:
    """``"auto"``: CUDA if there is a GPU, else Apple's ``mps``, else the CPU.

    Asking for a device that is not there is an error that says so.
    """
    mps = getattr(torch.backends, "mps", None)
    mps_available = bool(mps and mps.is_available())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_available else "cpu")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise ValueError(f"unknown device {name!r}; choose 'auto', 'cpu', 'cuda' or 'mps'")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but PyTorch sees no GPU; use --device cpu or auto")
    if name == "mps" and not mps_available:
        raise ValueError("device 'mps' (Apple GPU) was asked for, but PyTorch cannot use one here; use --device auto")
    return torch.device(name)


def autocast_dtype(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """The mixed-precision dtype to use on ``device``, or None for plain fp32.

    CUDA: bf16 where supported (Ampere and newer), else fp16 (with a gradient scaler).
    CPU: bf16 only where the CPU has native bf16 instructions (oneDNN says so); emulated
    bf16 is slower than fp32. Apple ``mps``: fp32 (its autocast is not used here).
    """
    if not enabled:
        return None
    if device.type == "cuda":  # native bf16 from Ampere (compute capability 8.0) on; a T4 (7.5) emulates it slowly
        return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16
    if device.type == "cpu":
        try:
            native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
        except (AttributeError, RuntimeError):
            native = False
        return torch.bfloat16 if native else None
    return None


def build_model(config: TrainConfig, num_classes: int = 10) -> VGG:
    """The CIFAR-head VGG a config describes (seeded, so the same config gives the same weights).

    With ``config.init_from``, the paper's layers are then copied from that checkpoint's trained
    network (:func:`vggedu.experiments.init_from`, notebook 07).
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
        from .experiments import init_from

        state = load_checkpoint(config.init_from)
        shallow = build_model(TrainConfig(**{**TrainConfig().to_dict(), **state["config"]}), num_classes)
        shallow.load_state_dict(state["model"])
        init_from(shallow, net)
    return net


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum and weight decay, as in the paper (Section 3.1)."""
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int, epochs: int | None = None
):
    """ReduceLROnPlateau (stepped once per epoch with the validation loss) or OneCycleLR (every batch).

    One-cycle moves the learning rate only: lr / 10 rising linearly to ``lr`` over the first
    quarter of the steps, then falling linearly to lr / 1000. Momentum stays at
    ``config.momentum`` (OneCycleLR would cycle it 0.95 -> 0.85 -> 0.95 unless told not to).
    ``epochs`` (default ``config.epochs``) is the length of the cycle, e.g. what a time budget allows.
    """
    if config.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=config.plateau_patience)
    epochs = epochs or config.epochs
    total_steps = epochs * steps_per_epoch
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


def train_one_epoch(
    model, train_loader, optimizer, *, scheduler=None, scaler=None, amp_dtype=None, label_smoothing=0.0, progress=None
) -> dict:
    """One pass over ``train_loader``: the training step, written out. Returns mean loss and accuracy.

    The loss is the one optimised: label-smoothed when ``label_smoothing`` > 0, so it is not
    comparable with an evaluation loss. With several processes the means are over all of them.
    """
    model.train()
    device = next(model.parameters()).device
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    seen = torch.zeros((), device=device)
    for step, (x, labels) in enumerate(train_loader):
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
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


def _logits(model: nn.Module, x: torch.Tensor, tta: bool, amp_dtype: torch.dtype | None) -> torch.Tensor:
    """float32 logits of a batch; with ``tta``, the mean of the image's and its mirror image's."""
    with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = model(x).float()
        if tta:
            logits = (logits + model(x.flip(3)).float()) / 2
    return logits


@torch.no_grad()
def predict(
    model: nn.Module, loader, *, tta: bool = False, amp_dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32, on the CPU) and labels of every batch; ``tta`` averages with the mirrored image."""
    model.eval()
    all_logits, all_labels = [], []
    for x, labels in loader:
        logits = _logits(model, x, tta, amp_dtype)
        all_logits.append(logits.cpu())
        all_labels.append(labels.cpu())
    return torch.cat(all_logits), torch.cat(all_labels)


@torch.no_grad()
def evaluate(model: nn.Module, loader, *, tta: bool = False, amp_dtype: torch.dtype | None = None) -> dict:
    """Mean cross-entropy (plain, never label-smoothed) and accuracy on ``loader``, in eval mode.

    ``tta`` averages the logits of each image and its mirror image before both. With several
    processes each holds part of the data and the sums are added over all of them.
    """
    model.eval()
    device = next(model.parameters()).device
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, correct, images
    for x, labels in loader:
        logits = _logits(model, x, tta, amp_dtype)
        sums[0] += nn.functional.cross_entropy(logits, labels, reduction="sum").double()
        sums[1] += (logits.argmax(1) == labels).sum()
        sums[2] += len(labels)
    loss, correct, seen = dist.all_reduce_sum(sums).tolist()
    return {"loss": loss / max(seen, 1), "accuracy": correct / max(seen, 1)}


def _cpu_model() -> str:
    try:  # Linux names the processor here; platform.processor() is often empty
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    elif device.type == "mps":
        device_name = "Apple GPU (mps)"
    else:
        native = autocast_dtype(device) is not None
        device_name = (
            f"CPU ({_cpu_model()}, {torch.get_num_threads()} threads, {'native' if native else 'no native'} bf16)"
        )
    schedule = (
        f"one-cycle: lr {config.lr / 10:g} -> {config.lr:g} -> {config.lr / 1000:g}"
        if config.schedule == "onecycle"
        else f"plateau: lr {config.lr:g}, x0.1 after {config.plateau_patience} epochs without a lower "
        + ("validation loss" if val_images else "training loss")
    )
    return {
        "device": device_name,
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


# --- checkpoints -----------------------------------------------------------------------------


def save_checkpoint(path: str | Path, **state) -> Path:
    """Write ``state`` atomically: to a temporary file in the same folder, then rename.

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


_DATA_KEYS = ("train_images", "val_images", "test_images", "world_size")


def load_checkpoint(path: str | Path, config: TrainConfig | None = None, *, data: dict | None = None) -> dict:
    """Load a checkpoint with ``weights_only=True``.

    If ``config`` is given, it must be the checkpoint's; if ``data`` is given (a run card, or
    a dict with its image counts and ``world_size``), those must be the checkpoint's too.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; start without --resume to train from scratch")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"{path} is not a readable vggedu checkpoint ({type(error).__name__}: {str(error)[:200]}). "
            "It is left untouched; use another --checkpoint path to start a new run."
        ) from error
    if not isinstance(state, dict) or "config" not in state or "model" not in state:
        raise CheckpointError(
            f"{path} is not a vggedu training checkpoint (no config or model state); it is left untouched"
        )
    if config is not None:
        saved = {**TrainConfig().to_dict(), **state["config"]}  # fields added since the save take their defaults
        differ = {k: (saved.get(k), v) for k, v in config.to_dict().items() if saved.get(k) != v}
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
            detail = ", ".join(f"{k}: checkpoint {a} vs now {b}" for k, (a, b) in differ.items())
            raise CheckpointError(
                f"{path} was trained on other data or processes ({detail}; checkpoint data {saved.get('data')!r}, "
                f"now {data.get('data')!r}). It is left untouched; resume with the same data and number of "
                "processes, or give a new checkpoint path."
            )
    return state


# --- the whole run, in parts -----------------------------------------------------------------


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


def split_validation(train_split: CIFAR10Split, config: TrainConfig) -> tuple[CIFAR10Split, CIFAR10Split | None]:
    """The images to train on and the held-out validation images (None when ``val_size`` is 0).

    The validation part is drawn first, stratified and fixed by ``config.seed``, from the
    whole training set; ``train_size`` then keeps the first N of the rest.
    """
    if config.val_size >= len(train_split):
        raise ValueError(
            f"val_size ({config.val_size}) must be smaller than the {len(train_split)} training images; "
            "hold out fewer (e.g. a tenth), or val_size=0 to train on all of them"
        )
    if config.val_size:
        fit_index, val_index = stratified_split(train_split.labels, config.val_size, seed=config.seed)
        fit, val = train_split.take(fit_index), train_split.take(val_index)
    else:
        fit, val = train_split, None
    return (fit.subset(config.train_size) if config.train_size else fit), val


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
    test_loader = DeviceLoader(test_split, 1024, train=False, **loader_args)
    val_loader = DeviceLoader(val_split, 1024, train=False, **loader_args) if val_split else None

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
    fit = train_one_epoch(
        run.model,
        run.train_loader,
        run.optimizer,
        scheduler=run.scheduler if config.schedule == "onecycle" else None,
        scaler=run.scaler,
        amp_dtype=run.amp_dtype,
        label_smoothing=config.label_smoothing,
        progress=progress,
    )
    row.update(train_loss=fit["loss"], train_accuracy=fit["accuracy"])
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
    if checkpoint is not None and run.history:
        kept = f"the last good checkpoint (epoch {run.history[-1]['epoch']}) is kept at {checkpoint}"
    else:
        kept = "no checkpoint had been written yet"
    what = "the weights" if bad_weights else "a loss"
    detail = ", ".join(f"{k} {v}" for k, v in row.items() if k.endswith("_loss"))
    raise TrainingDiverged(
        f"{what} became NaN or infinite in epoch {row['epoch']} ({detail}); training stopped and {kept}. "
        f"Try a lower learning rate (now {run.config.lr}), batch norm (batch_norm=True), "
        "or mixed precision off (--no-mixed-precision)."
    )


def save_run(run: Run, checkpoint: Path) -> None:
    """Step 5: write the checkpoint (one process writes; the others wait until it is on disk)."""
    if dist.is_main():
        save_checkpoint(
            checkpoint,
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
    dist.barrier()


def _apply_plan(run: Run, plan: dict) -> None:
    run.epochs = plan["epochs"]
    run.card["time_budget"] = plan
    if run.config.schedule == "onecycle":  # the cycle spans the planned epochs, ending at a low learning rate
        run.scheduler = make_scheduler(run.optimizer, run.config, len(run.train_loader), epochs=run.epochs)


def plan_epochs(run: Run, started: float, *, probe_steps: int = 6, margin: float = 0.9) -> dict:
    """Fit the run into ``config.time_budget`` seconds: time a few steps, then plan the epochs.

    A copy of the model trains ``probe_steps`` steps (after two untimed warm-up steps) and
    measures one validation batch; the real model is untouched, so the run is the one its
    config describes, over the planned number of epochs. The plan leaves room for the time
    already spent since ``started``, the final test measurement, and ``margin`` for noise (on a
    shared 2-core machine single epochs vary by 10-25 %).
    It is stored in the run card (``time_budget``) and in every checkpoint, so a resumed run
    keeps it. Returns the plan.
    """
    config, loader = run.config, run.train_loader
    probe = copy.deepcopy(run.net)
    optimizer = make_optimizer(probe, config)
    steps = min(probe_steps, max(len(loader) - 2, 1))
    with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
        # The real training step, on the copy: two untimed warm-up steps, then the timed ones
        # (train_one_epoch ends by reading its sums, so the device has finished when it returns).
        train_one_epoch(probe, itertools.islice(loader, 2), optimizer, amp_dtype=run.amp_dtype)
        t0 = time.perf_counter()
        train_one_epoch(
            probe,
            itertools.islice(loader, steps),
            optimizer,
            amp_dtype=run.amp_dtype,
            label_smoothing=config.label_smoothing,
        )
        step_seconds = (time.perf_counter() - t0) / steps
    eval_loader = run.val_loader or run.test_loader
    x, _ = next(iter(eval_loader))
    t0 = time.perf_counter()
    evaluate(probe, [(x, _)], amp_dtype=run.amp_dtype)
    eval_image_seconds = (time.perf_counter() - t0) / len(x)
    del probe, optimizer
    # Every process plans from the mean of their timings, so all plan the same epochs.
    step_seconds, eval_image_seconds = (
        dist.all_reduce_sum(torch.tensor([step_seconds, eval_image_seconds], dtype=torch.float64)) / dist.world_size()
    ).tolist()
    val_images = len(run.val_loader.labels) if run.val_loader else 0
    test_images = len(run.test_loader.labels)
    epoch_seconds = len(loader) * step_seconds + val_images * eval_image_seconds
    final_seconds = 3 * test_images * eval_image_seconds  # plain and flip TTA: three passes
    left = margin * config.time_budget - (time.perf_counter() - started) - final_seconds
    epochs = min(config.epochs, int(left // epoch_seconds))
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
    }
    _apply_plan(run, plan)
    return plan


def finish_run(run: Run, *, measure_test: bool = True) -> TrainResult:
    """The one measurement on the test set (plain and with flip TTA), after the last epoch.

    ``measure_test=False`` leaves it out (None): for runs that only inform a choice, which the
    validation split decides; the chosen model is then measured once.
    """
    dist.broadcast_buffers(run.net)
    test = evaluate(run.net, run.test_loader, amp_dtype=run.amp_dtype) if measure_test else {}
    test_tta = evaluate(run.net, run.test_loader, tta=True, amp_dtype=run.amp_dtype) if measure_test else {}
    last = run.history[-1] if run.history else {}
    return TrainResult(
        model=run.net,
        history=run.history,
        test_accuracy=test.get("accuracy"),
        test_accuracy_tta=test_tta.get("accuracy"),
        seconds=sum(r["seconds"] for r in run.history),
        card=run.card,
        val_accuracy=last.get("val_accuracy"),
    )


def train(
    config: TrainConfig,
    train_split: CIFAR10Split,
    test_split: CIFAR10Split,
    *,
    device: torch.device | str = "auto",
    checkpoint: str | Path | None = None,
    resume: bool = False,
    mode: str = "full",
    progress: bool = True,
    test_curve: bool = False,
    measure_test: bool = True,
    on_epoch_end: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train a CIFAR-head VGG as ``config`` says; checkpoint every epoch; resume exactly.

    ``config.val_size`` training images are held out for validation; the test set is measured
    once, at the end (and every epoch with ``test_curve``, for curves only). The normalisation
    statistics come from the training images. ``measure_test=False`` skips the test set
    altogether (runs that only inform a choice). With ``resume=True`` and an existing
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
    started = time.perf_counter()
    run = setup_run(config, train_split, test_split, device=device, mode=mode)
    if existing:
        resume_run(run, checkpoint)
    elif config.time_budget:
        plan_epochs(run, started)
    bar = None
    if progress and dist.is_main():
        from tqdm.auto import tqdm

        bar = tqdm(total=len(run.train_loader), leave=False, desc="epoch")
    try:
        for epoch in range(run.start_epoch, run.epochs):
            if bar is not None:
                bar.reset(total=len(run.train_loader))
                bar.set_description(f"epoch {epoch + 1}/{run.epochs}")
            row = run_epoch(run, epoch, test_curve=test_curve, progress=bar)
            check_finite(run, row, checkpoint)
            run.history.append(row)
            if checkpoint is not None:
                save_run(run, checkpoint)
            if on_epoch_end is not None:
                on_epoch_end(row)
    finally:
        if bar is not None:
            bar.close()
    return finish_run(run, measure_test=measure_test)
