"""VGG arithmetic without torch: receptive fields, parameters, multiply-accumulates, memory.

Every number the notebooks state about a configuration comes from here, and the
tests check it against the built model (``sum(p.numel())``) and against torchvision.

Vocabulary:

* **receptive field** r: the side of the input square that can influence one unit;
  **jump** j: the input-pixel distance between two neighbouring units; **start**:
  the input coordinate (pixel centres at 0, 1, 2, ...) of the centre of the first
  unit's receptive field. For a layer with kernel k, stride s, padding p:
  ``r' = r + (k-1) j``, ``j' = j s``, ``start' = start + ((k-1)/2 - p) j``.
* **MACs**: multiply-accumulate operations; one MAC is one multiply plus one add.
  **FLOPs** = 2 x MACs. torchvision's model table says "GFLOPS 15.47" for VGG-16:
  those are 15.47 G *MACs*. Biases, batch norm, ReLU and pooling are not counted.

Introduced in notebook 01 (receptive field, the 3x3 argument, MACs vs FLOPs).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields

from .configs import HEADS, ConfigLike, check_choice, check_width, paper_names, resolve_config, scaled_channels

__all__ = [
    "LayerStats",
    "layer_stats",
    "count_parameters",
    "count_macs",
    "count_dense_macs",
    "count_flops",
    "activation_memory",
    "stacked_receptive_field",
    "stack_weights",
    "format_table",
]


@dataclass(frozen=True)
class LayerStats:
    """One layer of a configuration at a given input size (per image)."""

    name: str  # conv1_1, lrn, pool1, ..., fc6, fc7, fc8 (Caffe's names; vggedu.configs.paper_names)
    kind: str  # "conv", "lrn", "maxpool", "fc"
    kernel_size: int  # 0 for LRN and FC
    in_channels: int  # features for FC
    out_channels: int  # features for FC
    output_size: int  # side of the square output map; 1 for FC
    receptive_field: int | None  # input pixels seen by one unit; None for FC (the whole image)
    jump: int | None  # input pixels between neighbouring units; None for FC
    start: float | None  # input coordinate of the centre of the first unit's field
    params: int  # weights + biases (+ batch-norm scale and shift)
    macs: int  # multiply-accumulates for one image
    activations: int  # elements written by this layer for one image (batch norm adds a copy)

    @property
    def flops(self) -> int:
        return 2 * self.macs


def layer_stats(
    config: ConfigLike,
    *,
    input_size: int = 224,
    in_channels: int = 3,
    batch_norm: bool = False,
    width: float = 1.0,
    head: str = "imagenet",
    num_classes: int = 1000,
) -> list[LayerStats]:
    """Per-layer receptive field, parameters, MACs and activations, as built by :func:`vggedu.vgg`."""
    layers = resolve_config(config)
    check_width(width)
    check_choice("head", head, HEADS)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    pools = sum(layer.kind == "maxpool" for layer in layers)
    if not isinstance(input_size, int) or input_size < 2**pools:
        raise ValueError(
            f"input_size must be an integer of at least {2**pools} "
            f"(the network halves it {pools} times), got {input_size!r}"
        )

    rows: list[LayerStats] = []
    size, channels, rf, jump, start = input_size, in_channels, 1, 1, 0.0
    for layer, name in zip(layers, paper_names(layer.kind for layer in layers)):
        if layer.kind == "conv":
            k = layer.kernel_size
            out = scaled_channels(layer.out_channels, width)
            rf += (k - 1) * jump  # padding k//2 keeps the centre in place: start unchanged
            params = k * k * channels * out + out + (2 * out if batch_norm else 0)
            macs = size * size * out * channels * k * k
            acts = size * size * out * (2 if batch_norm else 1)
            rows.append(LayerStats(name, "conv", k, channels, out, size, rf, jump, start, params, macs, acts))
            channels = out
        elif layer.kind == "lrn":
            rows.append(
                LayerStats(name, "lrn", 0, channels, channels, size, rf, jump, start, 0, 0, size * size * channels)
            )
        else:
            rf += jump
            start += 0.5 * jump
            jump *= 2
            size //= 2
            rows.append(
                LayerStats(
                    name,
                    "maxpool",
                    2,
                    channels,
                    channels,
                    size,
                    rf,
                    jump,
                    start,
                    0,
                    0,
                    size * size * channels,
                )
            )

    if head == "imagenet":
        dims = [channels * 7 * 7, 4096, 4096, num_classes]
    else:
        dims = [channels, channels, channels, num_classes]
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        rows.append(
            LayerStats(
                f"fc{6 + i}", "fc", 0, d_in, d_out, 1, None, None, None, d_in * d_out + d_out, d_in * d_out, d_out
            )
        )
    return rows


def count_parameters(config: ConfigLike, **kwargs) -> int:
    """Total learnable parameters; equals ``sum(p.numel() for p in vgg(config, **kwargs).parameters())``."""
    return sum(row.params for row in layer_stats(config, **kwargs))


def count_macs(config: ConfigLike, **kwargs) -> int:
    """Multiply-accumulates for one image (convolutions and FC layers)."""
    return sum(row.macs for row in layer_stats(config, **kwargs))


def count_dense_macs(config: ConfigLike, input_size: int, **kwargs) -> int:
    """Multiply-accumulates of dense evaluation (Section 3.2) of one ``input_size`` x ``input_size`` image.

    The convolutions run once over the whole image; the classifier, rewritten as convolutions, runs at
    every position of the score map: ``(input_size // 32 - 6) ** 2`` positions for the ImageNet head
    (fc6 a 7x7 window on pool5), ``(input_size // 32) ** 2`` for the CIFAR head. At the training size
    (224, or 32 for the CIFAR head) this is :func:`count_macs`. The mirror image, if also scored,
    doubles it. Introduced in notebook 06.
    """
    rows = layer_stats(config, input_size=input_size, **kwargs)
    pool5 = [row for row in rows if row.kind == "maxpool"][-1].output_size
    window = 7 if kwargs.get("head", "imagenet") == "imagenet" else 1
    positions = (pool5 - window + 1) ** 2
    if positions < 1:
        raise ValueError(f"a {input_size}x{input_size} image is smaller than one window of the classifier")
    return sum(row.macs for row in rows if row.kind != "fc") + positions * sum(
        row.macs for row in rows if row.kind == "fc"
    )


def count_flops(config: ConfigLike, **kwargs) -> int:
    """Floating-point operations for one image: 2 x :func:`count_macs`."""
    return 2 * count_macs(config, **kwargs)


def activation_memory(config: ConfigLike, *, batch_size: int = 1, bytes_per_element: int = 4, **kwargs) -> int:
    """Bytes of the layer outputs one forward pass writes (float32 by default; ReLU in place)."""
    return batch_size * bytes_per_element * sum(row.activations for row in layer_stats(config, **kwargs))


def stacked_receptive_field(n: int, kernel_size: int = 3) -> int:
    """Receptive field of ``n`` stacked stride-1 convolutions: ``1 + n (k - 1)``; 3x3 gives 2n+1."""
    if n < 0 or kernel_size < 1:
        raise ValueError("n must be >= 0 and kernel_size >= 1")
    return 1 + n * (kernel_size - 1)


def stack_weights(n: int, kernel_size: int, channels: int) -> int:
    """Weights (no biases) of ``n`` stacked k x k convolutions with C channels in and out: ``n k^2 C^2``."""
    return n * kernel_size**2 * channels**2


def format_table(rows: Iterable[object], columns: Sequence[str] | None = None) -> str:
    """Render dataclasses or dicts as a fixed-width text table (integers with thousands separators)."""
    rows = list(rows)
    as_dicts = [row if isinstance(row, dict) else {f.name: getattr(row, f.name) for f in fields(row)} for row in rows]
    if columns is None:
        columns = list(as_dicts[0]) if as_dicts else []

    def cell(value: object) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return str(value)
        if isinstance(value, int):
            return f"{value:,}"
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)

    body = [[cell(d.get(c)) for c in columns] for d in as_dicts]
    widths = [max([len(c)] + [len(r[i]) for r in body]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in body]
    return "\n".join(lines)
