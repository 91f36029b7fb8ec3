"""Studies over many runs: the paper's initialisation of deep nets from net A, and a resumable grid runner.

* :func:`init_from` copies a trained shallow VGG into a deeper one as Section 3.1 did: the
  first four convolutional layers and the three fully connected layers, the rest left as
  initialised. Layers are matched by the paper's names (``conv1_1``, ``conv2_1``, ``conv3_1``,
  ``conv3_2`` are net A's four first convolutions; the deeper columns have layers of those names
  and shapes), so the copy is exact, not positional.
* :func:`run_grid` trains a list of configurations (e.g. every Table 1 column x seeds) and keeps
  one JSON file of results, written after every run: a finished run is never run again.

    python -m vggedu.experiments depth --data-root data --width 0.25 --epochs 8 --train-size 15000 \\
        --seeds 0 1 2 --out runs/depth.json

Introduced in notebook 07.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from .models import VGG

__all__ = ["PAPER_TRANSFER", "init_from", "run_grid", "main"]

# Section 3.1: "we initialised the first four convolutional layers and the last three fully-connected
# layers with the layers of net A (the intermediate layers were initialised randomly)".
PAPER_TRANSFER = ("conv1_1", "conv2_1", "conv3_1", "conv3_2", "fc6", "fc7", "fc8")


def _named_layers(model: VGG) -> dict[str, list[nn.Module]]:
    """Paper name -> the modules holding that layer's tensors (the conv and its batch norm, or the Linear)."""
    names: dict[str, list[nn.Module]] = {}
    block, index = 1, 0
    for module in model.features:
        if isinstance(module, nn.Conv2d):
            index += 1
            names[f"conv{block}_{index}"] = [module]
        elif isinstance(module, nn.BatchNorm2d):
            names[f"conv{block}_{index}"].append(module)
        elif isinstance(module, nn.MaxPool2d):
            block, index = block + 1, 0
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    for i, linear in enumerate(linears):
        names[f"fc{6 + i}"] = [linear]
    return names


@torch.no_grad()
def init_from(shallow: VGG, deep: VGG, layers: Sequence[str] = PAPER_TRANSFER) -> dict[str, list[str]]:
    """Copy ``layers`` (default: the paper's seven) from ``shallow`` into ``deep``, in place.

    Every tensor of each named layer (weight, bias, and batch-norm scale, shift and running
    statistics) is copied; everything else in ``deep`` keeps its initialisation. Returns
    ``{"copied": [...], "fresh": [...]}`` (layer names of ``deep``). Raises a ValueError, before
    copying anything, if a layer is missing from either network or its shapes differ.
    """
    if not isinstance(shallow, VGG) or not isinstance(deep, VGG):
        raise TypeError("init_from takes two vggedu VGG models (vggedu.vgg(...)), the trained one first")
    source, target = _named_layers(shallow), _named_layers(deep)
    problems = []
    for name in layers:
        if name not in source or name not in target:
            where = "the shallow net" if name not in source else "the deep net"
            problems.append(f"{name} is not in {where}")
            continue
        a = [t.shape for m in source[name] for t in m.state_dict().values()]
        b = [t.shape for m in target[name] for t in m.state_dict().values()]
        if a != b:
            problems.append(f"{name}: shapes {[tuple(s) for s in a]} vs {[tuple(s) for s in b]}")
    if problems:
        raise ValueError(
            "cannot initialise the deep net from the shallow one: " + "; ".join(problems) + ". Both must be "
            "built with the same width, head, batch norm and number of classes (e.g. vgg('A', ...) and "
            "vgg('E', ...) with the same keyword arguments)."
        )
    for name in layers:
        for src, dst in zip(source[name], target[name]):
            dst.load_state_dict(src.state_dict())
    return {"copied": list(layers), "fresh": [n for n in target if n not in layers]}


def run_grid(
    configs: Sequence,
    train_split,
    test_split,
    out: str | Path,
    *,
    device: torch.device | str = "auto",
    measure_test: bool = True,
    on_result: Callable[[str, dict], None] | None = None,
    label: Callable[[object], str] | None = None,
    checkpoints: str | Path | None = None,
    mode: str = "study",
) -> dict[str, dict]:
    """Train every :class:`~vggedu.training.TrainConfig` in ``configs`` unless ``out`` already holds its result.

    ``out`` is one JSON file ``{run name: result}``, rewritten (atomically) after every run, so a
    stopped grid continues where it stopped. A result holds the validation accuracy, the test
    accuracy (measured once, after training; ``measure_test=False`` skips it), the history, the
    seconds and the run card. Returns every result in ``out``.

    With ``checkpoints`` (a folder), each run keeps ``<folder>/<run name>.pt`` after every epoch
    and a run stopped part way (a session that ended) resumes from it, exactly, instead of
    starting again; the checkpoint stays there when the run is finished.
    """
    from .training import TrainingDiverged, train

    out = Path(out)
    results: dict[str, dict] = json.loads(out.read_text()) if out.is_file() else {}
    for config in configs:
        key = label(config) if label else config.run_name()
        if key in results and results[key].get("config") == config.to_dict():
            continue  # finished earlier
        start, rows = time.perf_counter(), []
        checkpoint = Path(checkpoints) / f"{config.run_name()}.pt" if checkpoints else None
        try:
            result = train(
                config,
                train_split,
                test_split,
                device=device,
                checkpoint=checkpoint,
                resume=checkpoint is not None,
                mode=mode,
                progress=False,
                measure_test=measure_test,
                on_epoch_end=rows.append,
            )
        except TrainingDiverged as error:  # a start that cannot train is a result too: record where it stopped
            results[key] = {
                "config": config.to_dict(),
                "diverged": str(error).split(".")[0],
                "history": rows,
                "val_accuracy": None,
                "test_accuracy": None,
                "seconds": time.perf_counter() - start,
            }
        else:
            results[key] = {
                "config": config.to_dict(),
                "val_accuracy": result.val_accuracy,
                "test_accuracy": result.test_accuracy,
                "test_accuracy_tta": result.test_accuracy_tta,
                "seconds": time.perf_counter() - start,  # this process's wall time (a resumed run: since the resume)
                "train_seconds": result.seconds,  # every epoch's time, from the history
                "history": result.history,
                "card": result.card,
            }
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        tmp.replace(out)
        if on_result:
            on_result(key, results[key])
    return results


def main(argv: list[str] | None = None) -> int:
    from .data import load_cifar10
    from .training import TrainConfig

    parser = argparse.ArgumentParser(prog="python -m vggedu.experiments", description="Grids of training runs.")
    parser.add_argument(
        "study",
        choices=["depth", "init"],
        help="depth: every Table 1 column, with batch norm, x seeds; init: VGG-19 without batch norm from four "
        "starts (the paper's N(0, 10^-2), net A's layers, Glorot, He), after training net A",
    )
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--no-verify", action="store_true")
    parser.add_argument("--data-label")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--columns", nargs="+", default=["A", "A-LRN", "B", "C", "D", "E", "B-5x5"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--train-size", type=int, default=15_000)
    parser.add_argument("--no-mixed-precision", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkpoints", type=Path, help="keep each run's checkpoint here; a stopped run resumes")
    parser.add_argument("--mode", default="study", help="the run cards' mode label, e.g. 'CPU study, converged'")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: PyTorch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from .train import PRESETS

    train_split = load_cifar10(args.data_root, train=True, verify=not args.no_verify)
    test_split = load_cifar10(args.data_root, train=False, verify=not args.no_verify)
    if args.data_label:
        train_split = dataclasses.replace(train_split, source=args.data_label)
    base = dict(PRESETS["cpu"], time_budget=0.0, width=args.width, epochs=args.epochs, train_size=args.train_size)
    base["mixed_precision"] = not args.no_mixed_precision

    def report(key: str, r: dict) -> None:
        print(
            f"{key}: validation {r['val_accuracy']}, test {r['test_accuracy']}, {r['seconds']:.0f} s "
            f"{r.get('diverged', '')}",
            flush=True,
        )

    if args.study == "depth":
        # Seed by seed: a finished seed is every column on the same split and data order, ready to pair.
        configs = [TrainConfig(**dict(base, model=c, seed=s)) for s in args.seeds for c in args.columns]
        run_grid(
            configs,
            train_split,
            test_split,
            args.out,
            device=args.device,
            on_result=report,
            checkpoints=args.checkpoints,
            mode=args.mode,
        )
        return 0
    # init: plain nets (no batch norm) at the paper's learning rate for them, 0.01; one change per run, the start.
    plain = dict(base, batch_norm=False, lr=0.01, seed=args.seeds[0])
    net_a = TrainConfig(**dict(plain, model="A", init="glorot"))
    checkpoint = args.out.with_name(args.out.stem + "-net-A.pt")
    if not checkpoint.is_file():  # train net A once, keep its checkpoint for the transfer
        from .training import train

        train(net_a, train_split, test_split, device=args.device, checkpoint=checkpoint, progress=False)
    starts = {
        "N(0, 10^-2), the paper's": TrainConfig(**dict(plain, model="E", init="paper")),
        "net A's layers, rest N(0, 10^-2)": TrainConfig(
            **dict(plain, model="E", init="paper", init_from=str(checkpoint))
        ),
        "Glorot": TrainConfig(**dict(plain, model="E", init="glorot")),
        "He (Kaiming)": TrainConfig(**dict(plain, model="E", init="kaiming")),
    }
    names = {config.run_name(): name for name, config in starts.items()}
    run_grid(
        list(starts.values()),
        train_split,
        test_split,
        args.out,
        device=args.device,
        on_result=report,
        label=lambda config: names[config.run_name()],
        measure_test=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
