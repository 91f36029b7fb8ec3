"""CIFAR-10 for VGG: download, read the official files, synthetic test data, statistics and splits.

* :func:`download_cifar10` fetches the official release with torchvision (MD5 checked).
* :func:`load_cifar10` reads the official ``cifar-10-batches-py`` layout into uint8
  tensors (N, 3, 32, 32) and int64 labels (N,), checking every file first.
* :func:`write_synthetic_cifar10` writes small, learnable data in the same layout (tests, CI).
* :func:`load_splits` reads both splits at once (and names a copy's data for the run cards).
* :func:`channel_stats` and :func:`stratified_split`: normalisation statistics, validation split.

Batches (the device loader, augmentation) are :mod:`vggedu.loaders`.

Introduced in notebook 04.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10Split",
    "DataError",
    "channel_stats",
    "cifar10_folder",
    "download_cifar10",
    "load_cifar10",
    "load_splits",
    "stratified_split",
    "write_synthetic_cifar10",
]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# The constants most code uses: per-channel mean and standard deviation of the official
# training set, pixels in [0, 1]. (A widespread variant, std (0.2023, 0.1994, 0.2010), is
# the mean of per-image standard deviations, not the standard deviation of the pixels.)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

FOLDER = "cifar-10-batches-py"
# Official file names and MD5 checksums, as torchvision.datasets.CIFAR10 records them (a test checks they
# still agree). Written out so that importing vggedu does not import torchvision (2 s on 2 cores).
TRAIN_FILES: tuple[tuple[str, str], ...] = (
    ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
    ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
    ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
    ("data_batch_4", "634d18415352ddfa80567beed471001a"),
    ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
)
TEST_FILES: tuple[tuple[str, str], ...] = (("test_batch", "40351d587109b95175f43aff81a1287e"),)
META_FILE: tuple[str, str] = ("batches.meta", "5ff9c542aee3614f3951f8cda6e48888")
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
    import torchvision  # only here: importing it costs about 2 s

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


def load_splits(
    root: str | Path, *, verify: bool = True, label: str | None = None, download: bool = False
) -> tuple[CIFAR10Split, CIFAR10Split]:
    """The training and test splits from ``root`` (downloaded first if asked), both named ``label`` if given.

    The one place that reads both splits: the command lines, the grids, the notebooks and the
    benchmarks all come through here, so a copy's label (e.g. ``"CIFAR-10 (JPEG copy)"``) reaches
    every run card.
    """
    if download:
        download_cifar10(root)
    train, test = load_cifar10(root, train=True, verify=verify), load_cifar10(root, train=False, verify=verify)
    if label:
        train, test = (dataclasses.replace(split, source=label) for split in (train, test))
    return train, test


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
        held_out.append(members[torch.randperm(len(members), generator=generator, device="cpu")[:k]])
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

    def dump(name: str, entry: dict) -> None:  # atomic: a reader never sees a half-written file
        partial = folder / f".{name}.{os.getpid()}.partial"
        with open(partial, "wb") as f:
            pickle.dump(entry, f, protocol=2)
        os.replace(partial, folder / name)

    if isinstance(n_train, bool) or not isinstance(n_train, int) or n_train < 5 or n_test < 1:
        raise ValueError(
            f"write at least 5 training images (one per batch file) and 1 test image; got {n_train}, {n_test}"
        )
    for b in range(5):  # as evenly as the five files allow: 6 images are 2, 1, 1, 1, 1
        data, labels = make(n_train // 5 + (b < n_train % 5))
        dump(f"data_batch_{b + 1}", {"batch_label": f"training batch {b + 1} of 5", "data": data, "labels": labels})
    data, labels = make(n_test)
    dump("test_batch", {"batch_label": "testing batch 1 of 1", "data": data, "labels": labels})
    dump("batches.meta", {"label_names": list(CIFAR10_CLASSES), "num_vis": 3072, "vggedu": SYNTHETIC_MARK})
    return folder
