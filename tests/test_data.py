"""The data module: the official layout read back exactly, clear errors, on-device augmentation."""

import pickle
import shutil

import numpy as np
import pytest
import torch

from vggedu.data import (
    CIFAR10_CLASSES,
    DataError,
    DeviceLoader,
    channel_stats,
    load_cifar10,
    torchvision_loader,
    write_synthetic_cifar10,
)


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
