"""Training VGG on CIFAR-10: a config, one readable loop, evaluation, checkpoints, run cards.

The loop in :func:`train_one_epoch` is the whole algorithm: forward, loss, backward,
step. Everything else here keeps a learner's run safe (atomic checkpoints every epoch,
exact resume, a clear stop when the loss diverges) and honest (a run card with every
result). Introduced in notebook 05; ``python -m vggedu.train`` is the command line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import __version__
from .configs import config_name
from .data import CIFAR10Split, DeviceLoader, channel_stats
from .models import VGG, vgg

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "CheckpointError",
    "pick_device",
    "autocast_dtype",
    "build_model",
    "make_optimizer",
    "make_scheduler",
    "train_one_epoch",
    "evaluate",
    "predict",
    "train",
    "save_checkpoint",
    "load_checkpoint",
    "run_card",
]

SCHEDULES = ("plateau", "onecycle")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; saved in every checkpoint and result."""

    model: str = "D"  # Table 1 column: "A".."E", "A-LRN"; aliases (11/13/16/19, "vgg16") become the letter
    batch_norm: bool = True  # BatchNorm2d after every convolution (not in the paper; see notebook 03)
    width: float = 1.0  # multiplies every convolution's channels (0.25: a CPU-sized model)
    epochs: int = 30  # passes over the training set
    batch_size: int = 256  # images per step
    lr: float = 0.05  # peak learning rate (onecycle) or starting learning rate (plateau)
    momentum: float = 0.9  # SGD momentum (the paper's value, Section 3.1)
    weight_decay: float = 5e-4  # L2 penalty (the paper's value, Section 3.1)
    schedule: str = (
        "onecycle"  # "plateau": the seed's ReduceLROnPlateau (x0.1 when the watched loss stalls); "onecycle"
    )
    label_smoothing: float = 0.0  # share of each target spread over all classes (0.1 is common)
    mixed_precision: bool = True  # bf16 (or fp16 with a scaler) where the device runs it fast; fp32 elsewhere
    channels_last: bool = True  # NHWC memory layout: faster convolutions on GPUs and modern CPUs
    seed: int = 0  # decides initial weights, data order, augmentation and dropout
    train_size: int = 0  # training images used (0: all); quick mode uses a subset
    val_size: int = 0  # training images held out for validation; "plateau" watches their loss (else the train loss)
    plateau_patience: int = 2  # epochs without improvement before "plateau" divides the learning rate by 10
    init: str = "kaiming"  # "kaiming" or "paper" (N(0, 10^-2), Section 3.1)
    dropout: float = 0.5  # dropout before fc7 and fc8 (the paper's 0.5, Section 3.1)

    def __post_init__(self) -> None:
        # The Table 1 letter, whatever alias was given (16, "vgg16"), so equal runs compare equal;
        # an unknown name raises a ConfigError naming the valid choices.
        object.__setattr__(self, "model", config_name(self.model))
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(map(repr, SCHEDULES))}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.train_size < 0 or self.val_size < 0:
            raise ValueError("train_size and val_size must be >= 0")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def run_name(self) -> str:
        """A file name stem that differs whenever the config does, e.g. ``D-w1.0-e30-3f9c2a1b``.

        Checkpoints named by it never collide: change any field and a new run starts beside
        the old one instead of being refused by it (notebook 05).
        """
        digest = hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.model}-w{self.width}-e{self.epochs}-{digest}"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used for this run (another model or config, or unreadable)."""


@dataclass
class TrainResult:
    model: VGG
    history: list[dict]  # one row per epoch: loss, accuracy, learning rate, seconds
    test_accuracy: float  # after the last epoch, without test-time augmentation
    test_accuracy_tta: float  # with horizontal-flip test-time augmentation
    seconds: float  # wall time of the training epochs (evaluation included)
    card: dict  # device, versions, data, mode, config


def pick_device(name: str = "auto") -> torch.device:
    """``"auto"``: CUDA if there is a GPU, else the CPU. ``"cuda"`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"unknown device {name!r}; choose 'auto', 'cpu' or 'cuda'")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but PyTorch sees no GPU; use --device cpu or auto")
    return torch.device(name)


def autocast_dtype(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """The mixed-precision dtype to use on ``device``, or None for plain fp32.

    CUDA: bf16 where supported (Ampere and newer), else fp16 (with a gradient scaler).
    CPU: bf16 only where the CPU has native bf16 instructions (oneDNN says so); emulated
    bf16 is slower than fp32.
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
    """The CIFAR-head VGG a config describes (seeded, so the same config gives the same weights)."""
    torch.manual_seed(config.seed)
    return vgg(
        config.model,
        batch_norm=config.batch_norm,
        width=config.width,
        head="cifar",
        num_classes=num_classes,
        init=config.init,
        dropout=config.dropout,
    )


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum and weight decay, as in the paper (Section 3.1)."""
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """ReduceLROnPlateau (stepped once per epoch with a loss) or OneCycleLR (stepped every batch)."""
    if config.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=config.plateau_patience)
    total_steps = config.epochs * steps_per_epoch
    if total_steps < 2:
        raise ValueError(
            f"the one-cycle schedule needs at least 2 steps, got {total_steps} "
            f"({config.epochs} epochs x {steps_per_epoch} steps); train longer, use a smaller batch_size, "
            "or schedule='plateau'"
        )
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=config.lr,
        total_steps=total_steps,
        pct_start=max(0.25, 1.5 / total_steps),  # a quarter rising; each phase at least one step on tiny runs
        anneal_strategy="linear",
        div_factor=10.0,
        final_div_factor=100.0,
    )


def train_one_epoch(
    model, train_loader, optimizer, *, scheduler=None, scaler=None, amp_dtype=None, label_smoothing=0.0, progress=None
) -> dict:
    """One pass over ``train_loader``: the training step, written out. Returns mean loss and accuracy."""
    model.train()
    device = next(model.parameters()).device
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
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
            mean_loss = total_loss.item() / seen
            if not math.isfinite(mean_loss):
                break  # stopped below, with the message
            progress.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{correct.item() / seen:.3f}", refresh=False)
            progress.update(step + 1 - progress.n)
    return {"loss": total_loss.item() / max(seen, 1), "accuracy": correct.item() / max(seen, 1)}


@torch.no_grad()
def predict(
    model: nn.Module, loader, *, tta: bool = False, amp_dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32, on the CPU) and labels of every batch; ``tta`` averages with the mirrored image."""
    model.eval()
    device = next(model.parameters()).device
    all_logits, all_labels = [], []
    for x, labels in loader:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x).float()
            if tta:
                logits = (logits + model(x.flip(3)).float()) / 2
        all_logits.append(logits.cpu())
        all_labels.append(labels.cpu())
    return torch.cat(all_logits), torch.cat(all_labels)


def evaluate(model: nn.Module, loader, *, tta: bool = False, amp_dtype: torch.dtype | None = None) -> dict:
    """Mean cross-entropy and accuracy on ``loader`` (eval mode, no gradients)."""
    logits, labels = predict(model, loader, tta=tta, amp_dtype=amp_dtype)
    return {
        "loss": nn.functional.cross_entropy(logits, labels).item(),
        "accuracy": (logits.argmax(1) == labels).float().mean().item(),
    }


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
    mode: str = "full",
    amp_dtype: torch.dtype | None = None,
) -> dict:
    """What a result came from: device, versions, data, mode and config."""
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"CPU ({_cpu_model()}, {torch.get_num_threads()} threads)"
    return {
        "device": device_name,
        "torch": str(torch.__version__),  # TorchVersion would not load with weights_only=True
        "vggedu": __version__,
        "python": platform.python_version(),
        "data": data,
        "train_images": train_images,
        "test_images": test_images,
        "mode": mode,
        "precision": str(amp_dtype).removeprefix("torch.") if amp_dtype else "float32",
        "config": config.to_dict(),
    }


# --- checkpoints -----------------------------------------------------------------------------


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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


def load_checkpoint(path: str | Path, config: TrainConfig | None = None, *, data: dict | None = None) -> dict:
    """Load a checkpoint with ``weights_only=True``.

    If ``config`` is given, it must be the checkpoint's; if ``data`` is given (``train_images``,
    ``test_images`` and ``data``, as in the run card), the image counts must be the checkpoint's.
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
        saved = state["config"]
        differ = {k: (saved.get(k), v) for k, v in config.to_dict().items() if saved.get(k) != v}
        if differ:
            detail = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in differ.items())
            raise CheckpointError(
                f"{path} belongs to another run ({detail}). Resume with the checkpoint's settings, "
                "or give a new --checkpoint path to start this run; the old checkpoint is left untouched."
            )
    if data is not None:
        saved = state.get("card", {})
        if any(saved.get(k, data[k]) != data[k] for k in ("train_images", "test_images")):
            raise CheckpointError(
                f"{path} was trained on other data ({saved.get('train_images')} training and "
                f"{saved.get('test_images')} test images of {saved.get('data')!r}; now {data['train_images']} and "
                f"{data['test_images']} of {data['data']!r}). It is left untouched; give a new checkpoint path."
            )
    return state


# --- the whole run ---------------------------------------------------------------------------


def _split_validation(train_split: CIFAR10Split, config: TrainConfig):
    split = train_split.subset(config.train_size) if config.train_size else train_split
    if not config.val_size:
        return split, None
    if config.val_size >= len(split):
        raise ValueError(f"val_size ({config.val_size}) must be smaller than the training set ({len(split)})")
    n = len(split) - config.val_size
    val = CIFAR10Split(split.images[n:], split.labels[n:], split.classes, split.source)
    return CIFAR10Split(split.images[:n], split.labels[:n], split.classes, split.source), val


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
    on_epoch_end: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train a CIFAR-head VGG as ``config`` says; checkpoint every epoch; resume exactly.

    The normalisation statistics come from the training images. With ``resume=True`` and
    an existing ``checkpoint``, training continues after the last saved epoch; on the CPU the
    result is bit-identical to an uninterrupted run.
    """
    checkpoint = Path(checkpoint) if checkpoint else None
    existing = checkpoint is not None and checkpoint.exists()
    if existing and not resume:
        raise CheckpointError(
            f"{checkpoint} already holds a run; it is left untouched. Resume it (resume=True, --resume), "
            "or give a new checkpoint path (or delete the file) to start again."
        )
    device = pick_device(device) if isinstance(device, str) else device
    amp_dtype = autocast_dtype(device, config.mixed_precision)
    fit_split, val_split = _split_validation(train_split, config)
    mean, std = channel_stats(fit_split.images)
    loader_args = dict(device=device, mean=mean, std=std, channels_last=config.channels_last)
    train_loader = DeviceLoader(fit_split, config.batch_size, train=True, seed=config.seed, **loader_args)
    if len(train_loader) == 0:
        raise ValueError(f"batch_size {config.batch_size} is larger than the {len(fit_split)} training images")
    test_loader = DeviceLoader(test_split, 1024, train=False, **loader_args)
    val_loader = DeviceLoader(val_split, 1024, train=False, **loader_args) if val_split else None

    model = build_model(config, num_classes=len(train_split.classes)).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, len(train_loader))
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    history: list[dict] = []
    start_epoch = 0

    card = run_card(
        config,
        device,
        data=train_split.source,
        train_images=len(fit_split),
        test_images=len(test_split),
        mode=mode,
        amp_dtype=amp_dtype,
    )
    if existing:  # and resume, or we would have stopped above
        state = load_checkpoint(checkpoint, config, data=card)  # the card says what data this run has
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        history = list(state["history"])
        start_epoch = state["epoch"]
        _set_rng_state(state["rng"])
    else:
        torch.manual_seed(config.seed)  # dropout draws the same masks in every run of this config

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(train_loader), leave=False, desc="epoch")
    try:
        for epoch in range(start_epoch, config.epochs):
            t0 = time.perf_counter()
            train_loader.set_epoch(epoch)
            if bar is not None:
                bar.reset(total=len(train_loader))
                bar.set_description(f"epoch {epoch + 1}/{config.epochs}")
            lr = optimizer.param_groups[0]["lr"]
            fit = train_one_epoch(
                model,
                train_loader,
                optimizer,
                scheduler=scheduler if config.schedule == "onecycle" else None,
                scaler=scaler,
                amp_dtype=amp_dtype,
                label_smoothing=config.label_smoothing,
                progress=bar,
            )
            if not math.isfinite(fit["loss"]):
                if checkpoint is not None and history:
                    kept = f"the last good checkpoint (epoch {history[-1]['epoch']}) is kept at {checkpoint}"
                else:
                    kept = "no checkpoint had been written yet"
                raise TrainingDiverged(
                    f"the training loss became {fit['loss']} in epoch {epoch + 1}; training stopped and {kept}. "
                    f"Try a lower learning rate (now {config.lr}), batch norm (batch_norm=True), "
                    "or mixed precision off (--no-mixed-precision)."
                )
            test = evaluate(model, test_loader, amp_dtype=amp_dtype)
            row = {
                "epoch": epoch + 1,
                "lr": lr,
                "train_loss": fit["loss"],
                "train_accuracy": fit["accuracy"],
                "test_loss": test["loss"],
                "test_accuracy": test["accuracy"],
            }
            if val_loader is not None:
                val = evaluate(model, val_loader, amp_dtype=amp_dtype)
                row.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
            if config.schedule == "plateau":  # watches held-out data if there is some, never the test set
                scheduler.step(row.get("val_loss", row["train_loss"]))
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            if checkpoint is not None:
                save_checkpoint(
                    checkpoint,
                    model=model.state_dict(),
                    optimizer=optimizer.state_dict(),
                    # Older PyTorch (2.3) keeps OneCycleLR's annealing function, a bound method, in its
                    # state; weights_only loading refuses it, and the new scheduler has it anyway.
                    scheduler={k: v for k, v in scheduler.state_dict().items() if not callable(v)},
                    scaler=scaler.state_dict() if scaler else None,
                    rng=_rng_state(),
                    epoch=epoch + 1,
                    config=config.to_dict(),
                    history=history,
                    card=card,
                )
            if on_epoch_end is not None:
                on_epoch_end(row)
    finally:
        if bar is not None:
            bar.close()

    final = evaluate(model, test_loader, amp_dtype=amp_dtype)
    final_tta = evaluate(model, test_loader, tta=True, amp_dtype=amp_dtype)
    return TrainResult(
        model=model,
        history=history,
        test_accuracy=final["accuracy"],
        test_accuracy_tta=final_tta["accuracy"],
        seconds=sum(r["seconds"] for r in history),
        card=card,
    )
