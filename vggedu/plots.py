"""Figures for the notebooks. Each function returns a matplotlib Figure and never calls ``plt.show()``.

Introduced in notebooks 04 and 05.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

__all__ = ["image_grid", "plot_history", "confusion_matrix", "plot_confusion", "to_rgb"]


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) or float in [0, 1] -> float (N, H, W, 3) for ``imshow``."""
    x = images.detach().cpu()
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float().clamp(0, 1)
    return x.permute(0, 2, 3, 1)


def image_grid(
    images: torch.Tensor,
    titles: Sequence[str] | None = None,
    *,
    columns: int = 10,
    size: float = 1.1,
    row_labels: Sequence[str] | None = None,
    title: str = "",
):
    """Show images (N, 3, H, W) in a grid: a title over each (optional), a label per row, a figure title."""
    import matplotlib.pyplot as plt

    rows = -(-len(images) // columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(columns * size, rows * size * (1.25 if titles else 1)), squeeze=False
    )
    pictures = to_rgb(images)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        if i < len(images):
            ax.imshow(pictures[i].numpy(), interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=7)
        if row_labels is not None and i % columns == 0 and i // columns < len(row_labels):
            ax.set_ylabel(row_labels[i // columns], rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
        # Keep the first row's titles clear of the figure title: reserve its height at the top.
        fig.tight_layout(pad=0.3, rect=(0, 0, 1, 1 - 0.32 / fig.get_figheight()))
    else:
        fig.tight_layout(pad=0.3)
    return fig


def _loss_label(smoothing: float | None) -> str:
    if smoothing is None:
        return "train loss (as optimised)"
    return f"train loss (label-smoothed {smoothing:g})" if smoothing else "train loss"


def plot_history(runs: Mapping[str, object], *, label_smoothing: float | None = None, title: str = ""):
    """Learning curves, one colour per run: accuracy (left) and loss (right) against epoch.

    ``runs`` maps a name to a :class:`~vggedu.training.TrainResult` or to its ``history`` (a
    list of rows). Accuracy is the validation split's, the basis for choices; a test curve,
    where a run has one, is dashed and labelled as never used for a choice. The training loss
    is the one optimised: its label says when it was label-smoothed (read from a result's run
    card, or ``label_smoothing`` for bare histories), since such a loss is not comparable with
    the plain cross-entropy of the validation loss beside it.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, (name, run) in enumerate(runs.items()):
        history = getattr(run, "history", run)
        smoothing = run.card["config"]["label_smoothing"] if hasattr(run, "card") else label_smoothing
        colour = f"C{i % 10}"
        epochs = [row["epoch"] for row in history]

        def curve(ax, key, label, style="o-", scale=1.0, history=history, epochs=epochs, colour=colour, name=name):
            if history and key in history[0]:
                values = [scale * row[key] for row in history]
                ax.plot(epochs, values, style, ms=3, color=colour, label=f"{name}: {label}")

        curve(ax_acc, "val_accuracy", "validation", scale=100)
        curve(ax_acc, "test_accuracy", "test (curve only, no choices)", style="x--", scale=100)
        if history and "val_accuracy" not in history[0] and "test_accuracy" not in history[0]:
            curve(ax_acc, "train_accuracy", "training (augmented)", scale=100)
        curve(ax_loss, "train_loss", _loss_label(smoothing))
        curve(ax_loss, "val_loss", "validation loss (plain cross-entropy)", style="s--")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    for ax in (ax_acc, ax_loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts (num_classes, num_classes): row = true class, column = predicted class."""
    index = labels.long() * num_classes + predictions.long()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def plot_confusion(matrix: torch.Tensor, classes: Sequence[str], *, title: str = ""):
    """A confusion matrix as an image, row-normalised: each true class's row sums to 100 %.

    The numbers in the cells and the colour bar are the same quantity, in percent.
    """
    import matplotlib.pyplot as plt

    percent = (100 * matrix.float() / matrix.sum(1, keepdim=True).clamp(min=1)).numpy()
    fig, ax = plt.subplots(figsize=(6, 5.2))
    image = ax.imshow(percent, cmap="Blues", vmin=0, vmax=100)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title or "Confusion matrix")
    for i in range(len(classes)):
        for j in range(len(classes)):
            if percent[i, j] >= 1:
                ax.text(
                    j,
                    i,
                    f"{percent[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if percent[i, j] > 50 else "black",
                )
    bar = fig.colorbar(image, ax=ax, fraction=0.046)
    bar.set_label("% of the true class (each row sums to 100)", fontsize=8)
    fig.tight_layout()
    return fig
