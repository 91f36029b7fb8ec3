"""Notebook 09's study: what a network trained on five CIFAR-10 classes gives five others.

The source network (``vggedu/weights/source-half.pt``, :mod:`vggedu.transfer`) saw only
:data:`~vggedu.transfer.SOURCE_CLASSES`. On the target half (:data:`~vggedu.transfer.TARGET_CLASSES`):

* a **validation part** (:data:`VAL_PER_CLASS` images per class of the training set, stratified) is held out
  first, so that no labelled draw ever contains a validation image; every choice (the SVM's ``C``,
  the learning rate of fine-tuning and of training from scratch) is made on it;
* from the rest, :data:`DRAWS` draws of 10, 100 and 1,000 labelled images per class
  (:data:`LABELS_PER_CLASS`);
* for each draw: a linear SVM on the frozen features of every layer (:data:`~vggedu.transfer.TRANSFER_LAYERS`),
  from one centre view and from the paper's descriptor (:data:`VIEWS`); fine-tuning the whole source
  network, and training the same network from scratch, for the same number of steps
  (:data:`TRAIN_STEPS`: the same time, the network being the same);
* the target test images (5,000) once per final model.

:func:`imagenet_probe` runs the same probe with torchvision's ImageNet VGG-16 where its weights are at hand.

Everything goes to one JSON file, rewritten after every stage, so a stopped study resumes::

    python -m vggedu.transfer_study --data-root data --out vggedu/results/transfer-cpu.json --part probe
    python -m vggedu.transfer_study --data-root data --out runs/transfer-train.json --part train

Introduced in notebook 09.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from .classroom import WEIGHTS, load_classroom_model
from .data import CIFAR10Split, load_splits, stratified_split
from .devices import device_name, pick_device
from .evaluation import fully_convolutional, resize
from .inspection import layer_names
from .loaders import DeviceLoader
from .models import VGG
from .training import TrainConfig, build_model, evaluate, make_optimizer, make_scheduler
from .transfer import TARGET_CLASSES, TRANSFER_LAYERS, class_subset, labelled_index, labelled_subset, linear_probe

__all__ = [
    "SOURCE_MODEL",
    "LABELS_PER_CLASS",
    "DRAWS",
    "VAL_PER_CLASS",
    "VIEWS",
    "TRAIN_BATCH",
    "TRAIN_STEPS",
    "LEARNING_RATES",
    "target_parts",
    "all_layer_features",
    "train_on_labels",
    "imagenet_probe",
    "run_probes",
    "run_training",
    "main",
]

SOURCE_MODEL = WEIGHTS / "source-half.pt"
LABELS_PER_CLASS = (10, 100, 1000)
DRAWS = (0, 1, 2)
VAL_PER_CLASS = 500
# One view (the 32x32 image as it is) against the paper's descriptor: dense at two sizes, both multiples of
# the network's stride of 32 (so the score map covers every pixel), and the mirror image.
VIEWS = {"centre": dict(sizes=(32,), flip=False), "descriptor": dict(sizes=(32, 64), flip=True)}
TRAIN_STEPS = 200  # optimisation steps of fine-tuning and of training from scratch, at every number of labels
TRAIN_BATCH = 256  # images per step, or all the labelled images where they are fewer
LEARNING_RATES = (0.01, 0.1)  # the peak of the one-cycle schedule, chosen on the validation part with draw 0


def target_parts(
    train_split: CIFAR10Split, *, val_per_class: int = VAL_PER_CLASS, seed: int = 0
) -> tuple[CIFAR10Split, CIFAR10Split]:
    """The target half of the training set as ``(pool, validation)``: ``val_per_class`` images per class
    held out (stratified, fixed by ``seed``), the labelled draws to be taken from the rest."""
    target = class_subset(train_split, TARGET_CLASSES)
    pool, val = stratified_split(target.labels, val_per_class * len(TARGET_CLASSES), seed=seed)
    return target.take(pool), target.take(val)


@torch.no_grad()
def all_layer_features(
    model: VGG,
    split: CIFAR10Split,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    layers: Sequence[str] = TRANSFER_LAYERS,
    sizes: Sequence[int] = (32,),
    flip: bool = False,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """L2-normalised features of every layer in ``layers`` for every image of ``split``, in ONE pass per view.

    Each layer of the fully convolutional network is averaged over its positions, then over the sizes and
    mirrors asked for, then scaled to unit length: :func:`vggedu.transfer.descriptor` for all layers at
    once (with ``sizes=(32,)`` and no flip, the one centre view, normalised). Returns ``{layer: (N, D)}``
    on the CPU.
    """
    model = model.to(device).eval()
    fcn = fully_convolutional(model).eval()
    modules = dict(fcn.named_modules())
    names = layer_names(model)
    kept: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    hooks = [
        modules[names[layer]].register_forward_hook(
            lambda _m, _i, out, layer=layer: kept[layer].append(out.mean((2, 3)))
        )
        for layer in layers
    ]
    views = len(sizes) * (2 if flip else 1)
    out: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    try:
        for x, _ in DeviceLoader(split, batch_size, train=False, device=device, mean=mean, std=std):
            for q in sizes:
                image = resize(x, q)
                for view in (image, image.flip(3)) if flip else (image,):
                    fcn(view)
            for layer in layers:
                stacked = torch.stack(kept[layer][-views:]).mean(0)
                out[layer].append(F.normalize(stacked, dim=1).cpu())
                kept[layer].clear()
    finally:
        for hook in hooks:
            hook.remove()
    return {layer: torch.cat(parts) for layer, parts in out.items()}


def train_on_labels(
    start: VGG,
    labelled: CIFAR10Split,
    val: CIFAR10Split,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    lr: float,
    steps: int = TRAIN_STEPS,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[VGG, dict]:
    """Train all of ``start`` (modified in place) on ``labelled`` for ``steps`` steps: the classroom recipe's
    optimiser (SGD, momentum 0.9, weight decay 5e-4), one-cycle to ``lr``, label smoothing 0.1, crops and
    flips, batches of ``min(TRAIN_BATCH, len(labelled))``. Returns the model and ``{"val_accuracy", "train_accuracy",
    "seconds", "epochs"}``: validation on ``val`` once, at the end, and the accuracy on the labelled images
    themselves (no augmentation), so that the regime shows (a training still learning, or one that memorised)."""
    config = TrainConfig(lr=lr, schedule="onecycle", label_smoothing=0.1, seed=seed)
    model = start.to(device).train()
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, steps, 1, total_steps=steps)
    loader = DeviceLoader(
        labelled, min(TRAIN_BATCH, len(labelled)), train=True, device=device, seed=seed, mean=mean, std=std
    )
    with torch.no_grad():  # warm up the kernels (eval mode: no weight or statistic changes), then time
        model.eval()(next(iter(loader))[0])
    model.train()
    started, step, epoch = time.perf_counter(), 0, 0
    while step < steps:
        loader.set_epoch(epoch)
        for x, y in loader:
            loss = F.cross_entropy(model(x), y, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step == steps:
                break
        epoch += 1
    seconds = time.perf_counter() - started
    if not torch.isfinite(loss):
        raise RuntimeError(f"training diverged at lr {lr} (loss {loss.item()}); try a lower learning rate")
    val_loader = DeviceLoader(val, 1000, train=False, device=device, mean=mean, std=std)
    fit_loader = DeviceLoader(labelled, 1000, train=False, device=device, mean=mean, std=std)
    return model, {
        "val_accuracy": evaluate(model, val_loader)["accuracy"],
        "train_accuracy": evaluate(model, fit_loader)["accuracy"],
        "seconds": seconds,
        "epochs": epoch,
    }


def _start(method: str, source: VGG, config: TrainConfig, seed: int) -> VGG:
    """The source network with a new last layer (fine-tuning), or the same network from a fresh start."""
    net = build_model(dataclasses.replace(config, seed=seed), num_classes=len(TARGET_CLASSES))
    if method == "fine-tune":
        net.load_state_dict(source.state_dict())
        torch.manual_seed(seed)
        net.classifier[6].reset_parameters()  # fc8 answered the source classes: the target needs its own
    return net


def imagenet_probe(
    model: VGG,
    labelled: CIFAR10Split,
    val: CIFAR10Split,
    test: CIFAR10Split,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    layers: Sequence[str] = ("pool5",),
    size: int = 224,
    device: torch.device | str = "cpu",
) -> dict[str, dict]:
    """The probe with an ImageNet VGG (e.g. :func:`vggedu.inspection.load_imagenet_weights`): the CIFAR images
    upsampled to ``size`` (the network's training size, 224), one view, every layer in ``layers`` averaged
    over its positions and L2-normalised, a linear SVM with ``C`` chosen on ``val``, then ``test`` once.
    ``mean`` and ``std`` are the weights' own input standardisation (their ``transforms()``), in [0, 1]
    units. Returns ``{layer: {"c", "val_accuracy", "test_accuracy", "dims"}}``."""
    parts = {
        name: all_layer_features(model, part, mean, std, layers=layers, sizes=(size,), batch_size=50, device=device)
        for name, part in (("labelled", labelled), ("val", val), ("test", test))
    }
    out = {}
    for layer in layers:
        probe = linear_probe(parts["labelled"][layer], labelled.labels, parts["val"][layer], val.labels)
        predicted = probe["classifier"].predict(parts["test"][layer].numpy())
        out[layer] = {
            "c": probe["c"],
            "val_accuracy": probe["val_accuracy"],
            "test_accuracy": float((predicted == test.labels.numpy()).mean()),
            "dims": int(parts["val"][layer].shape[1]),
        }
    return out


def _save(results: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(out)


def _load(out: Path) -> dict:
    return json.loads(out.read_text()) if out.is_file() else {}


def run_probes(
    train_split,
    test_split,
    out: Path,
    *,
    device="cpu",
    draws=DRAWS,
    sizes=LABELS_PER_CLASS,
    val_per_class: int = VAL_PER_CLASS,
) -> dict:
    """Frozen features + linear SVM, every layer, both views, every number of labels and draw; resumable."""
    source, info = load_classroom_model(device, path=SOURCE_MODEL)
    pool, val = target_parts(train_split, val_per_class=val_per_class)
    test = class_subset(test_split, TARGET_CLASSES)
    results = _load(out)
    results.setdefault("probe", {})
    for view, how in VIEWS.items():
        keys = [f"{view}, {layer}, {n} per class, draw {d}" for layer in TRANSFER_LAYERS for n in sizes for d in draws]
        if all(k in results["probe"] for k in keys):
            continue
        started = time.perf_counter()
        feats = {
            name: all_layer_features(source, part, info["mean"], info["std"], device=device, **how)
            for name, part in (("pool", pool), ("val", val), ("test", test))
        }
        feature_seconds = time.perf_counter() - started
        for n in sizes:
            for d in draws:
                index = labelled_index(pool, n, seed=d)
                for layer in TRANSFER_LAYERS:
                    key = f"{view}, {layer}, {n} per class, draw {d}"
                    if key in results["probe"]:
                        continue
                    probe = linear_probe(
                        feats["pool"][layer][index], pool.labels[index], feats["val"][layer], val.labels
                    )
                    test_accuracy = float(
                        (probe["classifier"].predict(feats["test"][layer].numpy()) == test.labels.numpy()).mean()
                    )
                    results["probe"][key] = {
                        "view": view,
                        "layer": layer,
                        "per_class": n,
                        "draw": d,
                        "c": probe["c"],
                        "val_accuracy": probe["val_accuracy"],
                        "val_by_c": {str(c): a for c, a in probe["val_by_c"].items()},
                        "test_accuracy": test_accuracy,
                        "dims": int(feats["pool"][layer].shape[1]),
                    }
        results.setdefault("feature_seconds", {})[view] = feature_seconds
        results["card"] = _card(info, device, len(pool), len(val), len(test))
        _save(results, out)
    return results


def run_training(
    train_split,
    test_split,
    out: Path,
    *,
    device="cpu",
    draws=DRAWS,
    sizes=LABELS_PER_CLASS,
    steps=TRAIN_STEPS,
    val_per_class: int = VAL_PER_CLASS,
) -> dict:
    """Fine-tuning and training from scratch on the same labels for the same steps; the learning rate chosen
    on the validation part with the first draw, the test set once per final model; resumable."""
    source, info = load_classroom_model(device, path=SOURCE_MODEL)
    config = TrainConfig(**{**info["card"]["config"], "init_from": ""})
    pool, val = target_parts(train_split, val_per_class=val_per_class)
    test = class_subset(test_split, TARGET_CLASSES)
    test_loader = DeviceLoader(test, 1000, train=False, device=device, mean=info["mean"], std=info["std"])
    results = _load(out)
    results.setdefault("train", {})
    results["card"] = _card(info, device, len(pool), len(val), len(test))
    for method in ("fine-tune", "scratch"):
        for n in sizes:
            chosen = results.get("chosen_lr", {}).get(f"{method}, {n}")
            for d in draws:
                key = f"{method}, {n} per class, draw {d}"
                if key in results["train"]:
                    continue
                labelled = labelled_subset(pool, n, seed=d)
                lrs = LEARNING_RATES if chosen is None else (chosen,)
                tried = {}
                for lr in lrs:
                    model, row = train_on_labels(
                        _start(method, source, config, d),
                        labelled,
                        val,
                        info["mean"],
                        info["std"],
                        lr=lr,
                        steps=steps,
                        seed=d,
                        device=device,
                    )
                    tried[lr] = (model, row)
                best = max(tried, key=lambda lr: tried[lr][1]["val_accuracy"])  # the first of equals: the lower rate
                if chosen is None:
                    chosen = best
                    results.setdefault("chosen_lr", {})[f"{method}, {n}"] = best
                    results.setdefault("lr_trials", {})[f"{method}, {n}"] = {
                        str(lr): r["val_accuracy"] for lr, (_, r) in tried.items()
                    }
                model, row = tried[best]
                row.update(
                    method=method,
                    per_class=n,
                    draw=d,
                    lr=best,
                    steps=steps,
                    test_accuracy=evaluate(model, test_loader)["accuracy"],
                )
                results["train"][key] = row
                _save(results, out)
                print(
                    f"{key}: lr {best}, validation {row['val_accuracy']:.4f}, test {row['test_accuracy']:.4f}, "
                    f"{row['seconds']:.0f} s",
                    flush=True,
                )
    return results


def _card(info: dict, device, pool: int, val: int, test: int) -> dict:
    return {
        "device": device_name(pick_device(device)),
        "torch": torch.__version__,
        "data": info["card"]["data"],
        "source": f"{SOURCE_MODEL.name}: {info['card']['config']['model']}-BN width {info['card']['config']['width']}, "
        f"source validation {info['val_accuracy']:.4f}",
        "target_classes": list(TARGET_CLASSES),
        "pool_images": pool,
        "val_images": val,
        "test_images": test,
        "precision": "float32",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vggedu.transfer_study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--no-verify", action="store_true")
    parser.add_argument("--data-label")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--part", choices=["probe", "train"], required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    train_split, test_split = load_splits(args.data_root, verify=not args.no_verify, label=args.data_label)
    run = run_probes if args.part == "probe" else run_training
    run(train_split, test_split, args.out, device=pick_device(args.device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
