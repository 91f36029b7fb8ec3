"""CIFAR-10 for VGG: download, read the official files, synthetic test data, on-device loading.

* :func:`download_cifar10` fetches the official release with torchvision (MD5 checked).
* :func:`load_cifar10` reads the official ``cifar-10-batches-py`` layout into uint8
  tensors (N, 3, 32, 32) and int64 labels (N,), checking every file first.
* :func:`write_synthetic_cifar10` writes small, learnable data in the same layout (tests, CI).
* :class:`DeviceLoader` keeps a whole split on the device as uint8 and augments whole
  batches there (random crop with 4-pixel padding, horizontal flip), as airbench does;
  or, with ``scale``, the paper's scale jittering (Section 3.1) in CIFAR-10's size: each
  image rescaled to its own random size, then cropped and flipped (:func:`rescale_crop_flip`).
* :func:`torchvision_loader` is the classic ``Dataset`` + ``DataLoader`` + transforms path,
  kept for the comparison in notebook 04.

Introduced in notebook 04.
"""

from __future__ import annotations

import hashlib
import math
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10Split",
    "DataError",
    "DeviceLoader",
    "channel_stats",
    "cifar10_folder",
    "download_cifar10",
    "load_cifar10",
    "crop_flip",
    "crop_flip_draws",
    "random_crop_flip",
    "rescale_crop_flip",
    "scale_draws",
    "stratified_split",
    "torchvision_loader",
    "write_synthetic_cifar10",
]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# The constants most code uses: per-channel mean and standard deviation of the official
# training set, pixels in [0, 1]. (A widespread variant, std (0.2023, 0.1994, 0.2010), is
# the mean of per-image standard deviations, not the standard deviation of the pixels.)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

FOLDER = "cifar-10-batches-py"
_TV = torchvision.datasets.CIFAR10
# Official file names and MD5 checksums, as torchvision records them.
TRAIN_FILES: tuple[tuple[str, str], ...] = tuple((name, md5) for name, md5 in _TV.train_list)
TEST_FILES: tuple[tuple[str, str], ...] = tuple((name, md5) for name, md5 in _TV.test_list)
META_FILE: tuple[str, str] = (_TV.meta["filename"], _TV.meta["md5"])
SYNTHETIC_MARK = "vggedu synthetic data"


class DataError(RuntimeError):
    """Missing, truncated or malformed data files; the message names the file and the fix."""


@dataclass(frozen=True)
class CIFAR10Split:
    """One split held in memory: uint8 images (N, 3, 32, 32), int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    source: str  # what the data is, for run cards: official (verified), unverified copy, synthetic

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int) -> CIFAR10Split:
        """The first ``n`` images (the official batches are already in random order)."""
        return CIFAR10Split(self.images[:n], self.labels[:n], self.classes, self.source)

    def take(self, index: torch.Tensor) -> CIFAR10Split:
        """The images at ``index`` (a 1-D index tensor), e.g. one part of :func:`stratified_split`."""
        return CIFAR10Split(self.images[index], self.labels[index], self.classes, self.source)


def cifar10_folder(root: str | Path) -> Path:
    """``root/cifar-10-batches-py``, or ``root`` itself if it already is that folder."""
    root = Path(root).expanduser()
    return root if root.name == FOLDER else root / FOLDER


def download_cifar10(root: str | Path) -> Path:
    """Download and unpack the official CIFAR-10 (python version, 163 MB) into ``root``.

    torchvision checks the archive's MD5 and skips the download if the files are already
    there and intact. Returns the ``cifar-10-batches-py`` folder.
    """
    root = Path(root).expanduser()
    folder = cifar10_folder(root)
    try:
        torchvision.datasets.CIFAR10(str(folder.parent), train=True, download=True)
    except Exception as error:  # network errors come in many types
        raise DataError(
            f"could not download CIFAR-10 into {folder.parent} ({type(error).__name__}: {error}). "
            "Check the internet connection, or copy an existing cifar-10-batches-py folder there."
        ) from error
    return folder


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except Exception as error:
        raise DataError(
            f"{path} is not a readable CIFAR-10 batch file ({type(error).__name__}: {error}); it may be truncated "
            "or corrupt. Delete the folder and download it again (download_cifar10, or --download)."
        ) from error
    if not isinstance(entry, dict):
        raise DataError(f"{path} holds a {type(entry).__name__}, not a CIFAR-10 batch dictionary; download it again.")
    return entry


def _check_files(folder: Path, files: tuple[tuple[str, str], ...], verify: bool) -> None:
    if not folder.is_dir():
        raise DataError(
            f"no CIFAR-10 folder at {folder}. Download it with download_cifar10({str(folder.parent)!r}) "
            "(or --download on the command line), or point data_root at the folder that holds cifar-10-batches-py."
        )
    for name, md5 in files:
        path = folder / name
        if not path.is_file():
            raise DataError(
                f"{path} is missing. Download CIFAR-10 again (download_cifar10 or --download) "
                "or copy the complete cifar-10-batches-py folder."
            )
        if verify and _md5(path) != md5:
            raise DataError(
                f"{path} does not match the official CIFAR-10 checksum: it is corrupt, truncated or not the official "
                "release. Delete it and download again, or, for a copy made elsewhere in the same layout, "
                "pass verify=False (--no-verify) to check only its structure."
            )


def load_cifar10(root: str | Path, *, train: bool = True, verify: bool = True) -> CIFAR10Split:
    """Read a split of CIFAR-10 from the official ``cifar-10-batches-py`` layout.

    With ``verify=True`` every file must match the official MD5 checksum; with
    ``verify=False`` only the structure is checked (shapes, dtypes, label range), for a
    re-encoded copy or test data. Images come back as uint8 (N, 3, 32, 32), labels int64 (N,).
    """
    folder = cifar10_folder(root)
    files = TRAIN_FILES if train else TEST_FILES
    _check_files(folder, files + (META_FILE,), verify)
    meta = _unpickle(folder / META_FILE[0])
    classes = tuple(meta.get("label_names", ()))
    if len(classes) != 10:
        raise DataError(f"{folder / META_FILE[0]} should name 10 classes, found {len(classes)}; download it again.")
    images, labels = [], []
    for name, _ in files:
        path = folder / name
        entry = _unpickle(path)
        data, batch_labels = entry.get("data"), entry.get("labels")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            shape = getattr(data, "shape", None)
            raise DataError(
                f"{path}: 'data' should be a uint8 array of shape (N, 3072), got {shape}; download it again."
            )
        if batch_labels is None or len(batch_labels) != len(data):
            raise DataError(f"{path}: expected {len(data)} labels, found {len(batch_labels or [])}; download it again.")
        batch_labels = np.asarray(batch_labels, dtype=np.int64)
        if batch_labels.min() < 0 or batch_labels.max() > 9:
            raise DataError(f"{path}: labels must lie in 0..9; download it again.")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(batch_labels)
    if meta.get("vggedu") == SYNTHETIC_MARK:
        source = f"synthetic data in the CIFAR-10 layout (vggedu test data, {folder.name})"
    elif verify:
        source = "CIFAR-10 (official files, checksums verified)"
    else:
        source = "a folder in the CIFAR-10 layout (checksums not verified)"
    return CIFAR10Split(
        torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)), classes, source
    )


def channel_stats(images: torch.Tensor, *, chunk: int = 256) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images (N, C, H, W), pixels scaled to [0, 1].

    Streams ``chunk`` images at a time into float64 sums of x and x^2, so the extra memory is
    one chunk in float64 (6 MB for 256 CIFAR images), not a float copy of the whole set
    (1.2 GB for CIFAR-10 in float64). The standard deviation is the sample one (divisor count - 1).
    """
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].to(torch.float64)
        total += x.sum((0, 2, 3))
        total_sq += x.square_().sum((0, 2, 3))
    count = images.numel() // channels
    mean = total / count
    # sum((x - mean)^2) = sum(x^2) - count mean^2: exact enough in float64 for 8-bit pixels.
    var = (total_sq - count * mean.square()) / max(count - 1, 1)
    return tuple((mean / 255).tolist()), tuple((var.clamp(min=0).sqrt() / 255).tolist())


def stratified_split(labels: torch.Tensor, val_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of a training part and a held-out validation part of ``val_size`` images.

    Stratified: each class gives its share of ``val_size`` (rounded by largest remainder),
    so the validation part has the class balance of the whole. Which images are held out
    depends only on ``seed``. Both index tensors are sorted, disjoint and together cover
    every image. Notebook 05 uses the validation part for every choice; the test set is
    kept for one final measurement.
    """
    n = len(labels)
    if isinstance(val_size, bool) or not isinstance(val_size, int) or not 0 <= val_size < n:
        raise ValueError(
            f"val_size must be a whole number from 0 to {n - 1} (the training set has {n} images), got {val_size!r}"
        )
    generator = torch.Generator().manual_seed(2**40 + seed)  # a stream apart from the epochs' (seed, epoch) ones
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * val_size / n
    quota = exact.floor().long()
    remainder = val_size - int(quota.sum())
    if remainder:  # the classes with the largest fractional parts give one more image each
        quota[torch.argsort(exact - quota, descending=True, stable=True)[:remainder]] += 1
    held_out = []
    for label, k in zip(classes.tolist(), quota.tolist()):
        members = torch.nonzero(labels == label).flatten()
        held_out.append(members[torch.randperm(len(members), generator=generator)[:k]])
    val_mask = torch.zeros(n, dtype=torch.bool)
    val_mask[torch.cat(held_out)] = True
    return torch.nonzero(~val_mask).flatten(), torch.nonzero(val_mask).flatten()


def write_synthetic_cifar10(
    root: str | Path, *, n_train: int = 1000, n_test: int = 200, seed: int = 0, noise: float = 40.0
) -> Path:
    """Write small, learnable data in the official layout (5 train batches, a test batch, meta).

    Each class has its own colour and stripe orientation, plus noise and a random shift,
    so a small VGG learns it in a few epochs while chance stays at 10%. For tests and CI,
    which have no network. Returns the ``cifar-10-batches-py`` folder.
    """
    folder = cifar10_folder(root)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32]

    def make(n: int) -> tuple[np.ndarray, list[int]]:
        labels = rng.integers(0, 10, n)
        angle = labels * np.pi / 10
        phase = rng.uniform(0, 2 * np.pi, n)
        stripes = np.sin(
            (np.cos(angle)[:, None, None] * xx + np.sin(angle)[:, None, None] * yy) * 0.8 + phase[:, None, None]
        )
        hue = np.stack([np.cos(labels * 0.63), np.cos(labels * 0.63 + 2.1), np.cos(labels * 0.63 + 4.2)], 1)
        images = 128 + 50 * hue[:, :, None, None] + 45 * stripes[:, None] + rng.normal(0, noise, (n, 3, 32, 32))
        return np.clip(images, 0, 255).astype(np.uint8).reshape(n, 3072), labels.tolist()

    def dump(name: str, entry: dict) -> None:
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)

    per_batch = math.ceil(n_train / 5)
    for b in range(5):
        n = min(per_batch, n_train - b * per_batch)
        data, labels = make(n)
        dump(f"data_batch_{b + 1}", {"batch_label": f"training batch {b + 1} of 5", "data": data, "labels": labels})
    data, labels = make(n_test)
    dump("test_batch", {"batch_label": "testing batch 1 of 1", "data": data, "labels": labels})
    dump("batches.meta", {"label_names": list(CIFAR10_CLASSES), "num_vis": 3072, "vggedu": SYNTHETIC_MARK})
    return folder


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
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
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
    s = torch.randint(low, high + 1, (n,), generator=generator)
    # Offsets uniform over each image's own range: floor(u * (s - size + 1)), u in [0, 1).
    dy = (torch.rand(n, generator=generator) * (s - size + 1)).long()
    dx = (torch.rand(n, generator=generator) * (s - size + 1)).long()
    flip = torch.rand(n, generator=generator) < 0.5
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
        order = torch.randperm(n, generator=generator)
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
