"""VGG networks: the config-driven builder, the model class and the explicit VGG-19.

Module names follow torchvision's ``vgg.py`` (``features``, ``avgpool``,
``classifier``, same indices), so state dicts load across in both directions
for configurations A, B, D and E. Introduced in notebooks 02 and 03.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from .configs import HEADS, ConfigLike, check_choice, check_width, paper_names, resolve_config, scaled_channels
from .vgg19 import VGG19

__all__ = [
    "make_layers",
    "VGG",
    "VGG19",
    "vgg",
    "scaled_channels",
    "lrn_krizhevsky",
    "HEADS",
    "INITS",
    "paper_names",
    "paper_layers",
    "PAPER_TRANSFER",
    "init_from",
]

Head = Literal["imagenet", "cifar"]
Init = Literal["kaiming", "paper", "paper-0.01", "glorot", "caffe-xavier"]
INITS: tuple[str, ...] = ("kaiming", "paper", "paper-0.01", "glorot", "caffe-xavier")

# Krizhevsky et al. (2012), Section 3.3: b = a / (k + alpha * sum_{n neighbours} a^2)^beta
# with k=2, n=5, alpha=1e-4, beta=0.75. PyTorch divides alpha by n inside the sum,
# so the paper's alpha is passed as alpha * n.
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0


def lrn_krizhevsky() -> nn.LocalResponseNorm:
    """LRN with the settings of Krizhevsky et al. (2012), as used in configuration A-LRN."""
    return nn.LocalResponseNorm(size=LRN_SIZE, alpha=LRN_ALPHA * LRN_SIZE, beta=LRN_BETA, k=LRN_K)


def make_layers(
    config: ConfigLike, *, batch_norm: bool = False, width: float = 1.0, in_channels: int = 3
) -> nn.Sequential:
    """Build the convolutional part of a VGG column as one ``nn.Sequential``.

    ``config`` is a Table 1 name (``"A"``..``"E"``, ``"A-LRN"``), an alias (16,
    ``"vgg16"``) or a list of layers (``["conv3-64", "maxpool"]``). Each convolution
    becomes Conv2d (padding k//2, keeps the size), then BatchNorm2d if asked, then ReLU;
    each ``maxpool`` a 2x2 max-pool with stride 2 (halves the size). Section 2.1.
    """
    layers_spec = resolve_config(config)
    check_width(width)
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive integer (3 for RGB images), got {in_channels!r}")
    layers: list[nn.Module] = []
    channels = in_channels
    for spec in layers_spec:
        if spec.kind == "maxpool":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        elif spec.kind == "lrn":
            layers.append(lrn_krizhevsky())
        else:
            out_channels = scaled_channels(spec.out_channels, width)
            layers.append(nn.Conv2d(channels, out_channels, spec.kernel_size, padding=spec.kernel_size // 2))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
            channels = out_channels
    return nn.Sequential(*layers)


def _convolutions(features: object) -> list[nn.Conv2d]:
    """The Conv2d layers of ``features``, or a ValueError that says what VGG needs."""
    if not isinstance(features, nn.Sequential):
        raise TypeError(
            "VGG needs its convolutional part as an nn.Sequential, e.g. make_layers('D'); "
            f"got {type(features).__name__}"
        )
    convs = [m for m in features if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(
            "VGG needs features with at least one Conv2d (its first sets the input channels, its last the "
            f"classifier's width), e.g. make_layers('D'); got {len(features)} layers and no convolution"
        )
    return convs


class VGG(nn.Module):
    """A VGG network: ``features`` (convolutions), ``avgpool``, ``classifier`` (FC head).

    Heads (Section 2.1, and the CIFAR adaptation of the classic CIFAR-10 VGG recipe):

    * ``"imagenet"``: the paper's head. ``AdaptiveAvgPool2d(7)`` then
      ``C*7*7 -> 4096 -> 4096 -> num_classes`` with ReLU and dropout 0.5. At 224x224 the
      map after pool5 is already 7x7 and the pool does nothing; this is torchvision's head.
    * ``"cifar"``: ``AdaptiveAvgPool2d(1)`` then ``C -> C -> C -> num_classes`` (C = 512
      at width 1), ReLU and dropout 0.5. At 32x32 five poolings leave 1x1, so the pool
      does nothing. On larger inputs it becomes *global average pooling*: at 224x224 it
      averages away the 7x7 map that the paper's head flattens (notebook 03).

    Inputs are (N, in_channels, H, W) with H and W at least 2**(number of max-pools)
    (32 for every Table 1 column); a wrong shape is reported before any layer runs.
    """

    def __init__(
        self,
        features: nn.Sequential,
        num_classes: int = 1000,
        *,
        head: Head = "imagenet",
        dropout: float = 0.5,
        init: Init = "kaiming",
    ) -> None:
        super().__init__()
        _check_num_classes(num_classes)
        check_choice("head", head, HEADS)
        check_choice("init", init, INITS)
        convs = _convolutions(features)
        self.features = features
        self.in_channels = convs[0].in_channels
        self.min_input_size = 2 ** sum(isinstance(m, nn.MaxPool2d) for m in features)
        channels = convs[-1].out_channels
        if head == "imagenet":
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            in_features, hidden = channels * 7 * 7, 4096
        else:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            in_features, hidden = channels, channels
        self.classifier = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, num_classes),
        )
        self.head = head
        initialize(self, init)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError that says what is wrong if ``x`` is not a batch this model can take."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor of shape (N, {self.in_channels}, H, W), got {type(x).__name__}")
        if x.dim() == 3:
            raise ValueError(
                f"expected a batch of shape (N, {self.in_channels}, H, W), got one image of shape "
                f"{tuple(x.shape)}; add a batch dimension with x.unsqueeze(0)"
            )
        if x.dim() != 4:
            raise ValueError(f"expected a batch of shape (N, {self.in_channels}, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"this model takes {self.in_channels} input channels, got {x.shape[1]} (shape {tuple(x.shape)}); "
                "convert the images (e.g. grayscale to RGB with x.expand(-1, 3, -1, -1)) "
                "or build the model with make_layers(..., in_channels=...)"
            )
        h, w = x.shape[-2:]
        if min(h, w) < self.min_input_size:
            raise ValueError(
                f"input of {h}x{w} is too small: this model halves the size "
                f"{int(math.log2(self.min_input_size))} times, so it needs at least "
                f"{self.min_input_size}x{self.min_input_size} pixels; resize or pad the images"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images -> (N, num_classes) logits."""
        self.check_input(x)
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def _check_num_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"num_classes must be a positive integer (1000 for ImageNet, 10 for CIFAR-10), got {num_classes!r}"
        )


@torch.no_grad()
def initialize(model: nn.Module, init: Init = "kaiming") -> nn.Module:
    """Initialise weights in place.

    ``"kaiming"``: He et al. (2015) normal init for convolutions (fan-out, ReLU gain), as
    the classic CIFAR-10 VGG recipe and torchvision do, and for the hidden linear layers (fan-in), so a
    narrow CIFAR head passes a signal from the first step; N(0, 0.01^2) for the last layer.
    ``"paper"``: Section 3.1, "weights sampled from a normal distribution with the zero mean
    and 10^-2 variance" read as written: standard deviation 0.1, biases zero. ``"paper-0.01"``:
    the same sentence read as standard deviation 0.01, the value Caffe model definitions of the
    time used (e.g. AlexNet's). ``"glorot"``: Glorot & Bengio (2010) as PyTorch's
    ``xavier_uniform_``, uniform with variance 2 / (fan_in + fan_out). ``"caffe-xavier"``: Caffe's
    ``xavier`` filler with its defaults, uniform with variance 1 / fan_in (fan_in = input channels
    x kernel area). The paper (Section 3.1) says the initialisation of Glorot & Bengio made its
    start from net A unnecessary; biases zero in both. Batch norm starts at weight 1, bias 0 in all.
    """
    check_choice("init", init, INITS)
    last_linear = next((m for m in reversed(list(model.modules())) if isinstance(m, nn.Linear)), None)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and init in ("glorot", "caffe-xavier", "paper-0.01"):
            if init == "glorot":
                nn.init.xavier_uniform_(m.weight)
            elif init == "caffe-xavier":
                bound = math.sqrt(3.0 / (m.weight[0].numel()))  # fan_in; uniform(-b, b) has variance b^2 / 3
                nn.init.uniform_(m.weight, -bound, bound)
            else:
                nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            if init == "kaiming":
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            else:
                nn.init.normal_(m.weight, 0.0, 0.1)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if init == "paper":
                nn.init.normal_(m.weight, 0.0, 0.1)
            elif m is last_linear:  # small logits at the start: no class is favoured
                nn.init.normal_(m.weight, 0.0, 0.01)
            else:  # keeps the signal's scale through the ReLUs of a small head
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def vgg(
    config: ConfigLike,
    *,
    batch_norm: bool = False,
    num_classes: int = 1000,
    head: Head = "imagenet",
    width: float = 1.0,
    init: Init = "kaiming",
    in_channels: int = 3,
    dropout: float = 0.5,
) -> VGG:
    """Build any column of Table 1: ``vgg("D")`` is VGG-16, ``vgg(19, batch_norm=True)`` VGG-19-BN.

    ``head="cifar"`` gives the 32x32 adaptation; ``width`` scales every convolution's
    channels (0.25 gives a CPU-friendly model). Notebook 03.
    """
    _check_num_classes(num_classes)
    check_choice("head", head, HEADS)
    check_choice("init", init, INITS)
    features = make_layers(config, batch_norm=batch_norm, width=width, in_channels=in_channels)
    return VGG(features, num_classes, head=head, dropout=dropout, init=init)


# --- the paper's layer names -------------------------------------------------------------------


_KINDS = {nn.Conv2d: "conv", nn.MaxPool2d: "maxpool", nn.LocalResponseNorm: "lrn"}


def paper_layers(model: VGG) -> dict[str, dict[str, str]]:
    """Paper name -> the module paths of that layer, in order: ``{"conv1_1": {"conv": "features.0",
    "bn": "features.1", "relu": "features.2"}, ..., "pool5": {"pool": ...}, "fc6": {"linear":
    "classifier.0", "relu": "classifier.1"}, ..., "fc8": {"linear": "classifier.6"}}``.

    A batch norm or ReLU belongs to the convolution (or linear layer) before it.
    """
    layers: dict[str, dict[str, str]] = {}
    modules = list(model.features)
    last = None
    for index, (module, name) in enumerate(zip(modules, paper_names(_KINDS.get(type(m), "") for m in modules))):
        path = f"features.{index}"
        if name is not None:
            role = {"conv": "conv", "maxpool": "pool", "lrn": "lrn"}[_KINDS[type(module)]]
            layers[name], last = {role: path}, name if role == "conv" else None
        elif last is not None and isinstance(module, (nn.BatchNorm2d, nn.ReLU)):
            layers[last]["bn" if isinstance(module, nn.BatchNorm2d) else "relu"] = path
    fc = 5
    for index, module in enumerate(model.classifier):
        if isinstance(module, nn.Linear):
            fc += 1
            layers[f"fc{fc}"] = {"linear": f"classifier.{index}"}
        elif isinstance(module, nn.ReLU):
            layers[f"fc{fc}"]["relu"] = f"classifier.{index}"
    return layers


# Section 3.1: "we initialised the first four convolutional layers and the last three fully-connected
# layers with the layers of net A (the intermediate layers were initialised randomly)".
PAPER_TRANSFER = ("conv1_1", "conv2_1", "conv3_1", "conv3_2", "fc6", "fc7", "fc8")


def _weights(model: VGG) -> dict[str, list[nn.Module]]:
    """Paper name -> the modules holding that layer's tensors (the conv and its batch norm, or the linear)."""
    modules = dict(model.named_modules())
    return {
        name: [modules[path] for role, path in parts.items() if role in ("conv", "bn", "linear")]
        for name, parts in paper_layers(model).items()
        if "conv" in parts or "linear" in parts
    }


@torch.no_grad()
def init_from(shallow: VGG, deep: VGG, layers: Sequence[str] = PAPER_TRANSFER) -> dict[str, list[str]]:
    """Copy ``layers`` (default: the paper's seven) from ``shallow`` into ``deep``, in place (notebook 07).

    Every tensor of each named layer (weight, bias, and batch-norm scale, shift and running
    statistics) is copied; everything else in ``deep`` keeps its initialisation. Returns
    ``{"copied": [...], "fresh": [...]}`` (layer names of ``deep``). Raises a ValueError, before
    copying anything, if a layer is missing from either network or its shapes differ.
    """
    if not isinstance(shallow, VGG) or not isinstance(deep, VGG):
        raise TypeError("init_from takes two vggedu VGG models (vggedu.vgg(...)), the trained one first")
    source, target = _weights(shallow), _weights(deep)
    problems = []
    for name in layers:
        if name not in source or name not in target:
            problems.append(f"{name} is not in {'the shallow net' if name not in source else 'the deep net'}")
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
