import pytest

from vggedu.data import write_synthetic_cifar10


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """Small, learnable data in the official cifar-10-batches-py layout (no network in CI)."""
    root = tmp_path_factory.mktemp("cifar")
    write_synthetic_cifar10(root, n_train=1000, n_test=200, seed=0)
    return root
