"""Figures for the notebooks. Each function returns a matplotlib Figure and never calls ``plt.show()``.

Introduced in notebooks 04 and 05; the slide figures (Table 1, receptive fields, activation
shapes) in notebooks 01-03, and :func:`save_figure` writes any of them at slide resolution.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

__all__ = [
    "image_grid",
    "plot_history",
    "confusion_matrix",
    "plot_confusion",
    "to_rgb",
    "plot_table_1",
    "plot_receptive_fields",
    "plot_activation_shapes",
    "save_figure",
]


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
    lines = max((t.count("\n") + 1 for t in titles), default=0) if titles is not None else 0
    title_height = lines * 8 / 72 * 1.4  # inches above each image for its title, at 8 pt
    # Constrained layout keeps every title clear of the image above it (tight_layout does not, with images).
    fig, axes = plt.subplots(
        rows,
        columns,
        figsize=(columns * size, rows * (size + title_height) + (0.35 if title else 0.0)),
        squeeze=False,
        layout="constrained",
    )
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.02, hspace=0.02)
    pictures = to_rgb(images)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        if i < len(images):
            ax.imshow(pictures[i].numpy(), interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=8)
        if row_labels is not None and i % columns == 0 and i // columns < len(row_labels):
            ax.set_ylabel(row_labels[i // columns], rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def _loss_label(smoothing: float | None) -> str:
    if smoothing is None:
        return "train loss (as optimised)"
    return f"train loss (label-smoothed {smoothing:g})" if smoothing else "train loss"


def plot_history(
    runs: Mapping[str, object], *, label_smoothing: float | None = None, train_accuracy: bool = False, title: str = ""
):
    """Learning curves, one colour per run: accuracy (left) and loss (right) against epoch.

    ``runs`` maps a name to a :class:`~vggedu.training.TrainResult` or to its ``history`` (a
    list of rows). Accuracy is the validation split's, the basis for choices; a test curve,
    where a run has one, is dashed and labelled as never used for a choice. The training loss
    is the one optimised: its label says when it was label-smoothed (read from a result's run
    card, or ``label_smoothing`` for bare histories), since such a loss is not comparable with
    the plain cross-entropy of the validation loss beside it. ``train_accuracy=True`` adds the accuracy
    on the augmented training images (dotted), to show the regime: how far training and validation are
    apart, and whether both are still rising.
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
        if train_accuracy or (history and "val_accuracy" not in history[0] and "test_accuracy" not in history[0]):
            curve(ax_acc, "train_accuracy", "training (augmented)", style="o:", scale=100)
        curve(ax_loss, "train_loss", _loss_label(smoothing))
        curve(ax_loss, "val_loss", "validation loss (plain cross-entropy)", style="s--")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    for ax in (ax_acc, ax_loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
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
                    fontsize=8,
                    color="white" if percent[i, j] > 50 else "black",
                )
    bar = fig.colorbar(image, ax=ax, fraction=0.046)
    bar.set_label("% of the true class (each row sums to 100)", fontsize=8)
    fig.tight_layout()
    return fig


# --- slide figures (notebooks 01-03): drawn from the package's own data -------------------------

_LAYER_COLOURS = {  # one colour per layer type, the same in every figure
    "conv3": "#4C72B0",
    "conv1": "#DD8452",
    "lrn": "#8172B3",
    "maxpool": "#C44E52",
    "fc": "#55A868",
    "soft-max": "#937860",
}


def _layer_kind(layer) -> str:
    if layer.kind == "conv":
        return "conv3" if layer.kernel_size == 3 else "conv1"
    return layer.kind


def plot_table_1(configs: Sequence[str] | None = None, *, num_classes: int = 1000):
    """The columns of the paper's Table 1 as a diagram, drawn from :data:`vggedu.VGG_CONFIGS`.

    One column per configuration, one box per layer from the input at the top to the soft-max at
    the bottom (``conv3-64``, ``maxpool``, ``FC-4096``, ...), coloured by layer type; the layers a
    column adds over the previous one are drawn with a bold edge, as the paper prints them in bold.
    Returns the figure; ``fig.axes[i].patches`` holds column i's boxes. Notebooks 01 and 03.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    from .configs import count_weight_layers, resolve_config

    configs = list(configs or ["A", "A-LRN", "B", "C", "D", "E"])
    columns = {name: list(resolve_config(name)) for name in configs}
    height = max(len(layers) for layers in columns.values()) + 4
    fig, axes = plt.subplots(1, len(configs), figsize=(1.7 * len(configs), 0.32 * height + 0.8), squeeze=False)
    previous: list[str] = []
    for ax, name in zip(axes[0], configs):
        labels = [str(layer) for layer in columns[name]]
        kinds = [_layer_kind(layer) for layer in columns[name]]
        labels += ["FC-4096", "FC-4096", f"FC-{num_classes}", "soft-max"]
        kinds += ["fc", "fc", "fc", "soft-max"]
        # Bold: layers that are new against the previous column, matched in order (a longest common subsequence).
        new = _added(previous, labels)
        for row, (label, kind) in enumerate(zip(labels, kinds)):
            y = height - row - 1
            ax.add_patch(
                Rectangle(
                    (0.05, y + 0.08),
                    0.9,
                    0.84,
                    facecolor=_LAYER_COLOURS[kind],
                    alpha=0.85,
                    edgecolor="black",
                    linewidth=2.2 if row in new else 0.4,
                )
            )
            ax.text(
                0.5,
                y + 0.5,
                label,
                ha="center",
                va="center",
                fontsize=8,
                color="white",
                fontweight="bold" if row in new else "normal",
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, height)
        ax.set_axis_off()
        ax.set_title(f"{name}\n{count_weight_layers(name)} weight layers", fontsize=8)
        previous = labels
    fig.legend(
        handles=[Patch(color=c, label=k) for k, c in _LAYER_COLOURS.items()],
        loc="lower center",
        ncol=len(_LAYER_COLOURS),
        fontsize=8,
        frameon=False,
    )
    fig.suptitle("Table 1: ConvNet configurations (input 224x224 RGB image at the top)", fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def _added(before: Sequence[str], after: Sequence[str]) -> set[int]:
    """Indices of ``after`` not in a longest common subsequence with ``before`` (the added layers)."""
    if not before:
        return set()
    n, m = len(before), len(after)
    best = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            best[i][j] = best[i + 1][j + 1] + 1 if before[i] == after[j] else max(best[i + 1][j], best[i][j + 1])
    kept, i, j = set(), 0, 0
    while i < n and j < m:
        if before[i] == after[j]:
            kept.add(j)
            i, j = i + 1, j + 1
        elif best[i + 1][j] >= best[i][j + 1]:
            i += 1
        else:
            j += 1
    return set(range(m)) - kept


def plot_receptive_fields(layers: int = 3, kernel_size: int = 3):
    """Stacked 3x3 convolutions seen from one output unit: its field grows 3 -> 5 -> 7 pixels.

    Left: the input grid with the field of one unit after 1, 2, ... ``layers`` convolutions
    (:func:`vggedu.analysis.stacked_receptive_field`). Right: weights per C->C channel pair of the
    stack against one large kernel with the same field (:func:`vggedu.analysis.stack_weights`),
    the paper's Section 2.3 argument. Returns the figure; the left axes holds one square per layer.
    Notebook 01.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from .analysis import stack_weights, stacked_receptive_field

    fields = [stacked_receptive_field(n, kernel_size) for n in range(1, layers + 1)]
    side = fields[-1] + 2
    colours = plt.get_cmap("viridis")([0.15 + 0.7 * i / max(layers - 1, 1) for i in range(layers)])
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.8), gridspec_kw={"width_ratios": [1, 1.1]})
    for k in range(side + 1):
        left.plot([0, side], [k, k], color="0.85", linewidth=0.6)
        left.plot([k, k], [0, side], color="0.85", linewidth=0.6)
    centre = side / 2
    for n, (field, colour) in reversed(list(enumerate(zip(fields, colours), start=1))):
        corner = centre - field / 2
        left.add_patch(
            Rectangle(
                (corner, corner),
                field,
                field,
                facecolor=colour,
                alpha=0.55,
                edgecolor=colour,
                linewidth=1.5,
                label=f"{n} layer{'s' if n > 1 else ''}: {field}x{field}",
            )
        )
    left.add_patch(Rectangle((centre - 0.5, centre - 0.5), 1, 1, facecolor="black"))
    left.set_xlim(0, side)
    left.set_ylim(0, side)
    left.set_aspect("equal")
    left.set_axis_off()
    left.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=layers, fontsize=8, frameon=False)
    left.set_title(f"field of one unit after stacked {kernel_size}x{kernel_size} convolutions", fontsize=8)
    stacked = [stack_weights(n, kernel_size, 1) for n in range(1, layers + 1)]
    single = [stack_weights(1, f, 1) for f in fields]
    x = range(1, layers + 1)
    right.bar([i - 0.2 for i in x], stacked, width=0.4, color=colours, label=f"stack of {kernel_size}x{kernel_size}")
    right.bar([i + 0.2 for i in x], single, width=0.4, color="0.6", label="one kernel, same field")
    for i, (a, b) in enumerate(zip(stacked, single), start=1):
        right.text(i - 0.2, a, f"{a}C²", ha="center", va="bottom", fontsize=8)
        right.text(i + 0.2, b, f"{b}C²", ha="center", va="bottom", fontsize=8)
    right.set_xticks(list(x), [f"{f}x{f}" for f in fields])
    right.set_xlabel("receptive field")
    right.set_ylabel("weights per C->C layer (units of C²)")
    right.legend(fontsize=8, frameon=False)
    right.set_title("same field, fewer weights, more ReLUs (Section 2.3)", fontsize=8)
    fig.tight_layout()
    return fig


def plot_activation_shapes(config: str = "D", *, input_size: int = 224):
    """The shape of the activations through a VGG column: spatial size shrinking, channels growing.

    One bar per convolution and pooling layer from :func:`vggedu.analysis.layer_stats` (channels,
    left axis) and the side of its map (line, right axis, log scale). Returns the figure; its first
    axes holds one bar per layer. Notebooks 02 and 03.
    """
    import matplotlib.pyplot as plt

    from .analysis import layer_stats
    from .configs import config_name

    rows = [r for r in layer_stats(config, input_size=input_size) if r.kind != "fc"]
    fig, ax = plt.subplots(figsize=(max(6, 0.36 * len(rows)), 3.6))
    colours = [
        _LAYER_COLOURS[
            "maxpool"
            if r.kind == "maxpool"
            else "lrn"
            if r.kind == "lrn"
            else "conv3"
            if r.kernel_size == 3
            else "conv1"
        ]
        for r in rows
    ]
    ax.bar(range(len(rows)), [r.out_channels for r in rows], color=colours)
    ax.set_xticks(range(len(rows)), [r.name for r in rows], rotation=90, fontsize=8)
    ax.set_ylabel("channels (bars)")
    ax.set_xlabel("layer, input to output")
    twin = ax.twinx()
    twin.plot(range(len(rows)), [r.output_size for r in rows], "k.-")
    twin.set_yscale("log", base=2)
    twin.set_ylabel("map side in pixels (line, log scale)")
    for i, r in enumerate(rows):
        if r.kind == "maxpool":
            twin.annotate(
                f"{r.output_size}x{r.output_size}x{r.out_channels}",
                (i, r.output_size),
                textcoords="offset points",
                xytext=(0, 7),
                ha="center",
                fontsize=8,
                bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none", alpha=0.85),  # over bars
            )
    ax.set_title(
        f"VGG {config_name(config)} at {input_size}x{input_size}: the map shrinks, the channels grow", fontsize=9
    )
    fig.tight_layout()
    return fig


def save_figure(fig, path, *, dpi: int = 300):
    """Write ``fig`` for a slide: PNG at ``dpi`` (300 by default), or PDF/SVG by the file's suffix.

    Creates the folder; returns the path written.
    """
    from pathlib import Path

    path = Path(path)
    if path.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ValueError(f"save_figure writes .png, .pdf or .svg files, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", facecolor="white")
    return path
