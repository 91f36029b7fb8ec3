"""How VGG was tested (Section 3.2, Tables 3-6): the classifier as convolutions, dense,
multi-crop and multi-scale evaluation, and the fusion of several networks.

* :func:`fully_convolutional` turns a trained :class:`~vggedu.models.VGG` into a network of
  convolutions only. ImageNet head: fc6 becomes a 7x7 convolution, fc7 and fc8 1x1
  convolutions; CIFAR head: the three linear layers become 1x1 convolutions. At the
  training size it computes the same logits; on a larger image it gives a *class score map*,
  one score vector per position, in one pass.
* :func:`dense_probabilities`: the score map averaged over positions, soft-max, averaged with
  the mirrored image's (the paper's dense evaluation).
* :func:`multi_scale_probabilities`: dense evaluation at several test sizes Q, posteriors averaged.
* :func:`multi_crop_probabilities`: a grid of crops at the training size, each through the
  original network, posteriors averaged (the paper's multi-crop evaluation).
* :func:`fuse`: the mean of several networks' soft-max outputs (Section 4.4).
* :func:`scheme_accuracy` runs any of them over a loader.

Every function takes normalised float images (N, 3, H, W), as :class:`~vggedu.loaders.DeviceLoader`
yields them. Introduced in notebook 06.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .models import VGG

__all__ = [
    "FullyConvolutionalVGG",
    "fully_convolutional",
    "resize",
    "dense_probabilities",
    "multi_scale_probabilities",
    "crop_offsets",
    "multi_crop_probabilities",
    "fuse",
    "scheme_accuracy",
]


class FullyConvolutionalVGG(nn.Module):
    """A VGG whose classifier is convolutions: images (N, C, H, W) -> class score map (N, K, h, w).

    ``features`` are the original network's; ``classifier`` holds its fully connected layers
    rewritten as convolutions (same weights, reshaped). Made by :func:`fully_convolutional`.
    """

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential, *, head: str, train_size: int) -> None:
        super().__init__()
        self.features, self.classifier, self.head = features, classifier, head
        self.in_channels = next(m for m in features if isinstance(m, nn.Conv2d)).in_channels
        self.stride = 2 ** sum(isinstance(m, nn.MaxPool2d) for m in features)  # input pixels per map step
        self.train_size = train_size  # the smallest input: one position of the score map

    def map_size(self, size: int) -> int:
        """Side of the score map for a square input of side ``size`` (0 if too small)."""
        window = self.classifier[0].kernel_size[0]
        return max(size // self.stride - window + 1, 0)

    def dropped_pixels(self, size: int) -> int:
        """Input pixels per side (the last rows and columns) that no position of the score map stands for.

        Every 2x2 pooling floors an odd side, dropping its last row and column, so of a side ``size``
        only the first ``stride * (size // stride)`` pixels fall in the pooling grid: ``size % stride``
        pixels are left over (Q = 48: 16, the last third). They still reach the scores through the
        receptive fields of the rows kept, but the map's windows sit off-centre, towards the top left.
        Sizes that are multiples of the stride (32) drop nothing.
        """
        return size % self.stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected images of shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if min(x.shape[-2:]) < self.train_size:
            raise ValueError(
                f"input of {x.shape[-2]}x{x.shape[-1]} is smaller than one position of the score map: this "
                f"{self.head} head needs at least {self.train_size}x{self.train_size}; resize the images up"
            )
        return self.classifier(self.features(x))


def _as_conv(linear: nn.Linear, in_channels: int, kernel: int) -> nn.Conv2d:
    # A Linear layer on a flattened (C, k, k) window is a k x k convolution with the same weights:
    # torch.flatten orders the inputs channel first, then row, then column, as Conv2d's weight does.
    conv = nn.Conv2d(in_channels, linear.out_features, kernel)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.view(linear.out_features, in_channels, kernel, kernel))
        conv.bias.copy_(linear.bias)
    return conv.to(linear.weight.device, linear.weight.dtype)


def fully_convolutional(model: VGG) -> FullyConvolutionalVGG:
    """The same network with its fully connected layers as convolutions (Section 3.2).

    ImageNet head (``AdaptiveAvgPool2d(7)``, fc6 on C x 7 x 7): fc6 becomes a 7x7 convolution,
    fc7 and fc8 1x1 convolutions; at 224x224 the logits are the original's. CIFAR head
    (``AdaptiveAvgPool2d(1)``): the three linear layers become 1x1 convolutions; at 32x32 the
    logits are the original's. The adaptive pool is dropped: on a larger image the classifier
    then runs at every position of the feature map instead of on a pooled one. The original
    model is left as it was (the new one holds copies of its weights).
    """
    if not isinstance(model, VGG):
        raise TypeError(f"fully_convolutional takes a vggedu VGG (vggedu.vgg(...)), got {type(model).__name__}")
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    if len(linears) != 3:
        raise ValueError(f"expected the VGG classifier's three Linear layers, found {len(linears)}")
    pool = model.avgpool.output_size
    kernel = pool[0] if isinstance(pool, tuple) else pool
    channels = linears[0].in_features // (kernel * kernel)
    if channels * kernel * kernel != linears[0].in_features:
        raise ValueError(f"fc6 takes {linears[0].in_features} inputs, not C x {kernel} x {kernel}")
    layers: list[nn.Module] = []
    for module in model.classifier:
        if isinstance(module, nn.Linear):
            first = not layers
            layers.append(_as_conv(module, channels if first else module.in_features, kernel if first else 1))
        else:
            layers.append(copy.deepcopy(module))  # ReLU, Dropout: they act per value, on maps as on vectors
    head = "imagenet" if kernel > 1 else "cifar"
    fcn = FullyConvolutionalVGG(
        copy.deepcopy(model.features), nn.Sequential(*layers), head=head, train_size=kernel * model.min_input_size
    )
    return fcn.train(model.training)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Images (N, C, H, W) rescaled to ``size`` x ``size``, bilinear (antialiased when shrinking)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1])


@torch.no_grad()
def dense_probabilities(fcn: FullyConvolutionalVGG, x: torch.Tensor, *, flip: bool = True) -> torch.Tensor:
    """Dense evaluation: the score map averaged over positions, then soft-max, (N, K).

    With ``flip`` the soft-max outputs of the image and its mirror image are averaged, as in
    the paper ("the soft-max class posteriors of the original and flipped images are averaged").
    """
    probabilities = fcn(x).mean((2, 3)).softmax(1)
    if flip:
        probabilities = (probabilities + fcn(x.flip(3)).mean((2, 3)).softmax(1)) / 2
    return probabilities


@torch.no_grad()
def multi_scale_probabilities(
    fcn: FullyConvolutionalVGG, x: torch.Tensor, sizes: Sequence[int], *, flip: bool = True
) -> torch.Tensor:
    """Multi-scale dense evaluation (Section 4.2): dense posteriors at every test size Q, averaged."""
    if not sizes:
        raise ValueError("sizes must name at least one test size, e.g. (32, 40, 48)")
    return torch.stack([dense_probabilities(fcn, resize(x, q), flip=flip) for q in sizes]).mean(0)


def crop_offsets(size: int, crop: int, grid: int) -> list[int]:
    """``grid`` crop positions along a side of ``size`` pixels, evenly spaced, first and last at the edges."""
    if crop > size:
        raise ValueError(f"a {crop}-pixel crop does not fit in {size} pixels; test at a size >= {crop}")
    if grid == 1:
        return [(size - crop) // 2]
    return [round(i * (size - crop) / (grid - 1)) for i in range(grid)]


@torch.no_grad()
def multi_crop_probabilities(
    model: nn.Module,
    x: torch.Tensor,
    sizes: Sequence[int],
    *,
    crop: int = 32,
    grid: int = 3,
    flip: bool = True,
) -> torch.Tensor:
    """Multi-crop evaluation (Section 3.2): at every test size Q, a ``grid`` x ``grid`` grid of crops
    of the training size (and their mirror images), each through the original network; the soft-max
    outputs of all crops and sizes averaged. The paper used a 5x5 grid with flips, 50 crops per scale.
    ``grid=1`` is the single centre crop.
    """
    if not sizes:
        raise ValueError("sizes must name at least one test size, e.g. (32, 40, 48)")
    total, count = 0.0, 0
    for q in sizes:
        image = resize(x, q)
        offsets = crop_offsets(q, crop, grid)
        crops = [image[:, :, i : i + crop, j : j + crop] for i in offsets for j in offsets]
        if flip:
            crops += [c.flip(3) for c in crops]
        for c in crops:
            total = total + model(c).softmax(1)
            count += 1
    return total / count


def fuse(probabilities: Sequence[torch.Tensor]) -> torch.Tensor:
    """Fusion of several networks (Section 4.4): the mean of their soft-max outputs, (N, K)."""
    if not probabilities:
        raise ValueError("fuse needs the outputs of at least one network")
    shapes = {tuple(p.shape) for p in probabilities}
    if len(shapes) != 1:
        raise ValueError(f"every network must score the same images and classes; got shapes {sorted(shapes)}")
    return torch.stack(list(probabilities)).mean(0)


@torch.no_grad()
def scheme_accuracy(
    scheme: Callable[[torch.Tensor], torch.Tensor], loader, *, keep: bool = False
) -> float | tuple[float, torch.Tensor, torch.Tensor]:
    """Top-1 accuracy of ``scheme`` (images -> probabilities) over ``loader``; ``keep=True`` also
    returns the probabilities and labels (on the CPU), for fusing schemes afterwards."""
    outputs, all_labels = [], []
    for x, labels in loader:
        outputs.append(scheme(x).float().cpu())
        all_labels.append(labels.cpu())
    probabilities, labels = torch.cat(outputs), torch.cat(all_labels)
    accuracy = (probabilities.argmax(1) == labels).float().mean().item()
    return (accuracy, probabilities, labels) if keep else accuracy
