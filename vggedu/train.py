"""Command line: train a VGG on CIFAR-10.

    python -m vggedu.train --data-root data --download              # VGG-16-BN, full recipe (GPU)
    python -m vggedu.train --data-root data --preset cpu            # the classroom model, ~10 min on 2 cores
    python -m vggedu.train --data-root data --checkpoint runs/a.pt --resume   # continue after a disconnect
    torchrun --nproc_per_node=4 -m vggedu.train --data-root data --preset gpu # four GPUs, one batch of 512

Every flag of :class:`vggedu.training.TrainConfig` has a ``--flag``; ``--preset`` sets a
group of them, and flags given explicitly win over the preset. 5,000 training images are
held out for validation unless ``--val-size 0``; the test set is measured once, at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from . import distributed as dist
from .checkpoints import CheckpointError
from .configs import ConfigError
from .data import DataError, load_splits
from .devices import pick_device
from .models import INITS
from .runs import CHECKPOINT_EVERY, train
from .training import PRESETS, TrainConfig, TrainingDiverged

__all__ = ["PRESETS", "main", "build_parser", "parse_duration"]  # PRESETS live in vggedu.training

_HELP = {
    "model": "Table 1 configuration: A, A-LRN, B, C, D, E, or 11/13/16/19, vgg11..vgg19 (default D)",
    "batch_norm": "BatchNorm2d after every convolution (default on)",
    "width": "multiply every convolution's channels by this (0.25 for a CPU; default 1.0)",
    "epochs": "passes over the training set (default 30)",
    "batch_size": "images per step (default 256)",
    "lr": "peak (onecycle) or starting (plateau) learning rate (default 0.05)",
    "momentum": "SGD momentum, constant in every schedule (default 0.9, as in the paper)",
    "weight_decay": "L2 weight decay (default 5e-4, as in the paper)",
    "schedule": "learning-rate schedule: onecycle, or plateau (ReduceLROnPlateau on the validation loss)",
    "label_smoothing": "label smoothing, e.g. 0.1 (default 0)",
    "mixed_precision": "bf16/fp16 autocast where the device runs it fast (default on)",
    "channels_last": "NHWC memory layout (default on)",
    "seed": "random seed for weights, data order, augmentation, dropout (default 0)",
    "train_size": "train on only the first N images left after the validation split (default 0: all)",
    "val_size": "hold out N training images (stratified) for validation, the basis of every choice; "
    "plateau watches their loss; 0 trains on all 50,000 (default 5000)",
    "plateau_patience": "epochs without improvement before plateau divides the learning rate by 10 (default 2)",
    "init": "weight initialisation: kaiming, paper (N(0, 10^-2), Section 3.1) or glorot (Glorot & Bengio 2010)",
    "dropout": "dropout probability in the classifier (default 0.5, as in the paper)",
    "sync_batchnorm": "with several processes (torchrun): batch norm over the global batch (default off)",
    "time_budget": "seconds for the whole run, or with a unit: 600, 10m, 1.5h; the trainer times a few steps and "
    "plans the schedule over the epochs that fit, --epochs being the most (default: no budget)",
    "init_from": "start from a finished checkpoint of a shallower column (net A): its first four convolutions and "
    "three FC layers are copied in, the rest initialised by --init (Section 3.1; default: none)",
    "scale_min": "scale jittering: rescale each training image to a random side of at least this many pixels "
    "before the 32x32 crop (default 0: the 4-pixel padded crop)",
    "scale_max": "scale jittering: the largest side (equal to --scale-min: a fixed training scale)",
    "split_seed": "the validation split's own seed (default: --seed decides it): runs that differ in --seed only "
    "then share one split",
}


def parse_duration(text: str) -> float:
    """``"600"``, ``"600s"``, ``"10m"``, ``"1.5h"`` -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    value = text.strip().lower()
    scale = units.get(value[-1:], None)
    try:
        seconds = float(value[:-1] if scale else value) * (scale or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"cannot read {text!r} as a duration; write e.g. 600, 600s, 10m or 1.5h"
        ) from None
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"a duration cannot be negative, got {text!r}")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vggedu.train",
        description="Train a VGG (CIFAR head) on CIFAR-10, checkpointing every epoch. "
        "Config flags left out take the preset's value, else TrainConfig's default.",
    )
    data = parser.add_argument_group("data and run")
    data.add_argument(
        "--data-root", default="data", help="folder that holds (or will hold) cifar-10-batches-py (default: data)"
    )
    data.add_argument("--download", action="store_true", help="download the official CIFAR-10 first (163 MB)")
    data.add_argument(
        "--no-verify",
        action="store_true",
        help="accept a folder in the CIFAR-10 layout made elsewhere: check structure, not checksums",
    )
    data.add_argument("--data-label", help="describe the data in the run card (e.g. 'CIFAR-10 (JPEG copy)')")
    data.add_argument(
        "--device", default="auto", help="auto (a GPU if there is one, else Apple mps, else the CPU), cpu, cuda or mps"
    )
    data.add_argument(
        "--checkpoint",
        help="checkpoint file, written atomically after every epoch; an existing one is continued "
        "with --resume and never overwritten",
    )
    data.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    data.add_argument(
        "--checkpoint-every",
        type=parse_duration,
        default=CHECKPOINT_EVERY,
        help=f"write the checkpoint when this long has passed since the last one (default {CHECKPOINT_EVERY:g} s; "
        "0: every epoch); the last epoch is always written",
    )
    data.add_argument("--json", type=Path, help="write final test accuracy, history, wall time and run card here")
    data.add_argument("--preset", choices=sorted(PRESETS), help="cpu: the classroom model; gpu: VGG-16-BN recipe")
    data.add_argument("--mode", default=None, help="label for the run card (default: the preset, or 'custom')")
    data.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    data.add_argument(
        "--test-curve",
        action="store_true",
        help="also measure the test set after every epoch, for learning curves only (never for choices)",
    )
    data.add_argument(
        "--no-test",
        action="store_true",
        help="do not measure the test set at all: for runs that inform a choice (the validation split decides)",
    )

    config = parser.add_argument_group("training config (vggedu.training.TrainConfig)")
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.type in ("bool", bool):
            config.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=_HELP[field.name])
        else:
            types = {"int": int, "float": float, "str": str, "int | None": int}
            kind = parse_duration if field.name == "time_budget" else types[str(field.type)]
            choices = ("onecycle", "plateau") if field.name == "schedule" else INITS if field.name == "init" else None
            config.add_argument(flag, type=kind, default=None, choices=choices, help=_HELP[field.name])
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = dict(PRESETS[args.preset]) if args.preset else {}
    for field in dataclasses.fields(TrainConfig):
        given = getattr(args, field.name)
        if given is not None:
            values[field.name] = given
    return TrainConfig(**values)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        device = dist.setup(pick_device(args.device))  # several processes under torchrun: one device each
    except (ConfigError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        return _train(args, config, device)
    finally:
        dist.cleanup()


def _train(args: argparse.Namespace, config: TrainConfig, device) -> int:
    say = print if dist.is_main() else (lambda *a, **k: None)  # one process speaks for all
    try:
        if args.download and dist.is_main():
            load_splits(args.data_root, download=True)  # one process downloads; the others wait for it
        dist.barrier()
        train_split, test_split = load_splits(args.data_root, verify=not args.no_verify, label=args.data_label)
        processes = f" x {dist.world_size()} processes" if dist.world_size() > 1 else ""
        say(
            f"training {config.model} (width {config.width}, batch norm {config.batch_norm}) on "
            f"{device.type}{processes}: {train_split.source}",
            flush=True,
        )
        start = time.perf_counter()

        def report(row: dict) -> None:
            held_out = f"  val acc {row['val_accuracy']:.4f}" if "val_accuracy" in row else ""
            curve = f"  test acc {row['test_accuracy']:.4f} (curve only)" if "test_accuracy" in row else ""
            say(
                f"epoch {row['epoch']:3d}  lr {row['lr']:.4f}  train loss {row['train_loss']:.3f} "
                f"acc {row['train_accuracy']:.3f}{held_out}{curve}  {row['seconds']:.1f} s",
                flush=True,
            )

        result = train(
            config,
            train_split,
            test_split,
            device=device,
            checkpoint=args.checkpoint,
            resume=args.resume,
            checkpoint_every=args.checkpoint_every,
            mode=args.mode or args.preset or "custom",
            progress=not args.no_progress,
            test_curve=args.test_curve,
            measure_test=not args.no_test,
            on_epoch_end=report,
        )
        wall = time.perf_counter() - start
    except (ConfigError, DataError, CheckpointError, TrainingDiverged, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    held_out = f"validation accuracy {result.val_accuracy:.4f}; " if result.val_accuracy is not None else ""
    tested = (
        f"test accuracy {result.test_accuracy:.4f} ({result.test_accuracy_tta:.4f} with flip TTA), measured once"
        if result.test_accuracy is not None
        else "test set not measured (--no-test)"
    )
    say(f"{held_out}{tested}; {wall:.0f} s wall, {result.seconds:.0f} s in epochs")
    if args.json and dist.is_main():
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "val_accuracy": result.val_accuracy,
                    "test_accuracy": result.test_accuracy,
                    "test_accuracy_tta": result.test_accuracy_tta,
                    "wall_seconds": wall,
                    "train_seconds": result.seconds,
                    "history": result.history,
                    "card": result.card,
                },
                indent=2,
            )
        )
    dist.barrier()
    return 0


if __name__ == "__main__":
    sys.exit(main())
