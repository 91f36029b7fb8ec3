"""Batches for training and evaluation: the whole split on the device, augmented a batch at a time.

* :class:`DeviceLoader` keeps a split on the device as uint8 and augments whole batches there
  (random crop with 4-pixel padding, horizontal flip), as airbench does; or, with ``scale``, the
  paper's scale jittering (Section 3.1) at CIFAR-10's size: each image rescaled to its own random
  size, then cropped and flipped (:func:`rescale_crop_flip`). An epoch's draws depend only on
  (seed, epoch), so a resumed run draws what an uninterrupted one would.
* :func:`torchvision_loader` is the classic ``Dataset`` + ``DataLoader`` + transforms path,
  kept for the comparison in notebook 04.

Introduced in notebook 04.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from .data import CIFAR10_MEAN, CIFAR10_STD, CIFAR10Split

__all__ = [
    "DeviceLoader",
    "crop_flip",
    "crop_flip_draws",
    "random_crop_flip",
    "rescale_crop_flip",
    "scale_draws",
    "torchvision_loader",
]


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # One generator per (seed, epoch): epoch k draws the same crops and order whether or not
    # the run was interrupted before it, which makes resuming exact.
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def crop_flip(padded: torch.Tensor, pad: int, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Crop every image of a batch at its own offset and mirror the flagged ones, in one gather.

    ``padded`` holds images (N, C, H + 2 pad, W + 2 pad); ``dy``, ``dx`` (N,) are each crop's
    top-left corner (0 .. 2 pad) and ``flip`` (N,) says which images to mirror, all on
    ``padded``'s device. Returns (N, C, H, W): no per-image Python, nothing copied to the device.
    """
    n, channels = padded.shape[0], padded.shape[1]
    height, width = padded.shape[2] - 2 * pad, padded.shape[3] - 2 * pad
    device = padded.device
    rows = (dy[:, None] + torch.arange(height, device=device))[:, None, :, None]  # (n, 1, H, 1)
    cols = dx[:, None] + torch.arange(width, device=device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :]  # mirroring = reading columns backwards
    batch = torch.arange(n, device=device)[:, None, None, None]
    channel = torch.arange(channels, device=device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def crop_flip_draws(n: int, pad: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random crop offsets ``dy``, ``dx`` (uniform over 0 .. 2 pad) and coin-flip mirrors for ``n`` images.

    Drawn on the CPU from ``generator``, so the same seed gives the same crops on every device.
    """
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device="cpu")
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device="cpu")
    flip = torch.rand(n, generator=generator, device="cpu") < 0.5
    return dy, dx, flip


def random_crop_flip(padded: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Augment one batch: a random crop and a coin-flip mirror per image (notebook 04).

    Draws with :func:`crop_flip_draws`, then :func:`crop_flip`. :class:`DeviceLoader` draws a
    whole epoch's offsets at once instead and moves them to the device once per epoch.
    """
    dy, dx, flip = (t.to(padded.device) for t in crop_flip_draws(len(padded), pad, generator))
    return crop_flip(padded, pad, dy, dx, flip)


def scale_draws(
    n: int, scale: tuple[int, int], size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scale-jitter draws for ``n`` images: side ``s`` uniform over ``scale`` (both ends included),
    crop offsets ``dy``, ``dx`` uniform over 0 .. s - size, and coin-flip mirrors.

    Drawn on the CPU from ``generator`` (same seed, same draws on every device).
    """
    low, high = scale
    s = torch.randint(low, high + 1, (n,), generator=generator, device="cpu")
    # Offsets uniform over each image's own range: floor(u * (s - size + 1)), u in [0, 1).
    dy = (torch.rand(n, generator=generator, device="cpu") * (s - size + 1)).long()
    dx = (torch.rand(n, generator=generator, device="cpu") * (s - size + 1)).long()
    flip = torch.rand(n, generator=generator, device="cpu") < 0.5
    return s, dy, dx, flip


def rescale_crop_flip(
    x: torch.Tensor, s: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, size: int = 32
) -> torch.Tensor:
    """Rescale each image of a float batch to its own side ``s`` (bilinear), crop ``size`` x ``size``
    at (``dy``, ``dx``) and mirror the flagged ones: one batched ``grid_sample``.

    ``x`` (N, C, H, W) float; ``s``, ``dy``, ``dx``, ``flip`` (N,) on ``x``'s device. The same
    pixels as ``F.interpolate(x[i:i+1], (s, s), mode="bilinear")`` sliced at the offsets (and
    flipped), for square inputs, but with no per-image Python: the rescaling, the crop and the mirror
    are one affine map per image. In the normalised coordinates of ``affine_grid``
    (``align_corners=False``), output column ``u`` reads the input at ``a u + t`` with
    ``a = size / s`` and ``t = (size + 2 dx) / s - 1``; a mirror negates ``a``. (Border
    pixels are repeated, as ``F.interpolate`` does at the edges.)
    """
    n, channels, height, width = x.shape
    if height != width:
        raise ValueError(f"rescale_crop_flip takes square images, got {height}x{width}")
    s = s.to(x.dtype)
    a = size / s
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = torch.where(flip, -a, a)
    theta[:, 0, 2] = (size + 2 * dx.to(x.dtype)) / s - 1
    theta[:, 1, 1] = a
    theta[:, 1, 2] = (size + 2 * dy.to(x.dtype)) / s - 1
    grid = torch.nn.functional.affine_grid(theta, [n, channels, size, size], align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class DeviceLoader:
    """Batches from a split held on ``device`` as uint8, augmented whole batches at a time.

    Augmentation (``train=True``): random crop of 32x32 from the image padded by 4 pixels of
    zeros, and a horizontal flip with probability 1/2; no per-image Python. The epoch's order,
    crop offsets and flips are drawn once per epoch on the CPU and copied to the device in one
    transfer (a host-to-device copy per step would stall a GPU's queue every step); they
    depend only on ``seed`` and the epoch (see :meth:`set_epoch`). Yields normalised float
    images (N, 3, 32, 32) in ``dtype`` (channels-last if asked) and labels.

    ``scale=(low, high)`` replaces the padded crop by the paper's scale jittering (Section 3.1,
    S in [256, 512] for 224 crops) at CIFAR-10's size: every image is rescaled to its own random
    side in low .. high pixels, then a random 32x32 crop is taken and flipped with probability
    1/2 (:func:`rescale_crop_flip`; ``(36, 36)`` is a fixed scale). Notebook 06.

    With ``world_size > 1`` (several processes, see :mod:`vggedu.distributed`) every process
    draws the same epoch and takes its own disjoint part of each batch: ``batch_size`` is the
    global batch, so together the processes see exactly the batches one process would. For
    evaluation (``train=False``) each process takes a disjoint part of the split, and together
    they cover it.
    """

    def __init__(
        self,
        split: CIFAR10Split,
        batch_size: int,
        *,
        train: bool,
        device: torch.device | str = "cpu",
        seed: int = 0,
        mean: tuple[float, ...] = CIFAR10_MEAN,
        std: tuple[float, ...] = CIFAR10_STD,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        drop_last: bool | None = None,
        pad: int = 4,
        rank: int = 0,
        world_size: int = 1,
        scale: tuple[int, int] | None = None,
    ) -> None:
        if scale is not None:
            scale = tuple(scale)
            size = split.images.shape[-1]
            if len(scale) != 2 or not all(isinstance(v, int) for v in scale) or not size <= scale[0] <= scale[1]:
                raise ValueError(
                    f"scale must be (low, high), whole numbers with {size} <= low <= high (the images are "
                    f"{size}x{size} and the crop is too); got {scale!r}"
                )
            pad = 0
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive whole number, got {batch_size!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in 0 .. world_size - 1 = {world_size - 1}, got {rank}")
        if train and batch_size % world_size:
            raise ValueError(
                f"batch_size {batch_size} (the global batch) must be divisible by the {world_size} processes"
            )
        self.device = torch.device(device)
        self.train, self.batch_size, self.seed, self.pad, self.scale = train, batch_size, seed, pad, scale
        self.rank, self.world_size = rank, world_size
        self.drop_last = train if drop_last is None else drop_last
        self.dtype, self.channels_last = dtype, channels_last
        if not train and world_size > 1:  # this process's part of the split
            split = split.take(torch.arange(rank, len(split), world_size))
        images = split.images.to(self.device)
        # Padded once, up front: a crop is then a plain slice of the stored images.
        self.images = torch.nn.functional.pad(images, (pad,) * 4) if train and pad else images
        self.labels = split.labels.to(self.device)
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1) * 255
        self.inv_std = 1 / (torch.tensor(std, device=self.device).view(1, 3, 1, 1) * 255)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order and augmentation the next iteration draws."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> normalised float in this loader's dtype and memory format."""
        if self.channels_last:  # reorder while the data is 1 byte per value
            images = images.contiguous(memory_format=torch.channels_last)
        x = images.float().sub_(self.mean).mul_(self.inv_std)
        return x if self.dtype == torch.float32 else x.to(self.dtype)

    def epoch_draws(self) -> torch.Tensor:
        """This epoch's image order, crop offsets and flips: an int64 (4, N) tensor on the device.

        Rows: image index at each position of the epoch, ``dy``, ``dx``, flip (0/1), and with
        ``scale`` a fifth row, each image's rescaled side. Drawn from one generator seeded by
        (seed, epoch), on the CPU, then copied to the device once.
        """
        n = len(self.labels)
        generator = _epoch_generator(self.seed, self.epoch)
        order = torch.randperm(n, generator=generator, device="cpu")
        if self.scale is not None:
            side, dy, dx, flip = scale_draws(n, self.scale, self.images.shape[-1], generator)
            return torch.stack([order, dy, dx, flip.long(), side]).to(self.device)
        dy, dx, flip = crop_flip_draws(n, self.pad, generator)
        return torch.stack([order, dy, dx, flip.long()]).to(self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        if not self.train:
            for start in range(0, len(self) * self.batch_size, self.batch_size):
                index = slice(start, min(start + self.batch_size, n))
                yield self.normalize(self.images[index]), self.labels[index]
            return
        draws = self.epoch_draws()
        local = self.batch_size // self.world_size
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            # This process's part of the global batch [start, start + batch_size).
            first = start + self.rank * local
            part = draws[:, first : min(first + local, n)]
            order, dy, dx, flip = part[:4]
            if self.scale is not None:  # normalise first: rescaling is linear, so the two commute
                x = rescale_crop_flip(self.normalize(self.images[order]).float(), part[4], dy, dx, flip.bool())
                x = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
                yield x.to(self.dtype), self.labels[order]
                continue
            images = crop_flip(self.images[order], self.pad, dy, dx, flip.bool())
            yield self.normalize(images), self.labels[order]


class _PILDataset(torch.utils.data.Dataset):
    """What torchvision's CIFAR10 does per image: uint8 array -> PIL image -> transforms."""

    def __init__(self, split: CIFAR10Split, transform) -> None:
        self.data = split.images.permute(0, 2, 3, 1).numpy()  # (N, 32, 32, 3), as torchvision stores it
        self.targets = split.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.data[index])), self.targets[index]


def torchvision_loader(
    split: CIFAR10Split,
    batch_size: int,
    *,
    train: bool,
    num_workers: int = 2,
    mean: tuple[float, ...] = CIFAR10_MEAN,
    std: tuple[float, ...] = CIFAR10_STD,
    seed: int = 0,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """The classic path: a Dataset of PIL images, torchvision transforms per image, a DataLoader."""
    from torchvision import transforms

    steps = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if train else []
    transform = transforms.Compose(steps + [transforms.ToTensor(), transforms.Normalize(mean, std)])
    return torch.utils.data.DataLoader(
        _PILDataset(split, transform),
        batch_size=batch_size,
        shuffle=train,
        drop_last=train,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )
