"""Inside a trained VGG: named layers, their activations, Grad-CAM, and torchvision's ImageNet weights.

* :func:`layer_names` names every layer as the paper's figures do (``conv1_1`` .. ``conv5_4``,
  ``pool1`` .. ``pool5``), mapped to module paths such as ``features.2``. A ``convB_I`` name
  points at the layer's rectified output (the ReLU after the convolution and its batch norm).
* :func:`activations` runs a batch and returns the outputs of the named layers (forward hooks).
* :func:`grad_cam` computes Grad-CAM maps (Selvaraju et al., 2017) for any of those layers; by
  default at the last layer whose map is larger than 1x1 for the input given (conv5_3 of D on
  32x32 images: pool5 is 1x1 there, and a 1x1 map up-sampled is flat: it shows nothing).
* :func:`load_imagenet_weights` puts torchvision's ImageNet VGG weights (``"vgg16"``,
  ``"vgg16_bn"``, ...) into :func:`vggedu.vgg`, strictly, from torchvision's cache, a file, or a
  download, and says what to do when none of them is there.

Introduced in notebook 08.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import read_state
from .models import VGG, paper_layers, vgg

__all__ = [
    "IMAGENET_NAMES",
    "WeightsUnavailable",
    "layer_names",
    "activations",
    "grad_cam",
    "last_spatial_layer",
    "imagenet_weights",
    "imagenet_weights_file",
    "load_imagenet_weights",
]

# torchvision's names -> (Table 1 column, batch norm)
IMAGENET_NAMES: dict[str, tuple[str, bool]] = {
    f"vgg{depth}{suffix}": (column, suffix == "_bn")
    for depth, column in ((11, "A"), (13, "B"), (16, "D"), (19, "E"))
    for suffix in ("", "_bn")
}


class WeightsUnavailable(RuntimeError):
    """The ImageNet weights are neither cached nor downloadable here; the message says what to do."""


def layer_names(model: VGG) -> dict[str, str]:
    """``{"conv1_1": "features.2", ..., "pool5": ..., "fc6": "classifier.1", "fc8": "classifier.6"}``.

    The paper's names (:func:`vggedu.models.paper_layers`, blocks counted by max-pools), each
    pointing at the module whose output is that layer's map: a convolution's ReLU (the rectified
    feature map, after batch norm), a max-pool, an LRN; fc6 and fc7 at their ReLU, fc8 at the logits.
    """
    return {name: parts.get("relu", next(iter(parts.values()))) for name, parts in paper_layers(model).items()}


def _modules(model: VGG, names: Sequence[str]) -> dict[str, nn.Module]:
    known = layer_names(model)
    modules = dict(model.named_modules())
    out = {}
    for name in names:
        path = known.get(name, name)  # a paper-style name, or a module path such as "features.3"
        if path not in modules or path == "":
            raise KeyError(
                f"no layer {name!r} in this model; use one of {', '.join(known)} (or a module path such as "
                "'features.0' or 'classifier.0')"
            )
        out[name] = modules[path]
    return out


@contextlib.contextmanager
def _not_inplace(model: nn.Module) -> Iterator[None]:
    # An in-place ReLU overwrites the tensor a hook kept; switch them off for the duration.
    changed = [m for m in model.modules() if isinstance(m, nn.ReLU) and m.inplace]
    for m in changed:
        m.inplace = False
    try:
        yield
    finally:
        for m in changed:
            m.inplace = True


@torch.no_grad()
def activations(model: VGG, x: torch.Tensor, names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Outputs of the named layers for the batch ``x`` (default: every max-pool), in eval mode.

    ``names`` are :func:`layer_names` keys (``"conv3_2"``, ``"pool5"``) or module paths. Returns
    ``{name: tensor (N, C, H, W)}`` in the order asked, detached.
    """
    if names is None:
        names = [n for n in layer_names(model) if n.startswith("pool")]
    modules = _modules(model, names)
    out: dict[str, torch.Tensor] = {}
    hooks = [
        module.register_forward_hook(lambda _m, _i, output, name=name: out.__setitem__(name, output.detach().clone()))
        for name, module in modules.items()
    ]
    was_training = model.training
    try:
        model.eval()
        with _not_inplace(model):
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return {name: out[name] for name in names}


def last_spatial_layer(model: VGG, x: torch.Tensor) -> str:
    """The last named layer of ``features`` whose output for ``x`` is larger than 1x1 (one cheap pass)."""
    names = [n for n in layer_names(model) if not n.startswith("fc")]
    shapes = {name: a.shape[-2:] for name, a in activations(model, x[:1], names).items()}
    spatial = [name for name in names if shapes[name].numel() > 1]
    if not spatial:
        raise ValueError(f"every layer's map is 1x1 for input {tuple(x.shape[-2:])}; Grad-CAM needs a larger input")
    return spatial[-1]


def grad_cam(
    model: VGG, x: torch.Tensor, layer: str | None = None, target: torch.Tensor | int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM maps (N, H, W) in [0, 1] at the input's size, and the logits (N, K).

    ``layer`` (default: :func:`last_spatial_layer`, e.g. conv5_3's 2x2 map for 32x32 images; pool5's
    1x1 map would make every map flat) is a :func:`layer_names` key or a module path.

    For each image: A = the layer's output (C, h, w); the gradient of the target class's logit
    (default: the predicted class) with respect to A, averaged over positions, weighs each
    channel; the map is ReLU(sum_c weight_c A_c), up-sampled (bilinear) to the input and divided
    by its maximum (a map that is zero everywhere stays zero). Selvaraju et al. (2017), eq. 1-2.
    """
    layer = last_spatial_layer(model, x) if layer is None else layer
    module = _modules(model, [layer])[layer]
    kept: list[torch.Tensor] = []
    hook = module.register_forward_hook(lambda _m, _i, output: kept.append(output))
    was_training = model.training
    try:
        model.eval()
        with _not_inplace(model), torch.enable_grad():
            logits = model(x)
            if target is None:
                target = logits.argmax(1)
            elif isinstance(target, int):
                target = torch.full((len(x),), target, dtype=torch.long, device=logits.device)
            score = logits.gather(1, target.view(-1, 1).to(logits.device)).sum()
            (grads,) = torch.autograd.grad(score, kept[0])
    finally:
        hook.remove()
        model.train(was_training)
    feature = kept[0].detach()
    weights = grads.mean((2, 3), keepdim=True)
    cam = F.relu((weights * feature).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return cam / peak, logits.detach()


# --- torchvision's ImageNet weights ---------------------------------------------------------


def _check_name(name: str) -> tuple[str, bool]:
    if name not in IMAGENET_NAMES:
        raise ValueError(f"no ImageNet VGG called {name!r}; torchvision has {', '.join(IMAGENET_NAMES)}")
    return IMAGENET_NAMES[name]


def imagenet_weights(name: str, weights: str = "IMAGENET1K_V1"):
    """torchvision's weights entry for ``name``: its URL, categories, transforms and metadata.

    ``weights`` is torchvision's name for the set: ``"IMAGENET1K_V1"`` (every VGG; "trained from scratch by
    using a simplified training recipe", says its metadata) or ``"IMAGENET1K_FEATURES"`` (VGG-16 only: the
    convolutions, "trained using the original input standardization method as described in the paper", and
    a classifier of missing values). Reading it needs no network: the download happens only in
    :func:`load_imagenet_weights`.
    """
    import torchvision

    _check_name(name)
    enum = getattr(
        torchvision.models, re.sub(r"vgg(\d+)(_bn)?", lambda m: f"VGG{m[1]}{(m[2] or '').upper()}", name) + "_Weights"
    )
    if weights not in enum.__members__:
        raise ValueError(f"torchvision has no {weights!r} weights for {name}; it has {', '.join(enum.__members__)}")
    return enum[weights]


def imagenet_weights_file(name: str, weights: str = "IMAGENET1K_V1") -> Path:
    """Where torchvision caches (and looks for) the weights file of ``name``: ``$TORCH_HOME/hub/checkpoints/``."""
    url = imagenet_weights(name, weights).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def load_imagenet_weights(
    name: str, *, weights: str = "IMAGENET1K_V1", path: str | Path | None = None, download: bool = True
) -> VGG:
    """``vggedu.vgg(...)`` with torchvision's ImageNet weights for ``name`` (``"vgg16"``, ``"vgg16_bn"``, ...).

    The weights come from ``path`` if given, else from torchvision's cache
    (:func:`imagenet_weights_file`), else from a download into that cache (``download=True``,
    528 MB for VGG-16). They are loaded strictly: every tensor must match by name and shape. ``weights``
    names the set, as :func:`imagenet_weights`.
    Raises :class:`WeightsUnavailable` (what failed, and the fix) when there is no file and no network.
    """
    column, batch_norm = _check_name(name)
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"no weights file at {file}; check the path, or leave path out to use the cache")
    else:
        file = imagenet_weights_file(name, weights)
        if not file.is_file():
            url = imagenet_weights(name, weights).url
            fix = (
                f"Where there is a network (Colab has one) this downloads by itself. Offline, download {url} on a "
                f"machine that has one and put it at {file}, or pass path=... to this function."
            )
            if not download:
                raise WeightsUnavailable(f"the ImageNet weights for {name} are not in the cache ({file}). {fix}")
            file.parent.mkdir(parents=True, exist_ok=True)  # torch.hub writes a .partial file there first
            previous = socket.getdefaulttimeout()
            socket.setdefaulttimeout(30)  # a network that swallows packets fails in 30 s instead of hanging
            try:
                torch.hub.download_url_to_file(url, str(file), progress=False)
            except Exception as error:  # URLError, socket errors, HTTP errors: all mean "not here"
                raise WeightsUnavailable(
                    f"could not download the ImageNet weights for {name} ({type(error).__name__}: {error}). {fix}"
                ) from error
            finally:
                socket.setdefaulttimeout(previous)
    state = read_state(
        file, what="PyTorch state dict", fix="delete it and download again, or pass the right file with path=..."
    )
    with torch.device("meta"):  # shapes only: drawing 138 M random weights to overwrite them takes seconds
        model = vgg(column, batch_norm=batch_norm, num_classes=1000)
    try:
        model.load_state_dict(state, strict=True, assign=True)  # strict: no tensor is left on the meta device
    except RuntimeError as error:
        first = str(error).splitlines()
        detail = "; ".join(line.strip() for line in first[1:4])
        raise ValueError(
            f"the weights in {file} are not {name}'s ({detail}). Pick the name that matches the file "
            "(with or without '_bn', the same depth)."
        ) from None
    return model.eval()
