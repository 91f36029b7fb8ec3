"""The shipped classroom model: small, loads strictly into the model its run card describes, classifies."""

import torch

from vggedu import load_classroom_model
from vggedu.classroom import CLASSROOM_WEIGHTS
from vggedu.data import load_cifar10
from vggedu.loaders import DeviceLoader
from vggedu.train import PRESETS
from vggedu.training import TrainConfig, build_model


def test_the_file_is_small_and_its_card_is_the_cpu_preset():
    assert CLASSROOM_WEIGHTS.is_file() and CLASSROOM_WEIGHTS.stat().st_size < 10 * 2**20
    _, info = load_classroom_model()
    config = TrainConfig(**info["card"]["config"])
    assert {k: getattr(config, k) for k in PRESETS["cpu"]} == PRESETS["cpu"]
    assert info["card"]["data"] == "CIFAR-10 (JPEG copy)" and info["card"]["val_images"] == 5000
    assert 0.7 < info["test_accuracy"] < 0.95 and 0.7 < info["val_accuracy"] < 0.95
    assert len(info["history"]) == info["card"]["time_budget"]["epochs"]


def test_it_loads_strictly_into_the_model_its_card_describes():
    model, info = load_classroom_model()
    state = torch.load(CLASSROOM_WEIGHTS, map_location="cpu", weights_only=True)["model"]
    fresh = build_model(TrainConfig(**info["card"]["config"]))
    assert set(state) == set(fresh.state_dict())
    assert all(state[k].shape == v.shape for k, v in fresh.state_dict().items())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert not model.training


def test_it_classifies_a_batch(synthetic_root):
    model, info = load_classroom_model()
    split = load_cifar10(synthetic_root, train=False, verify=False)
    x, labels = next(iter(DeviceLoader(split, 64, train=False, mean=info["mean"], std=info["std"])))
    with torch.no_grad():
        probabilities = model(x).softmax(1)
    assert probabilities.shape == (64, 10)
    torch.testing.assert_close(probabilities.sum(1), torch.ones(64))
    assert len(set(probabilities.argmax(1).tolist())) > 1  # not one class for everything


def test_a_missing_or_foreign_file_is_reported(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="ships with vggedu"):
        load_classroom_model(path=tmp_path / "none.pt")
    other = tmp_path / "other.pt"
    torch.save({"model": {}}, other)
    with pytest.raises(ValueError, match="not a classroom model file"):
        load_classroom_model(path=other)
    junk = tmp_path / "junk.pt"
    junk.write_text("not a model")
    with pytest.raises(ValueError, match="not a readable classroom model"):
        load_classroom_model(path=junk)
    assert junk.read_text() == "not a model"


def test_the_shipped_files_stay_small():
    """Every shipped model and results file is under 3 MB, and all of them together under 10 MB."""
    from pathlib import Path

    import vggedu

    root = Path(vggedu.__file__).parent
    files = [p for folder in ("weights", "results") for p in (root / folder).iterdir() if p.is_file()]
    sizes = {p.name: p.stat().st_size for p in files}
    assert all(size < 3_000_000 for size in sizes.values()), sizes
    assert sum(sizes.values()) < 10_000_000, sizes
