"""Notebook 06's study: the paper's scale protocol in miniature, trained, then scored every way it was tested.

The paper trained its single-scale models at a fixed S and "For speed reasons, we trained
multi-scale models by fine-tuning all layers of a single-scale model with the same configuration,
pre-trained with fixed S = 384" (Section 3.1). The miniature does the same at CIFAR-10's size:

* **stage 1**: the classroom recipe at a fixed training scale S = 36 (the paper's 256, x 32/224),
  one run per initialisation seed, all on one validation split (``split_seed``), so that two seeds
  are two equally trained networks on the same held-out images (the fusion needs that);
* **stage 2**: from each stage-1 model, the same number of epochs of fine-tuning (every layer, a
  lower learning rate) at each setting of :data:`SETTINGS`: the fixed S = 36 again (the control:
  the same extra training, no jitter), jittered S in [36, 48] and jittered S in [36, 72] (the
  paper's [256; 512] scaled);
* **scoring**: every stage-2 model on the validation split by every scheme of :data:`SCHEMES` at
  test sizes that are multiples of 32 (:data:`TEST_SIZES`: the whole image falls in the pooling
  grid, :meth:`~vggedu.evaluation.FullyConvolutionalVGG.dropped_pixels`), each model's scheme
  chosen on validation, then the test set once per final model (each model with its chosen scheme,
  and the fusion of every two seeds of a setting).

Two files come out: the runs (:func:`vggedu.experiments.run_grid`'s file: histories, run cards)
and the scores (per-image correctness, packed with :func:`vggedu.studies.pack_correct`, so every
paired test can be recomputed from the file). Both are resumable: a finished run or a scored
model is never redone. The shipped study (``vggedu/results/scales-*-cpu.json``) came from::

    python -m vggedu.scales --data-root data --out vggedu/results/scales --checkpoints runs/scales

Introduced in notebook 06.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .checkpoints import load_checkpoint
from .data import CIFAR10Split, channel_stats, load_splits
from .devices import pick_device
from .evaluation import dense_probabilities, fully_convolutional, fuse, multi_crop_probabilities, resize
from .experiments import run_grid
from .loaders import DeviceLoader
from .studies import pack_correct
from .training import PRESETS, TrainConfig, build_model, split_validation

__all__ = [
    "SETTINGS",
    "START",
    "TEST_SIZES",
    "SCHEMES",
    "single_scale",
    "study_configs",
    "score_schemes",
    "run_study",
    "main",
]

START = (36, 36)  # stage 1: the fixed training scale the paper's single-scale models had (S = 256, x 32/224)
# Stage 2, each from the stage-1 model: (S_min, S_max) of the training scale; equal ends are a fixed S.
SETTINGS: dict[str, tuple[int, int]] = {
    "fixed S=36": (36, 36),
    "jittered S=[36,48]": (36, 48),
    "jittered S=[36,72]": (36, 72),
}
# Test sizes Q: multiples of the stride 32, so floor pooling drops no row or column of the image.
TEST_SIZES = (32, 64)
SCHEMES = ("centre crop", "dense, one scale", "dense, multi-scale", "multi-crop, multi-scale", "multi-crop & dense")
EVAL_BATCH = 500


def single_scale(scale: tuple[int, int], sizes: Sequence[int] = TEST_SIZES) -> int:
    """The one test size for a model trained at ``scale``: the size in ``sizes`` nearest the middle of its
    training range (the paper tested a jittered model at the middle, Q = 384 for S in [256; 512]); ties go
    to the smaller size. S = 36 -> 32, [36, 48] -> 32, [36, 72] -> 64."""
    middle = (scale[0] + scale[1]) / 2
    return min(sorted(sizes), key=lambda q: abs(q - middle))


def study_configs(
    base: TrainConfig,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    split_seed: int = 0,
    finetune_epochs: int,
    finetune_lr: float,
    checkpoints: str | Path,
    settings: dict[str, tuple[int, int]] = SETTINGS,
) -> tuple[dict[str, TrainConfig], dict[str, TrainConfig]]:
    """The study's runs: ``({label: stage-1 config}, {label: stage-2 config})``.

    Stage 1 is ``base`` at :data:`START`, one run per seed, every seed on the validation split of
    ``split_seed``. Each stage-2 run starts from its seed's stage-1 checkpoint in ``checkpoints``
    (``TrainConfig.init_from``: the same network, so every weight) and changes the training scale, the
    epochs and the peak learning rate, and nothing else: its validation images are the stage-1
    model's. Labels: ``"start S=36, seed 0"``, ``"jittered S=[36,72], seed 0"``.
    """
    first, second = {}, {}
    for seed in seeds:
        start = dataclasses.replace(base, scale_min=START[0], scale_max=START[1], seed=seed, split_seed=split_seed)
        first[f"start S={START[0]}, seed {seed}"] = start
        for name, (low, high) in settings.items():
            second[f"{name}, seed {seed}"] = dataclasses.replace(
                start,
                scale_min=low,
                scale_max=high,
                epochs=finetune_epochs,
                lr=finetune_lr,
                init_from=str(Path(checkpoints) / f"{start.run_name()}.pt"),
            )
    return first, second


def _one_batch(model, fcn, x, wanted: Sequence[str], *, single: int, sizes: Sequence[int], grid: int) -> dict:
    """The ``wanted`` schemes on one batch; each dense pass and crop set is computed once, and only if needed."""
    crop, done = fcn.train_size, {}

    def once(key, compute):
        if key not in done:
            done[key] = compute()
        return done[key]

    def dense(q):
        return once(("dense", q), lambda: dense_probabilities(fcn, resize(x, q)))

    def crops(q, g=None):
        g = (grid if q > crop else 1) if g is None else g
        return once(("crops", q, g), lambda: multi_crop_probabilities(model, x, [q], crop=crop, grid=g))

    def multi_dense():
        return once("multi dense", lambda: torch.stack([dense(q) for q in sizes]).mean(0))

    def multi_crop():
        return once("multi crop", lambda: torch.stack([crops(q) for q in sizes]).mean(0))

    make = {
        "centre crop": lambda: crops(single, 1),
        "dense, one scale": lambda: dense(single),
        "dense, multi-scale": multi_dense,
        "multi-crop, multi-scale": multi_crop,
        "multi-crop & dense": lambda: fuse([multi_dense(), multi_crop()]),
    }
    return {name: make[name]() for name in wanted}


@torch.no_grad()
def score_schemes(
    model: torch.nn.Module,
    loader,
    *,
    single: int,
    sizes: Sequence[int] = TEST_SIZES,
    grid: int = 3,
    schemes: Sequence[str] = SCHEMES,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The ``schemes`` (default: all of :data:`SCHEMES`) for one model over ``loader``:
    ``({scheme: probabilities}, labels)``. Only the passes those schemes need are run.

    Each averages the image and its mirror image, as the paper did. *centre crop*: the image at
    ``single``, its central 32x32 crop, through the original network; *dense, one scale*: the whole
    image at ``single`` through the converted network, score map averaged; *dense, multi-scale*: dense
    at every size of ``sizes``, averaged; *multi-crop, multi-scale*: at every size a ``grid`` x
    ``grid`` grid of 32x32 crops (one crop where the size is 32), each size weighted equally as the
    paper's 50 crops per scale were; *multi-crop & dense*: the mean of the two multi-scale schemes.
    """
    unknown = [name for name in schemes if name not in SCHEMES]
    if unknown or not schemes:
        raise ValueError(f"schemes must name some of {', '.join(SCHEMES)}; got {list(schemes)}")
    model = model.eval()
    fcn = fully_convolutional(model).eval()
    out: dict[str, list[torch.Tensor]] = {name: [] for name in schemes}
    all_labels = []
    for x, labels in loader:
        batch = _one_batch(model, fcn, x, schemes, single=single, sizes=sizes, grid=grid)
        for name in schemes:
            out[name].append(batch[name].float().cpu())
        all_labels.append(labels.cpu())
    return {name: torch.cat(parts) for name, parts in out.items()}, torch.cat(all_labels)


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def _correct(probabilities: torch.Tensor, labels: torch.Tensor) -> dict:
    right = probabilities.argmax(1) == labels
    return pack_correct(right.numpy()) | {"accuracy": right.float().mean().item()}


def _loaders(config: TrainConfig, train_split: CIFAR10Split, test_split: CIFAR10Split, device) -> tuple:
    # The run's own validation split and normalisation (its training images' channel statistics).
    fit, val = split_validation(train_split, config)
    mean, std = channel_stats(fit.images)
    make = lambda split: DeviceLoader(
        split, EVAL_BATCH, train=False, device=device, mean=mean, std=std, channels_last=True
    )  # as the models were trained
    return make(val), make(test_split)


def _model(config: TrainConfig, checkpoint: Path, device) -> torch.nn.Module:
    state = load_checkpoint(checkpoint, config)
    model = build_model(dataclasses.replace(config, init_from=""))  # the trained weights replace the start
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def run_study(
    train_split: CIFAR10Split,
    test_split: CIFAR10Split,
    *,
    out: str | Path,
    base: TrainConfig,
    checkpoints: str | Path,
    finetune_epochs: int,
    finetune_lr: float,
    seeds: Sequence[int] = (0, 1, 2),
    split_seed: int = 0,
    settings: dict[str, tuple[int, int]] = SETTINGS,
    sizes: Sequence[int] = TEST_SIZES,
    grid: int = 3,
    device: torch.device | str = "auto",
    mode: str = "study",
    on_result: Callable[[str, dict], None] | None = None,
) -> tuple[dict, dict]:
    """Train both stages and score every stage-2 model; returns ``(runs, scores)`` and writes them to
    ``<out>-runs.json`` and ``<out>-scores.json`` (resumable: finished runs and scored models are kept).

    ``scores`` holds ``"protocol"`` (test sizes, grid, the single size of each setting, the seeds),
    ``"val"`` (per model label, every scheme's per-image correctness and accuracy on the validation
    split), ``"chosen"`` (each model's best scheme on validation), ``"test"`` (each model once, with its
    chosen scheme) and ``"fusion"`` (every two seeds of a setting, each with its chosen scheme, softmax
    outputs averaged: ``"val"`` and ``"test"``), and ``"seconds"`` (scoring time per model).
    """
    device = pick_device(device)
    checkpoints = Path(checkpoints)
    runs_path, scores_path = Path(f"{out}-runs.json"), Path(f"{out}-scores.json")
    first, second = study_configs(
        base,
        seeds=seeds,
        split_seed=split_seed,
        finetune_epochs=finetune_epochs,
        finetune_lr=finetune_lr,
        checkpoints=checkpoints,
        settings=settings,
    )
    grid_kw = dict(device=device, checkpoints=checkpoints, mode=mode, on_result=on_result, measure_test=False)
    for configs in (first, second):  # stage 1 must finish before stage 2 can start from it
        names = {c.run_name(): label for label, c in configs.items()}
        run_grid(
            list(configs.values()),
            train_split,
            test_split,
            runs_path,
            label=lambda c, names=names: names[c.run_name()],
            **grid_kw,
        )
    runs = json.loads(runs_path.read_text())
    single = {name: single_scale(scale, sizes) for name, scale in settings.items()}
    protocol = {"sizes": list(sizes), "grid": grid, "single": single, "seeds": list(seeds), "split_seed": split_seed}
    scores = json.loads(scores_path.read_text()) if scores_path.is_file() else {}
    if scores.get("protocol") != protocol:  # another protocol: score again
        scores = {"protocol": protocol, "val": {}, "chosen": {}, "test": {}, "seconds": {}}
    held: dict[str, dict[str, torch.Tensor]] = {}  # chosen scheme's probabilities, for the fusion
    labels: dict[str, torch.Tensor] = {}
    for label, config in second.items():
        cache = checkpoints / f"{config.run_name()}.scores.pt"  # this model's probabilities (not shipped)
        if label in scores["test"] and cache.is_file():
            held[label] = torch.load(cache, weights_only=True)
            labels.update(val=held[label]["val_labels"], test=held[label]["test_labels"])
            continue
        started = time.perf_counter()
        model = _model(config, checkpoints / f"{config.run_name()}.pt", device)
        val_loader, test_loader = _loaders(config, train_split, test_split, device)
        name = label.rsplit(", seed", 1)[0]
        val_probs, val_labels = score_schemes(model, val_loader, single=single[name], sizes=sizes, grid=grid)
        scores["val"][label] = {scheme: _correct(p, val_labels) for scheme, p in val_probs.items()}
        chosen = max(SCHEMES, key=lambda s: scores["val"][label][s]["accuracy"])  # first of equals: the cheaper
        scores["chosen"][label] = chosen
        # The test set, once, for the final model with the scheme chosen on validation.
        test_probs, test_labels = score_schemes(
            model, test_loader, single=single[name], sizes=sizes, grid=grid, schemes=[chosen]
        )
        scores["test"][label] = _correct(test_probs[chosen], test_labels)
        held[label] = dict(
            val=val_probs[chosen], test=test_probs[chosen], val_labels=val_labels, test_labels=test_labels
        )
        torch.save(held[label], cache)
        labels.update(val=val_labels, test=test_labels)
        scores["seconds"][label] = time.perf_counter() - started
        _write(scores_path, scores)
    fusion: dict[str, dict] = {"val": {}, "test": {}}
    for name in settings:
        for a, b in itertools.combinations(seeds, 2):
            pair = [f"{name}, seed {a}", f"{name}, seed {b}"]
            key = f"{name}, seeds {a}+{b}"
            for part in ("val", "test"):
                fusion[part][key] = _correct(fuse([held[m][part] for m in pair]), labels[part])
    scores["fusion"] = fusion
    _write(scores_path, scores)
    return runs, scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vggedu.scales",
        description="Notebook 06's scale study: fixed S=36, then fine-tuned at fixed S, jittered [36,48] and "
        "[36,72]; every model scored every way the paper tested.",
    )
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--no-verify", action="store_true")
    parser.add_argument("--data-label")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--train-size", type=int, default=15_000)
    parser.add_argument("--epochs", type=int, default=10, help="stage 1, at fixed S=36")
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--finetune-lr", type=float, default=0.01, help="peak learning rate of stage 2")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT-runs.json and OUT-scores.json")
    parser.add_argument("--checkpoints", type=Path, required=True)
    parser.add_argument("--mode", default="CPU study, scales (fp32)")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    train_split, test_split = load_splits(args.data_root, verify=not args.no_verify, label=args.data_label)
    base = TrainConfig(
        **dict(PRESETS["cpu"], time_budget=0.0, epochs=args.epochs, train_size=args.train_size, mixed_precision=False)
    )

    def report(key: str, r: dict) -> None:
        print(f"{key}: validation {r['val_accuracy']}, {r['seconds']:.0f} s", flush=True)

    _, scores = run_study(
        train_split,
        test_split,
        out=args.out,
        base=base,
        checkpoints=args.checkpoints,
        finetune_epochs=args.finetune_epochs,
        finetune_lr=args.finetune_lr,
        seeds=args.seeds,
        split_seed=args.split_seed,
        device=args.device,
        mode=args.mode,
        on_result=report,
    )
    for label, scheme in scores["chosen"].items():
        print(
            f"{label}: {scheme}, validation {scores['val'][label][scheme]['accuracy']:.4f}, "
            f"test {scores['test'][label]['accuracy']:.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
