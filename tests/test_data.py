"""The data module: the official layout read back exactly, clear errors, on-device augmentation."""

import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from vggedu.data import (
    CIFAR10_CLASSES,
    CIFAR10Split,
    DataError,
    channel_stats,
    load_cifar10,
    write_synthetic_cifar10,
)
from vggedu.loaders import DeviceLoader, torchvision_loader


def _write_official(folder, batches):
    """An independent writer of the official format: dict with 'data' (N, 3072) uint8 and 'labels'."""
    folder.mkdir(parents=True)
    for name, (data, labels) in batches.items():
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": data, "labels": labels.tolist()}, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CIFAR10_CLASSES), "num_vis": 3072}, f, protocol=2)


def test_official_layout_is_read_back_exactly(tmp_path):
    rng = np.random.default_rng(1)
    batches = {
        name: (rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n))
        for name, n in [
            ("data_batch_1", 7),
            ("data_batch_2", 5),
            ("data_batch_3", 6),
            ("data_batch_4", 3),
            ("data_batch_5", 4),
            ("test_batch", 9),
        ]
    }
    _write_official(tmp_path / "cifar-10-batches-py", batches)
    train = load_cifar10(tmp_path, train=True, verify=False)
    test = load_cifar10(tmp_path / "cifar-10-batches-py", train=False, verify=False)
    expected = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    assert train.images.dtype == torch.uint8 and train.images.shape == (25, 3, 32, 32)
    assert train.labels.dtype == torch.int64
    # Row-major (N, 3072) = three 1024-value planes, R then G then B, each 32 rows of 32.
    assert torch.equal(train.images, torch.from_numpy(expected.reshape(25, 3, 32, 32)))
    assert train.images[0, 1, 2, 3] == expected[0, 1024 + 2 * 32 + 3]
    assert torch.equal(test.labels, torch.from_numpy(batches["test_batch"][1]))
    assert train.classes == CIFAR10_CLASSES
    assert "not verified" in train.source


def test_synthetic_data_is_balanced_and_marked(synthetic_root):
    train = load_cifar10(synthetic_root, train=True, verify=False)
    assert len(train) == 1000 and train.images.shape[1:] == (3, 32, 32)
    assert torch.bincount(train.labels, minlength=10).min() > 50
    assert "synthetic" in train.source


def test_verify_rejects_files_that_are_not_the_official_release(synthetic_root):
    with pytest.raises(DataError, match=r"data_batch_1 does not match the official CIFAR-10 checksum.*--no-verify"):
        load_cifar10(synthetic_root, train=True, verify=True)


def test_missing_folder_and_missing_file(tmp_path, synthetic_root):
    with pytest.raises(DataError, match=r"no CIFAR-10 folder .*download_cifar10.*--download"):
        load_cifar10(tmp_path / "nowhere")
    copy = tmp_path / "copy"
    shutil.copytree(synthetic_root, copy)
    (copy / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match=r"test_batch is missing"):
        load_cifar10(copy, train=False, verify=False)


def test_truncated_batch_file_gets_a_clear_error(tmp_path, synthetic_root):
    copy = tmp_path / "copy"
    shutil.copytree(synthetic_root, copy)
    path = copy / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match=r"data_batch_3 is not a readable CIFAR-10 batch file.*truncated or corrupt"):
        load_cifar10(copy, train=True, verify=False)


def test_malformed_batch_gets_a_clear_error(tmp_path, synthetic_root):
    copy = tmp_path / "copy"
    shutil.copytree(synthetic_root, copy)
    with open(copy / "cifar-10-batches-py" / "data_batch_2", "wb") as f:
        pickle.dump({"data": np.zeros((4, 100), dtype=np.uint8), "labels": [0, 1, 2, 3]}, f)
    with pytest.raises(DataError, match=r"data_batch_2: 'data' should be a uint8 array of shape \(N, 3072\)"):
        load_cifar10(copy, train=True, verify=False)


def test_channel_stats():
    images = torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8)
    mean, std = channel_stats(images)
    x = images.numpy().astype(np.float64) / 255
    assert np.allclose(mean, x.mean(axis=(0, 2, 3)))
    assert np.allclose(std, x.std(axis=(0, 2, 3), ddof=1))


@pytest.fixture(scope="module")
def small_split(synthetic_root):
    return load_cifar10(synthetic_root, train=True, verify=False).subset(300)


def _batches(loader, epoch):
    loader.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y in loader]


def test_augmentation_is_deterministic_per_seed(small_split):
    a = _batches(DeviceLoader(small_split, 64, train=True, seed=3), epoch=1)
    b = _batches(DeviceLoader(small_split, 64, train=True, seed=3), epoch=1)
    c = _batches(DeviceLoader(small_split, 64, train=True, seed=4), epoch=1)
    d = _batches(DeviceLoader(small_split, 64, train=True, seed=3), epoch=2)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0]) and not torch.equal(a[0][0], d[0][0])
    assert len(a) == 300 // 64  # drop_last while training
    x, y = a[0]
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_each_augmented_image_is_a_padded_crop_possibly_mirrored(small_split):
    loader = DeviceLoader(small_split, 300, train=True, seed=0, drop_last=False, mean=(0, 0, 0), std=(1 / 255,) * 3)
    x, y = next(iter(loader))
    padded = torch.nn.functional.pad(small_split.images, (4, 4, 4, 4)).float()
    flips = 0
    for i in range(0, 300, 15):
        # find the source image by its label and content: try every image with that label
        found = False
        for j in torch.nonzero(small_split.labels == y[i]).flatten().tolist():
            for dy in range(9):
                for dx in range(9):
                    crop = padded[j, :, dy : dy + 32, dx : dx + 32]
                    if torch.equal(crop, x[i]) or torch.equal(crop.flip(-1), x[i]):
                        flips += not torch.equal(crop, x[i])
                        found = True
                        break
                if found:
                    break
            if found:
                break
        assert found, f"augmented image {i} is not a 32x32 crop of a padded training image"
    assert 0 < flips < 20  # both mirrored and unmirrored images occur


def test_eval_loader_keeps_order_and_everything(small_split):
    loader = DeviceLoader(small_split, 128, train=False, channels_last=True, dtype=torch.bfloat16)
    xs, ys = zip(*loader)
    assert torch.equal(torch.cat(ys), small_split.labels)
    assert sum(len(x) for x in xs) == 300 and xs[0].dtype == torch.bfloat16
    assert xs[0].is_contiguous(memory_format=torch.channels_last)


def test_torchvision_loader_path(small_split):
    loader = torchvision_loader(small_split, 50, train=True, num_workers=0)
    x, y = next(iter(loader))
    assert x.shape == (50, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_synthetic_writer_is_deterministic(tmp_path):
    a = write_synthetic_cifar10(tmp_path / "a", n_train=50, n_test=10, seed=5)
    b = write_synthetic_cifar10(tmp_path / "b", n_train=50, n_test=10, seed=5)
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in ["data_batch_1", "test_batch", "batches.meta"])


def test_confusion_matrix_counts():
    from vggedu.plots import confusion_matrix

    matrix = confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 3)
    assert matrix.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


@pytest.mark.slow
def test_channel_stats_streams_without_copying_the_set():
    """10,000 CIFAR-sized images (30 MB as uint8): a float64 copy of them would be 245 MB."""
    script = (
        "import resource, torch\n"
        "from vggedu.data import channel_stats\n"
        "images = torch.full((10_000, 3, 32, 32), 7, dtype=torch.uint8)\n"
        "channel_stats(images[:2048])  # warm up: allocator, kernels\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "mean, std = channel_stats(images)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) < 32, f"peak memory grew by {result.stdout.strip()} MB"


def test_the_official_checksums_are_torchvisions():
    import torchvision

    from vggedu.data import META_FILE, TEST_FILES, TRAIN_FILES

    tv = torchvision.datasets.CIFAR10
    assert [list(f) for f in TRAIN_FILES] == tv.train_list and [list(f) for f in TEST_FILES] == tv.test_list
    assert META_FILE == (tv.meta["filename"], tv.meta["md5"])


def test_importing_vggedu_does_not_import_torchvision():
    """torchvision costs about 2 s of every kernel start and subprocess; only the download and the
    classic loader need it, and they import it themselves."""
    script = "import sys, vggedu, vggedu.notebook, vggedu.runs, vggedu.plots\nprint('torchvision' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_channel_stats_in_chunks_equal_one_pass():
    images = torch.randint(0, 256, (1000, 3, 5, 5), dtype=torch.uint8)
    chunked, whole = channel_stats(images, chunk=7), channel_stats(images, chunk=1000)
    assert chunked[0] == pytest.approx(whole[0], rel=1e-12) and chunked[1] == pytest.approx(whole[1], rel=1e-12)


def test_an_epochs_draws_are_made_once(small_split, monkeypatch):
    """Order, offsets and flips: drawn once per epoch, not once per batch (each draw is a host-to-device copy)."""
    calls = {"randint": 0, "rand": 0, "randperm": 0}
    for name in calls:
        original = getattr(torch, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(torch, name, counted)
    batches = _batches(DeviceLoader(small_split, 20, train=True, seed=0), epoch=0)
    assert len(batches) == 15
    assert calls == {"randint": 2, "rand": 1, "randperm": 1}


def _position_images(n):
    """uint8 images whose pixel (y, x) holds y + 1 in channel 0 and x + 1 in channel 1 (padding stays 0)."""
    ramp = torch.arange(1, 33, dtype=torch.uint8)
    image = torch.stack(
        [ramp[:, None].expand(32, 32), ramp[None, :].expand(32, 32), torch.zeros(32, 32, dtype=torch.uint8)]
    )
    return CIFAR10Split(image.expand(n, 3, 32, 32).clone(), torch.arange(n) % 10, CIFAR10_CLASSES, "positions")


def test_crops_reach_all_81_positions_evenly_and_flip_half_the_time():
    loader = DeviceLoader(_position_images(2025), 2025, train=True, seed=0, mean=(0, 0, 0), std=(1 / 255,) * 3)
    offsets, flips = [], []
    for epoch in range(4):
        x, _ = _batches(loader, epoch)[0]
        flipped = x[:, 1, 16, 16] < x[:, 1, 16, 15]  # columns read backwards
        # Crop row/column 16 shows image row dy + 12 (value dy + 13); mirrored, column 16 shows dx + 11.
        dy = x[:, 0, 16, 16].long() - 13
        dx = torch.where(flipped, x[:, 1, 16, 16].long() - 12, x[:, 1, 16, 16].long() - 13)
        offsets.append(dy * 9 + dx)
        flips.append(flipped)
    counts = torch.bincount(torch.cat(offsets), minlength=81)
    assert len(counts) == 81 and counts.min() > 0, "every one of the 9 x 9 offsets occurs"
    expected = 4 * 2025 / 81  # 100 per position
    assert counts.min() > 0.6 * expected and counts.max() < 1.4 * expected, counts.tolist()
    assert 0.45 < torch.cat(flips).float().mean().item() < 0.55


def test_stratified_split_is_disjoint_covering_balanced_and_fixed_by_the_seed():
    from vggedu.data import stratified_split

    labels = torch.arange(1000) % 10
    labels[:37] = 3  # one class larger than the others
    fit, val = stratified_split(labels, 150, seed=1)
    assert len(val) == 150 and len(fit) == 850
    assert torch.equal(torch.sort(torch.cat([fit, val])).values, torch.arange(1000))
    share = torch.bincount(labels[val], minlength=10).double() / 150
    whole = torch.bincount(labels, minlength=10).double() / 1000
    assert (share - whole).abs().max() < 1 / 150 + 1e-9  # each class within one image of its share
    assert torch.equal(stratified_split(labels, 150, seed=1)[1], val)
    assert not torch.equal(stratified_split(labels, 150, seed=2)[1], val)
    with pytest.raises(ValueError, match="val_size must be a whole number from 0 to 999"):
        stratified_split(labels, 1000)


def test_processes_share_each_global_batch_exactly(small_split):
    one = _batches(DeviceLoader(small_split, 60, train=True, seed=5), epoch=2)
    ranks = [
        _batches(DeviceLoader(small_split, 60, train=True, seed=5, rank=r, world_size=3), epoch=2) for r in range(3)
    ]
    assert [len(b) for b in ranks] == [len(one)] * 3
    for step, (x, y) in enumerate(one):
        assert torch.equal(torch.cat([ranks[r][step][0] for r in range(3)]), x)
        assert torch.equal(torch.cat([ranks[r][step][1] for r in range(3)]), y)
    # Evaluation shards, image by image: label every image with its index, then every index must come
    # exactly once, each with its own pixels (rank r holds images r, r + 2, r + 4, ...).
    import dataclasses

    tagged = dataclasses.replace(small_split, labels=torch.arange(300))
    whole = next(iter(DeviceLoader(tagged, 300, train=False)))[0]
    shards = [list(DeviceLoader(tagged, 64, train=False, rank=r, world_size=2)) for r in range(2)]
    for r, shard in enumerate(shards):
        index = torch.cat([y for _, y in shard])
        assert torch.equal(index, torch.arange(r, 300, 2))
        assert torch.equal(torch.cat([x for x, _ in shard]), whole[index])
    assert torch.equal(torch.cat([y for shard in shards for _, y in shard]).sort().values, torch.arange(300))
    with pytest.raises(ValueError, match="must be divisible by the 3 processes"):
        DeviceLoader(small_split, 64, train=True, rank=0, world_size=3)


@pytest.mark.parametrize(
    "n_train, sizes", [(6, [2, 1, 1, 1, 1]), (5, [1] * 5), (1000, [200] * 5), (1003, [201] * 3 + [200] * 2)]
)
def test_synthetic_data_of_any_size_fills_the_five_files(tmp_path, n_train, sizes):
    import pickle

    folder = write_synthetic_cifar10(tmp_path, n_train=n_train, n_test=3)
    got = [len(pickle.load(open(folder / f"data_batch_{b}", "rb"), encoding="latin1")["labels"]) for b in range(1, 6)]
    assert got == sizes and len(load_cifar10(tmp_path, train=True, verify=False)) == n_train
    with pytest.raises(ValueError, match="at least 5 training images"):
        write_synthetic_cifar10(tmp_path / "x", n_train=4)
