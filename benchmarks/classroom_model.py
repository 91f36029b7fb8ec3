"""The shipped classroom model: write it from a training run, and re-measure it on real data.

    # 1. train the cpu preset with a checkpoint (about 10 minutes on 2 cores)
    python -m vggedu.train --data-root /tmp/cifar10 --no-verify --data-label "CIFAR-10 (JPEG copy)" \
        --preset cpu --no-mixed-precision --seed 0 --checkpoint runs/cpu-seed0.pt --json runs/cpu-seed0.json
    # 2. write vggedu/weights/classroom.pt from it (weights, card, history, normalisation)
    python benchmarks/classroom_model.py export --checkpoint runs/cpu-seed0.pt --json runs/cpu-seed0.json \
        --data-root /tmp/cifar10 --no-verify
    # 3. re-measure the shipped file's test accuracy against its run card
    python benchmarks/classroom_model.py measure --data-root /tmp/cifar10 --no-verify \
        --data-label "CIFAR-10 (JPEG copy)"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from common import save  # noqa: I001  (benchmarks/common.py)

from vggedu.classroom import CLASSROOM_WEIGHTS, export_classroom_model, load_classroom_model
from vggedu.data import channel_stats, load_splits
from vggedu.loaders import DeviceLoader
from vggedu.training import TrainConfig, evaluate, split_validation


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["export", "measure"])
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--no-verify", action="store_true")
    parser.add_argument("--data-label", default=None)
    parser.add_argument("--checkpoint", type=Path, help="export: the finished training checkpoint")
    parser.add_argument("--json", type=Path, help="export: the run's --json result")
    args = parser.parse_args()
    train_split, test_split = load_splits(args.data_root, verify=not args.no_verify, label=args.data_label)
    if args.command == "export":
        result = json.loads(args.json.read_text())
        config = TrainConfig(**result["card"]["config"])
        fit, _ = split_validation(train_split, config)  # the run's normalisation: its training images' statistics
        mean, std = channel_stats(fit.images)
        path = export_classroom_model(args.checkpoint, result, mean, std)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.2f} MiB)")
        return 0
    model, info = load_classroom_model()
    loader = DeviceLoader(test_split, 1000, train=False, mean=info["mean"], std=info["std"])
    both = evaluate(model, loader, tta=True)  # one pass of [x, x.flip(3)]: plain and flip TTA (soft-max averaged)
    plain, flipped = both["accuracy"], both["tta_accuracy"]
    label = args.data_label or test_split.source
    print(
        f"classroom model on {label}: test accuracy {plain:.4f} ({flipped:.4f} with flip TTA); "
        f"run card: {info['test_accuracy']:.4f} ({info['test_accuracy_tta']:.4f}), measured on {info['card']['data']}"
    )
    out = save(
        "classroom_model",
        torch.device("cpu"),
        label,
        len(test_split),
        {
            "test_accuracy": plain,
            "test_accuracy_tta": flipped,
            "card_test_accuracy": info["test_accuracy"],
            "card_test_accuracy_tta": info["test_accuracy_tta"],
            "data": label,
            "file": str(CLASSROOM_WEIGHTS.relative_to(CLASSROOM_WEIGHTS.parents[2])),
            "file_bytes": CLASSROOM_WEIGHTS.stat().st_size,
        },
        None,
        config=TrainConfig(**info["card"]["config"]),
    )
    print("wrote", out)
    return 0 if abs(plain - info["test_accuracy"]) < 0.005 or label != info["card"]["data"] else 1


if __name__ == "__main__":
    sys.exit(main())
