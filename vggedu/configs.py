"""The paper's Table 1 as data: every column, in the paper's own notation.

Simonyan & Zisserman (2014), Section 2.2 and Table 1. Each configuration is a
tuple of :class:`Layer` objects, written in the table's notation:

* ``"conv3-64"``  a 3x3 convolution with 64 output channels (stride 1, padding 1);
* ``"conv1-256"`` a 1x1 convolution (configuration C only);
* ``"LRN"``       local response normalisation (configuration A-LRN only);
* ``"maxpool"``   2x2 max pooling with stride 2.

The three fully connected layers (FC-4096, FC-4096, FC-1000) are common to
every column; they belong to the head (see :mod:`vggedu.models`).

torchvision writes the same table as lists of ints and ``"M"``; that language
cannot say a 1x1 convolution or an LRN layer, so columns C and A-LRN are
missing there. Introduced in notebook 03.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

__all__ = [
    "Layer",
    "VGG_CONFIGS",
    "ConfigError",
    "ConfigLike",
    "parse_layer",
    "resolve_config",
    "config_name",
    "count_weight_layers",
    "scaled_channels",
    "render_table_1",
    "HEADS",
    "DERIVED_CONFIGS",
    "paper_names",
]

LayerKind = Literal["conv", "maxpool", "lrn"]


@dataclass(frozen=True)
class Layer:
    """One row of Table 1: a convolution, a max-pool or an LRN layer."""

    kind: LayerKind
    kernel_size: int = 0  # convolutions: 3 or 1; pooling: 2; LRN: 0 (no kernel)
    out_channels: int = 0  # convolutions only

    def __str__(self) -> str:
        if self.kind == "conv":
            return f"conv{self.kernel_size}-{self.out_channels}"
        return "maxpool" if self.kind == "maxpool" else "LRN"

    def __repr__(self) -> str:
        return f"Layer({str(self)!r})"


_CONV = re.compile(r"^conv(\d+)-(\d+)$")


def parse_layer(text: str | Layer) -> Layer:
    """Parse one entry of Table 1 (``"conv3-64"``, ``"conv1-512"``, ``"maxpool"``, ``"LRN"``)."""
    if isinstance(text, Layer):
        return text
    if not isinstance(text, str):
        raise ConfigError(
            f"cannot read layer {text!r}: write layers as in the paper's Table 1, "
            "e.g. 'conv3-64', 'conv1-256', 'maxpool' or 'LRN'"
        )
    t = text.strip()
    if t.lower() in ("maxpool", "m"):
        return Layer("maxpool", kernel_size=2)
    if t.lower() == "lrn":
        return Layer("lrn")
    m = _CONV.match(t.lower())
    if m and int(m.group(1)) % 2 == 1 and int(m.group(2)) > 0:
        return Layer("conv", kernel_size=int(m.group(1)), out_channels=int(m.group(2)))
    raise ConfigError(
        f"cannot read layer {text!r}: write layers as in the paper's Table 1, "
        "e.g. 'conv3-64' (odd kernel size, positive channels), 'conv1-256', 'maxpool' or 'LRN'"
    )


def _column(text: str) -> tuple[Layer, ...]:
    return tuple(parse_layer(t) for t in text.split())


_B1, _B2 = "conv3-64 conv3-64 maxpool", "conv3-128 conv3-128 maxpool"
# Table 1, column by column, top to bottom.
_TABLE_1: dict[str, tuple[Layer, ...]] = {
    "A": _column(
        "conv3-64 maxpool conv3-128 maxpool conv3-256 conv3-256 maxpool "
        "conv3-512 conv3-512 maxpool conv3-512 conv3-512 maxpool"
    ),
    "A-LRN": _column(
        "conv3-64 LRN maxpool conv3-128 maxpool conv3-256 conv3-256 maxpool "
        "conv3-512 conv3-512 maxpool conv3-512 conv3-512 maxpool"
    ),
    "B": _column(f"{_B1} {_B2} conv3-256 conv3-256 maxpool conv3-512 conv3-512 maxpool conv3-512 conv3-512 maxpool"),
    "C": _column(
        f"{_B1} {_B2} conv3-256 conv3-256 conv1-256 maxpool "
        "conv3-512 conv3-512 conv1-512 maxpool conv3-512 conv3-512 conv1-512 maxpool"
    ),
    "D": _column(
        f"{_B1} {_B2} conv3-256 conv3-256 conv3-256 maxpool "
        "conv3-512 conv3-512 conv3-512 maxpool conv3-512 conv3-512 conv3-512 maxpool"
    ),
    "E": _column(
        f"{_B1} {_B2} conv3-256 conv3-256 conv3-256 conv3-256 maxpool "
        "conv3-512 conv3-512 conv3-512 conv3-512 maxpool "
        "conv3-512 conv3-512 conv3-512 conv3-512 maxpool"
    ),
}

# Section 4.1: "we also compared the net B with a shallow net with five 5x5 conv. layers, which was derived
# from B by replacing each pair of 3x3 conv. layers with a single 5x5 conv. layer (which has the same
# receptive field as explained in Sect. 2.3)". Not a column of Table 1, so kept apart from it.
_DERIVED: dict[str, tuple[Layer, ...]] = {
    "B-5x5": _column("conv5-64 maxpool conv5-128 maxpool conv5-256 maxpool conv5-512 maxpool conv5-512 maxpool"),
}

# Depths (weight layers, as the classic CIFAR-10 VGG recipe keys them) and torchvision's names.
_ALIASES: dict[object, str] = {
    11: "A",
    13: "B",
    16: "D",
    19: "E",
    "vgg11": "A",
    "vgg13": "B",
    "vgg16": "D",
    "vgg19": "E",
}


class ConfigError(ValueError, KeyError):
    """An unknown configuration name or an unreadable layer."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def _valid_names() -> str:
    aliases = ", ".join(repr(k) for k in _ALIASES)
    derived = ", ".join(repr(k) for k in _DERIVED)
    return f"{', '.join(repr(k) for k in _TABLE_1)} (aliases: {aliases}; derived from Table 1: {derived})"


def config_name(config: object) -> str:
    """The Table 1 letter for a name or alias: ``16 -> "D"``, ``"vgg19" -> "E"``, ``"a-lrn" -> "A-LRN"``."""
    if isinstance(config, bool):  # bool is an int: True must not mean anything
        config = repr(config)
    if isinstance(config, str):
        key = config.strip()
        for name in (*_TABLE_1, *_DERIVED):
            if key.upper() == name.upper():
                return name
        alias = _ALIASES.get(int(key) if key.isdigit() else key.lower())  # "16" from a command line
        if alias is not None:
            return alias
    elif isinstance(config, int) and config in _ALIASES:
        return _ALIASES[config]
    raise ConfigError(f"unknown VGG configuration {config!r}; choose one of {_valid_names()}")


class _Configs(Mapping):
    """Read-only view of Table 1: iterates the six columns, looks up aliases too."""

    def __getitem__(self, key: object) -> tuple[Layer, ...]:
        name = config_name(key)
        if name not in _TABLE_1:
            raise ConfigError(f"{name!r} is not a column of Table 1; it is in DERIVED_CONFIGS")
        return _TABLE_1[name]

    def __iter__(self) -> Iterator[str]:
        return iter(_TABLE_1)

    def __len__(self) -> int:
        return len(_TABLE_1)

    def __contains__(self, key: object) -> bool:
        try:
            return config_name(key) in _TABLE_1
        except ConfigError:
            return False

    def __repr__(self) -> str:
        rows = ",\n".join(f"  {k!r}: ({' '.join(map(str, v))})" for k, v in _TABLE_1.items())
        return "VGG_CONFIGS{\n" + rows + "\n}"


VGG_CONFIGS: Mapping[object, tuple[Layer, ...]] = _Configs()
"""Table 1: ``VGG_CONFIGS["D"]``, ``VGG_CONFIGS[16]`` and ``VGG_CONFIGS["vgg16"]`` are the same column."""

DERIVED_CONFIGS: Mapping[str, tuple[Layer, ...]] = MappingProxyType(_DERIVED)
"""Networks the paper derives from a Table 1 column: ``"B-5x5"``, B with each pair of 3x3 layers as one 5x5.

:func:`resolve_config`, :func:`config_name` and the builders take these names too."""

ConfigLike = str | int | Sequence[str | Layer]


def resolve_config(config: ConfigLike) -> tuple[Layer, ...]:
    """A configuration as a tuple of layers, from a name, an alias or a custom list of layers."""
    if isinstance(config, (str, int)):
        name = config_name(config)
        return _DERIVED[name] if name in _DERIVED else _TABLE_1[name]
    if isinstance(config, Sequence) and len(config) > 0:
        layers = tuple(parse_layer(t) for t in config)
        if not any(layer.kind == "conv" for layer in layers):
            raise ConfigError("a configuration needs at least one convolution, e.g. ['conv3-64', 'maxpool']")
        return layers
    raise ConfigError(
        f"unknown VGG configuration {config!r}; choose one of {_valid_names()}, "
        "or pass a list of layers such as ['conv3-64', 'maxpool']"
    )


def count_weight_layers(config: ConfigLike) -> int:
    """Weight layers as the paper counts them: convolutions plus the three FC layers."""
    return sum(layer.kind == "conv" for layer in resolve_config(config)) + 3


HEADS: tuple[str, ...] = ("imagenet", "cifar")


def check_choice(what: str, value: object, choices: tuple[str, ...]) -> None:
    """Raise a ValueError naming the valid choices if ``value`` is not one of them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(map(repr, choices))}")


def check_width(width: float) -> None:
    """Raise a ValueError unless ``width`` is a positive, finite number."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not math.isfinite(width) or width <= 0:
        raise ValueError(f"width must be a positive number such as 1.0 or 0.25, got {width!r}")


def scaled_channels(channels: int, width: float) -> int:
    """Channels of a convolution after width scaling (rounded, at least 1)."""
    check_width(width)
    return max(1, round(channels * width))


def paper_names(kinds: Iterable[str]) -> list[str | None]:
    """The paper's name of each layer in a sequence of kinds (``"conv"``, ``"maxpool"``, ``"lrn"``, other).

    Blocks are counted by max-pools: ``convB_I`` is the I-th convolution of block B, ``poolB`` the
    block's max-pool, ``lrn`` an LRN layer; any other kind (batch norm, ReLU) gets None. The one
    walker behind :func:`vggedu.models.paper_layers`, :func:`vggedu.analysis.layer_stats` and
    :func:`vggedu.inspection.layer_names`.
    """
    names: list[str | None] = []
    block, index = 1, 0
    for kind in kinds:
        if kind == "conv":
            index += 1
            names.append(f"conv{block}_{index}")
        elif kind == "maxpool":
            names.append(f"pool{block}")
            block, index = block + 1, 0
        else:
            names.append("lrn" if kind == "lrn" else None)
    return names


def render_table_1(names: Sequence[object] | None = None) -> str:
    """Table 1 as text, one column per configuration, blocks separated by ``maxpool`` rows."""
    names = [config_name(n) for n in (names or list(_TABLE_1))]
    blocks: dict[str, list[list[str]]] = {}
    for name in names:
        current: list[str] = []
        blocks[name] = []
        for layer in _TABLE_1[name]:
            if layer.kind == "maxpool":
                blocks[name].append(current)
                current = []
            else:
                current.append(str(layer))
    width = 10
    lines = [" | ".join(n.center(width) for n in names)]
    lines.append(" | ".join(f"{count_weight_layers(n)} layers".center(width) for n in names))
    rule = "-+-".join("-" * width for _ in names)
    lines += [rule, "input (224 x 224 RGB image)".center(len(rule)), rule]
    for b in range(5):
        rows = max(len(blocks[n][b]) for n in names)
        for r in range(rows):
            cells = [blocks[n][b][r] if r < len(blocks[n][b]) else "" for n in names]
            lines.append(" | ".join(c.center(width) for c in cells))
        lines += [rule, "maxpool".center(len(rule)), rule]
    lines += [name.center(len(rule)) for name in ("FC-4096", "FC-4096", "FC-1000", "soft-max")]
    return "\n".join(line.rstrip() for line in lines)
