"""VGG beyond its training classes: the paper's Appendix B in miniature (notebook 09).

The paper used its ImageNet networks as fixed feature extractors on other data sets: the
penultimate layer's activations, computed densely over several scales and for the mirror image,
averaged, L2-normalised, and a linear SVM trained on the target set, the network frozen. Here:

* :func:`layer_features`: one view of any named layer (``pool1`` .. ``pool5``, ``fc6``, ``fc7``,
  the names of :func:`vggedu.inspection.layer_names`), a feature map averaged over its positions;
* :func:`descriptor`: the paper's descriptor, the layer computed densely (the fully convolutional
  network of :mod:`vggedu.evaluation`) at each test size and for the mirror image, averaged over
  positions, sizes and mirrors, then L2-normalised;
* :func:`linear_probe`: a linear SVM (scikit-learn's ``LinearSVC``, the paper's classifier) on
  frozen features, its regularisation ``C`` chosen on a validation part;
* :func:`class_subset` and :func:`labelled_subset`: a source and a target half of CIFAR-10's
  classes (:data:`SOURCE_CLASSES`, :data:`TARGET_CLASSES`), and a few labelled images per class;
* ``python -m vggedu.transfer``: trains the source network, the classroom recipe on the source half
  only (fp32, a fixed number of epochs), and writes it as a shipped model file with its run card::

    python -m vggedu.transfer --data-root data --checkpoint runs/source.pt --out vggedu/weights/source-half.pt

Introduced in notebook 09.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .classroom import export_classroom_model
from .data import CIFAR10Split, channel_stats, load_splits
from .evaluation import fully_convolutional, resize
from .inspection import activations, layer_names
from .models import VGG
from .runs import train
from .training import PRESETS, TrainConfig, split_validation

__all__ = [
    "TRANSFER_LAYERS",
    "SOURCE_CLASSES",
    "TARGET_CLASSES",
    "layer_features",
    "descriptor",
    "linear_probe",
    "class_subset",
    "labelled_subset",
    "labelled_index",
    "main",
]

TRANSFER_LAYERS = ("pool1", "pool2", "pool3", "pool4", "pool5", "fc6", "fc7")
# Each half mixes vehicles and animals, so every target class has a relative among the sources
# (dog: cat; horse: deer; truck: automobile; ship: airplane; frog: bird, loosely), as VOC's and
# Caltech's classes had among ImageNet's.
SOURCE_CLASSES = ("airplane", "automobile", "bird", "cat", "deer")
TARGET_CLASSES = ("dog", "frog", "horse", "ship", "truck")


def _check_layer(model: VGG, layer: str) -> str:
    names = layer_names(model)
    if layer not in names:
        raise KeyError(f"no layer {layer!r} in this model; use one of {', '.join(n for n in names if n != 'fc8')}")
    return names[layer]


@torch.no_grad()
def layer_features(model: VGG, x: torch.Tensor, layer: str) -> torch.Tensor:
    """The output of ``layer`` for the images ``x`` (one view, as given), (N, D): a map is averaged over
    its positions (global average pooling), a vector (fc6, fc7) is returned as it is."""
    _check_layer(model, layer)
    out = activations(model, x, [layer])[layer]
    return out.mean((2, 3)) if out.dim() == 4 else out


@torch.no_grad()
def descriptor(
    model: VGG, x: torch.Tensor, layer: str = "fc7", *, sizes: Sequence[int] = (32, 64), flip: bool = True
) -> torch.Tensor:
    """The paper's descriptor (Appendix B) of the images ``x``, (N, D), L2-normalised.

    ``layer`` of the fully convolutional network (the same weights, :func:`vggedu.evaluation.
    fully_convolutional`) at each size in ``sizes``, and for the mirror image with ``flip``; every
    map averaged over its positions, then over sizes and mirrors, then scaled to unit length. At one
    size equal to the training size and without the mirror it is :func:`layer_features`, normalised.
    """
    if not sizes:
        raise ValueError("sizes must name at least one test size, e.g. (32, 64)")
    path = _check_layer(model, layer)
    fcn = fully_convolutional(model).eval()
    module = dict(fcn.named_modules())[path]  # the converted network keeps every module's path
    kept: list[torch.Tensor] = []
    hook = module.register_forward_hook(lambda _m, _i, output: kept.append(output.mean((2, 3))))
    try:
        for q in sizes:
            image = resize(x, q)
            for view in (image, image.flip(3)) if flip else (image,):
                fcn(view)
    finally:
        hook.remove()
    return F.normalize(torch.stack(kept).mean(0), dim=1)


def linear_probe(
    train_features: torch.Tensor | np.ndarray,
    train_labels: torch.Tensor | np.ndarray,
    val_features: torch.Tensor | np.ndarray,
    val_labels: torch.Tensor | np.ndarray,
    *,
    cs: Sequence[float] = (0.01, 0.1, 1.0, 10.0),
    seed: int = 0,
) -> dict:
    """A linear SVM on frozen features, one per ``C`` in ``cs``, the best kept by validation accuracy.

    Returns ``{"classifier", "c", "val_accuracy", "val_by_c"}``; the classifier (scikit-learn's
    ``LinearSVC``, one-vs-rest, as the paper's) predicts with ``.predict(features)``. The test
    images are not touched here: score the chosen classifier on them once, afterwards.
    """
    from sklearn.svm import LinearSVC  # scikit-learn: a well-kept linear SVM, on Colab too

    arrays = [
        np.asarray(a.cpu() if isinstance(a, torch.Tensor) else a)
        for a in (train_features, train_labels, val_features, val_labels)
    ]
    x_train, y_train, x_val, y_val = arrays
    if len(x_train) != len(y_train) or len(x_val) != len(y_val):
        raise ValueError("each set of features needs one label per row")
    if len(np.unique(y_train)) < 2:
        raise ValueError("the training labels hold one class: a classifier needs at least two")
    if not cs:
        raise ValueError("cs must hold at least one value of C, e.g. (0.1, 1.0)")
    best, by_c = None, {}
    for c in cs:
        classifier = LinearSVC(C=c, random_state=seed, max_iter=10_000).fit(x_train, y_train)
        by_c[c] = float((classifier.predict(x_val) == y_val).mean())
        if best is None or by_c[c] > by_c[best[0]]:  # the first of equals: the strongest regularisation
            best = (c, classifier)
    return {"classifier": best[1], "c": best[0], "val_accuracy": by_c[best[0]], "val_by_c": by_c}


def class_subset(split: CIFAR10Split, classes: Sequence[str]) -> CIFAR10Split:
    """The images of ``classes`` only, relabelled 0, 1, ... in the order given."""
    unknown = [c for c in classes if c not in split.classes]
    if unknown or not classes:
        raise ValueError(f"classes must be some of {', '.join(split.classes)}; got {list(classes)}")
    old = torch.tensor([split.classes.index(c) for c in classes])
    keep = torch.isin(split.labels, old)
    relabel = torch.full((len(split.classes),), -1, dtype=torch.long)
    relabel[old] = torch.arange(len(classes))
    return CIFAR10Split(split.images[keep], relabel[split.labels[keep]], tuple(classes), split.source)


def labelled_index(split: CIFAR10Split, per_class: int, *, seed: int) -> torch.Tensor:
    """The sorted indices of ``per_class`` images of every class, drawn without replacement and fixed by
    ``seed``: which images a draw of a small labelled target set takes."""
    generator = torch.Generator().manual_seed(seed)
    picks = []
    for k in range(len(split.classes)):
        index = torch.nonzero(split.labels == k).flatten()
        if len(index) < per_class:
            raise ValueError(f"class {split.classes[k]!r} has {len(index)} images, fewer than per_class={per_class}")
        picks.append(index[torch.randperm(len(index), generator=generator)[:per_class]])
    return torch.cat(picks).sort().values


def labelled_subset(split: CIFAR10Split, per_class: int, *, seed: int) -> CIFAR10Split:
    """``per_class`` images of every class, drawn without replacement and fixed by ``seed`` (a draw of the
    few labelled images a small target task has; :func:`labelled_index` says which)."""
    return split.take(labelled_index(split, per_class, seed=seed))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vggedu.transfer",
        description="Train notebook 09's source network (the classroom recipe on the source half of CIFAR-10's "
        f"classes: {', '.join(SOURCE_CLASSES)}) and write it as a shipped model file.",
    )
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--no-verify", action="store_true")
    parser.add_argument("--data-label")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--epochs", type=int, default=13, help="the classroom model's length on 2 CPU cores")
    parser.add_argument("--val-size", type=int, default=2500, help="source images held out (500 per class)")
    parser.add_argument("--checkpoint", type=Path, required=True, help="the run's checkpoint (resumed if there)")
    parser.add_argument("--out", type=Path, required=True, help="the model file to write")
    parser.add_argument("--mode", default="CPU, source half (fp32)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    train_split, test_split = load_splits(args.data_root, verify=not args.no_verify, label=args.data_label)
    source, source_test = class_subset(train_split, SOURCE_CLASSES), class_subset(test_split, SOURCE_CLASSES)
    config = TrainConfig(
        **dict(PRESETS["cpu"], time_budget=0.0, epochs=args.epochs, val_size=args.val_size, mixed_precision=False)
    )
    result = train(
        config,
        source,
        source_test,
        device=args.device,
        checkpoint=args.checkpoint,
        resume=True,
        mode=args.mode,
        progress=False,
    )
    fit, _ = split_validation(source, config)
    mean, std = channel_stats(fit.images)
    summary = {
        "val_accuracy": result.val_accuracy,
        "test_accuracy": result.test_accuracy,
        "test_accuracy_tta": result.test_accuracy_tta,
        "history": result.history,
        "card": result.card,
    }
    path = export_classroom_model(args.checkpoint, summary, mean, std, path=args.out)
    print(
        f"source network ({', '.join(SOURCE_CLASSES)}): validation {result.val_accuracy:.4f}, test (source half, "
        f"once) {result.test_accuracy:.4f}; written to {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
