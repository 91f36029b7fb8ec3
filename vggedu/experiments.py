"""Studies over many runs: a resumable grid runner, notebook 05's ablation ladder, and the depth and
initialisation studies of notebook 07.

* :func:`run_grid` trains a list of configurations (e.g. every Table 1 column x seeds) and keeps
  one JSON file of results, written after every run: a finished run is never run again.

    python -m vggedu.experiments depth --data-root data --width 0.25 --epochs 8 --train-size 15000 \\
        --seeds 0 1 2 --out runs/depth.json

The converged study of notebook 07 (every column and B-5x5, all 45,000 training images, fp32,
seed by seed; about 3 hours of 2 CPU cores; rerun the same command to continue a stopped grid)::

    python -m vggedu.experiments depth --data-root data --width 0.125 --epochs 15 --train-size 0 \\
        --seeds 0 1 2 --no-mixed-precision --mode "CPU study, converged (fp32)" \\
        --out vggedu/results/depth-converged-cpu.json --checkpoints runs/depth-checkpoints

Notebook 05's ladder (:data:`LADDER`: from the paper's recipe in miniature to the classroom recipe, one
rung at a time, at the classroom run's length, fp32, three seeds; about 3 hours of 2 CPU cores)::

    python -m vggedu.experiments ladder --data-root data --seeds 0 1 2 --out runs/ladder.json \
        --checkpoints runs/ladder-checkpoints

Introduced in notebook 07 (the grid runner, the depth and initialisation studies) and notebook 05 (the ladder).
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

from .data import load_splits
from .models import PAPER_TRANSFER, init_from  # the paper's start from net A (Section 3.1), used by notebook 07
from .runs import train
from .training import PRESETS, TrainConfig, TrainingDiverged

__all__ = [
    "INIT_STARTS",
    "LADDER",
    "LADDER_EPOCHS",
    "PAPER_TRANSFER",
    "init_from",
    "ladder_configs",
    "run_grid",
    "main",
]

# The starts of the initialisation study (VGG-19, net E, without batch norm), each one change from the first.
INIT_STARTS: dict[str, dict] = {
    "N(0, 0.1^2): 10^-2 variance, as written": dict(init="paper"),
    "N(0, 0.01^2): std 10^-2, Caffe's usual": dict(init="paper-0.01"),
    "net A's layers, rest N(0, 0.1^2)": dict(init="paper", init_from="net A"),
    "Glorot (PyTorch's xavier_uniform_)": dict(init="glorot"),
    "Glorot as Caffe's xavier filler (1/fan_in)": dict(init="caffe-xavier"),
    "He (Kaiming)": dict(init="kaiming"),
}


# Notebook 05's ablation ladder, from the paper's recipe (Section 3.1) in miniature to the classroom recipe
# (PRESETS["cpu"]): each rung (name, what changes from the rung above, the fields) changes the fields given,
# and nothing else; the top rung is the classroom recipe. One rung changes two fields, and says so: batch norm
# comes with the start the classic CIFAR-10 VGG recipe uses with it.
LADDER: list[tuple[str, str, dict]] = [
    (
        "the paper's recipe",
        "no batch norm, N(0, 10^-2) start, lr 0.01 divided by 10 on a validation plateau, dropout 0.5",
        dict(batch_norm=False, init="paper", lr=0.01, schedule="plateau", dropout=0.5, label_smoothing=0.0),
    ),
    (
        "+ batch norm",
        "batch norm after every convolution, with a Kaiming start (two fields)",
        dict(batch_norm=True, init="kaiming"),
    ),
    ("learning rate 0.1", "a starting rate ten times the paper's", dict(lr=0.1)),
    ("one-cycle schedule", "up for a quarter of the steps, then down to 1/1000 of the peak", dict(schedule="onecycle")),
    (
        "label smoothing 0.1",
        "the target: 0.91 on the true class, 0.01 on each other class",
        dict(label_smoothing=0.1),
    ),
    ("dropout 0", "no dropout in the classifier: the classroom recipe", dict(dropout=0.0)),
]
LADDER_EPOCHS = 13  # the classroom model's length: the epochs its 10-minute budget planned on 2 CPU cores


def ladder_configs(base: TrainConfig, seeds: Sequence[int] = (0, 1, 2)) -> dict[str, TrainConfig]:
    """Every rung of :data:`LADDER` for every seed, seed by seed: ``{"rung k: name, seed s": config}``.

    Rung 0 is ``base`` with the paper's fields; each rung above changes its own fields from the rung
    below. With ``base`` the classroom recipe, the top rung is ``base`` itself. Seed ``s`` fixes the
    validation split and the data order of every rung, so rungs pair by seed.
    """
    configs = {}
    for seed in seeds:
        fields: dict = {}
        for k, (name, _, change) in enumerate(LADDER):
            fields.update(change)
            configs[f"rung {k}: {name}, seed {seed}"] = dataclasses.replace(base, seed=seed, **fields)
    return configs


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
                "diverged": str(error),
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
    parser = argparse.ArgumentParser(prog="python -m vggedu.experiments", description="Grids of training runs.")
    parser.add_argument(
        "study",
        choices=["depth", "init", "ladder"],
        help="depth: every Table 1 column, with batch norm, x seeds; init: VGG-19 without batch norm from six "
        "starts (INIT_STARTS: both readings of the paper's N(0, 10^-2), net A's layers, two Glorots, He), "
        "after net A itself, seed by seed; ladder: notebook 05's LADDER at the classroom recipe's length "
        f"({LADDER_EPOCHS} epochs, all 45,000 images, fp32; --width, --epochs, --train-size, --columns ignored)",
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
    train_split, test_split = load_splits(args.data_root, verify=not args.no_verify, label=args.data_label)
    base = dict(PRESETS["cpu"], time_budget=0.0, width=args.width, epochs=args.epochs, train_size=args.train_size)
    base["mixed_precision"] = not args.no_mixed_precision

    def report(key: str, r: dict) -> None:
        print(
            f"{key}: validation {r['val_accuracy']}, test {r['test_accuracy']}, {r['seconds']:.0f} s "
            f"{r.get('diverged', '')}",
            flush=True,
        )

    grid = dict(device=args.device, on_result=report, checkpoints=args.checkpoints, mode=args.mode)
    if args.study == "ladder":
        classroom = TrainConfig(**dict(PRESETS["cpu"], time_budget=0.0, epochs=LADDER_EPOCHS, mixed_precision=False))
        configs = ladder_configs(classroom, args.seeds)
        names = {c.run_name(): label for label, c in configs.items()}
        run_grid(
            list(configs.values()),
            train_split,
            test_split,
            args.out,
            measure_test=False,
            label=lambda c: names[c.run_name()],
            **grid,
        )
        return 0
    if args.study == "depth":
        # Seed by seed: a finished seed is every column on the same split and data order, ready to pair.
        configs = [TrainConfig(**dict(base, model=c, seed=s)) for s in args.seeds for c in args.columns]
        run_grid(configs, train_split, test_split, args.out, **grid)
        return 0
    # init: plain nets (no batch norm) at the paper's learning rate for them, 0.01; one change per run, the start.
    folder = args.checkpoints or args.out.with_name(args.out.stem + "-checkpoints")
    for seed in args.seeds:
        plain = dict(base, batch_norm=False, lr=0.01, seed=seed)
        # Net A first, in the same grid: "shallow enough to be trained with random initialisation" (Section 3.1),
        # the paper's normal start; a run stopped part way resumes, and only a finished net A is used.
        net_a = TrainConfig(**dict(plain, model="A", init="paper"))
        configs, names = [net_a], {net_a.run_name(): f"net A itself, seed {seed}"}
        for name, change in INIT_STARTS.items():
            if change.get("init_from"):
                change = dict(change, init_from=str(Path(folder) / f"{net_a.run_name()}.pt"))
            config = TrainConfig(**dict(plain, model="E", **change))
            configs.append(config)
            names[config.run_name()] = f"{name}, seed {seed}"
        run_grid(
            configs,
            train_split,
            test_split,
            args.out,
            label=lambda c, names=names: names[c.run_name()],
            measure_test=False,
            **dict(grid, checkpoints=folder),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
