"""Shared by the benchmark scripts: argument parsing, data, timing, results."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from vggedu.data import load_splits, write_synthetic_cifar10
from vggedu.devices import pick_device
from vggedu.runs import run_card
from vggedu.training import TrainConfig

RESULTS = Path(__file__).resolve().parent / "results"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data-root", help="folder with cifar-10-batches-py (default: synthetic data, for a dry run)")
    p.add_argument("--no-verify", action="store_true", help="accept a copy that does not match the checksums")
    p.add_argument("--data-label", help="describe the data in the results, e.g. 'CIFAR-10 (JPEG copy)'")
    p.add_argument("--device", default="auto")
    p.add_argument("--rounds", type=int, default=3, help="alternating measurement rounds (median reported)")
    p.add_argument("--out", type=Path, help="results JSON (default: benchmarks/results/<script>-<device>.json)")
    return p


def load(args, tmp: Path):
    if args.data_root is None:
        write_synthetic_cifar10(tmp, n_train=10_000, n_test=1000)
        root, verify = tmp, False
    else:
        root, verify = args.data_root, not args.no_verify
    return load_splits(root, verify=verify, label=args.data_label)[0]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def median(values):
    return statistics.median(values)


def compare_rates(runs: dict, device: torch.device, rounds: int, *, faster: str, baseline: str) -> dict:
    """Time each run in alternating rounds (so all see the same machine load) and report images/s.

    ``runs`` maps a name to ``(function, images per call)``. Returns the median rate of each
    run, every round's rate, and the speed-up of ``faster`` over ``baseline``; prints the rates.
    """
    rates = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (fn, images) in runs.items():
            rates[name].append(images / timed(fn, device))
    results = {name: round(median(values)) for name, values in rates.items()}
    results["speedup"] = round(results[faster] / results[baseline], 2)
    results["all_rounds"] = {name: [round(r) for r in values] for name, values in rates.items()}
    width = max(map(len, runs))
    for name in runs:
        print(f"{name:{width}s} {results[name]:>9,} images/s")
    return results


def save(
    name: str,
    device: torch.device,
    data: str,
    n_images: int,
    results: dict,
    out: Path | None,
    config: TrainConfig | None = None,
) -> Path:
    card = run_card(config or TrainConfig(), device, data=data, train_images=n_images, test_images=0, mode="benchmark")
    if config is None:  # no model in this benchmark
        card["config"] = card["precision"] = None
    out = out or RESULTS / f"{name}-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": name, "results": results, "card": card}, indent=2))
    return out


__all__ = ["parser", "load", "timed", "median", "compare_rates", "save", "pick_device", "sync"]
