"""Notebook 06's scale study: the protocol (fine-tuning from the fixed-scale model, one split for every
seed), test sizes that the pooling grid covers, every scheme scored, and the resumable files."""

import pytest
import torch

from vggedu import vgg
from vggedu.data import load_cifar10
from vggedu.evaluation import fully_convolutional
from vggedu.loaders import DeviceLoader
from vggedu.scales import SCHEMES, SETTINGS, START, TEST_SIZES, run_study, score_schemes, single_scale, study_configs
from vggedu.studies import unpack_correct
from vggedu.training import TrainConfig


def _pool_inputs(size):
    """The side of every max-pool's input for a square image of ``size`` (hooks on the real network)."""
    fcn = fully_convolutional(vgg("A", batch_norm=True, head="cifar", num_classes=10, width=0.0625)).eval()
    sides = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: sides.append(i[0].shape[-1]))
        for m in fcn.features
        if isinstance(m, torch.nn.MaxPool2d)
    ]
    with torch.no_grad():
        fcn(torch.randn(1, 3, size, size))
    for h in hooks:
        h.remove()
    return fcn, sides


@pytest.mark.parametrize("size", [*TEST_SIZES, 36, 48, 72, 96])
def test_the_test_sizes_lose_no_row_to_floor_pooling(size):
    fcn, sides = _pool_inputs(size)
    every_pool_even = all(side % 2 == 0 for side in sides)
    assert (fcn.dropped_pixels(size) == 0) == every_pool_even
    if size in TEST_SIZES:
        assert every_pool_even and fcn.dropped_pixels(size) == 0
    if size == 48:  # 48 -> 24 -> 12 -> 6 -> 3 -> 1: pool5 drops pool4's last row, the image's last 16 pixels
        assert sides == [48, 24, 12, 6, 3] and fcn.dropped_pixels(48) == 16


def test_the_single_test_size_is_the_multiple_of_32_nearest_the_training_range():
    assert {name: single_scale(scale) for name, scale in SETTINGS.items()} == {
        "fixed S=36": 32,
        "jittered S=[36,48]": 32,
        "jittered S=[36,72]": 64,
    }
    assert single_scale((48, 48)) == 32  # a tie goes to the smaller size
    assert single_scale((60, 90), sizes=(32, 64, 96)) == 64


def test_stage_two_fine_tunes_each_seeds_start_and_changes_only_the_scale_epochs_and_rate(tmp_path):
    base = TrainConfig(model="A", width=0.25, epochs=10, lr=0.1)
    first, second = study_configs(base, seeds=(0, 1), finetune_epochs=5, finetune_lr=0.01, checkpoints=tmp_path)
    assert list(first) == ["start S=36, seed 0", "start S=36, seed 1"]
    assert len(second) == 2 * len(SETTINGS)
    for label, config in second.items():
        seed = int(label.rsplit(" ", 1)[1])
        start = first[f"start S=36, seed {seed}"]
        assert (start.scale_min, start.scale_max) == START and start.split_seed == 0
        assert config.init_from == str(tmp_path / f"{start.run_name()}.pt")
        changed = set(config.changes_from(start))
        assert changed <= {"scale_min", "scale_max", "epochs", "lr", "init_from"}
        assert {"epochs", "lr", "init_from"} <= changed
    # every seed holds out the same validation images: two seeds can be fused
    assert first["start S=36, seed 0"].validation_seed == first["start S=36, seed 1"].validation_seed == 0


def test_every_scheme_is_scored_and_the_combination_is_the_mean(synthetic_root):
    split = load_cifar10(synthetic_root, train=False, verify=False)
    loader = DeviceLoader(split, 50, train=False)
    model = vgg("A", batch_norm=True, head="cifar", num_classes=10, width=0.0625).eval()
    probs, labels = score_schemes(model, loader, single=32)
    assert set(probs) == set(SCHEMES) and labels.shape == (len(split),)
    for p in probs.values():
        assert p.shape == (len(split), 10)
        torch.testing.assert_close(p.sum(1), torch.ones(len(split)))
    torch.testing.assert_close(
        probs["multi-crop & dense"], (probs["dense, multi-scale"] + probs["multi-crop, multi-scale"]) / 2
    )
    # at Q = 32 the centre crop is the whole image: the same as dense at one scale
    torch.testing.assert_close(probs["centre crop"], probs["dense, one scale"], rtol=1e-4, atol=1e-5)
    # asked for one scheme, only its passes run, and it is the same numbers
    for name in SCHEMES:
        alone, again = score_schemes(model, loader, single=32, schemes=[name])
        assert list(alone) == [name] and torch.equal(again, labels)
        torch.testing.assert_close(alone[name], probs[name])
    with pytest.raises(ValueError, match="schemes must name"):
        score_schemes(model, loader, single=32, schemes=["dense"])
    # at Q = 64 they differ: the centre crop sees the middle quarter of the image
    at_64, _ = score_schemes(model, loader, single=64)
    assert not torch.allclose(at_64["centre crop"], at_64["dense, one scale"], atol=1e-4)


@pytest.mark.slow
def test_the_study_runs_resumes_and_keeps_per_image_correctness(synthetic_root, tmp_path):
    splits = (
        load_cifar10(synthetic_root, train=True, verify=False),
        load_cifar10(synthetic_root, train=False, verify=False),
    )
    base = TrainConfig(
        model="A", width=0.0625, epochs=1, batch_size=100, train_size=300, val_size=100, mixed_precision=False, lr=0.05
    )
    settings = {"fixed S=36": (36, 36), "jittered S=[36,72]": (36, 72)}
    kw = dict(
        out=tmp_path / "scales",
        base=base,
        checkpoints=tmp_path / "ckpt",
        finetune_epochs=1,
        finetune_lr=0.01,
        seeds=(0, 1),
        settings=settings,
        device="cpu",
    )
    trained = []
    runs, scores = run_study(*splits, on_result=lambda k, r: trained.append(k), **kw)
    assert len(trained) == 2 + 4 and set(runs) == set(trained)
    assert (
        set(scores["val"])
        == set(scores["test"])
        == set(scores["chosen"])
        == {f"{name}, seed {s}" for name in settings for s in (0, 1)}
    )
    for label, by_scheme in scores["val"].items():
        assert set(by_scheme) == set(SCHEMES)
        for entry in by_scheme.values():
            assert unpack_correct(entry).mean() == pytest.approx(entry["accuracy"]) and entry["images"] == 100
        assert scores["chosen"][label] == max(SCHEMES, key=lambda s: by_scheme[s]["accuracy"])
        assert scores["test"][label]["images"] == 200
    assert set(scores["fusion"]["val"]) == {"fixed S=36, seeds 0+1", "jittered S=[36,72], seeds 0+1"}
    # the fine-tuned runs started from the stage-1 checkpoints, and say so
    jitter = runs["jittered S=[36,72], seed 0"]["config"]
    assert jitter["init_from"].endswith(".pt") and (jitter["scale_min"], jitter["scale_max"]) == (36, 72)
    # run again: nothing is trained or scored a second time, the same scores come back
    trained.clear()
    again = run_study(*splits, on_result=lambda k, r: trained.append(k), **kw)
    assert trained == [] and again[1] == scores
