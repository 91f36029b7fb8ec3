"""Section 3.2 on the CPU: FC -> conv, dense / multi-scale / multi-crop evaluation, fusion, scale jitter.

Each scheme is checked against a slow reference written here, one image and one position at a time.
"""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from vggedu import VGG_CONFIGS, vgg
from vggedu.data import CIFAR10Split
from vggedu.evaluation import (
    crop_offsets,
    dense_probabilities,
    fully_convolutional,
    fuse,
    multi_crop_probabilities,
    multi_scale_probabilities,
    scheme_accuracy,
)
from vggedu.loaders import DeviceLoader, rescale_crop_flip, scale_draws
from vggedu.runs import run_card, train
from vggedu.training import TrainConfig

HEAD_SIZE = {"imagenet": 224, "cifar": 32}


def _model(config="A", head="cifar", width=0.125, seed=0):
    torch.manual_seed(seed)
    model = vgg(config, batch_norm=True, num_classes=10, head=head, width=width)
    # Random batch-norm statistics, so the conversion is tested with them doing something.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("head", ["imagenet", "cifar"])
@pytest.mark.parametrize("config", sorted(VGG_CONFIGS))
def test_the_converted_network_gives_the_same_logits_at_the_training_size(config, head):
    model = _model(config, head, width=0.0625 if head == "imagenet" else 0.125)
    fcn = fully_convolutional(model)
    x = torch.randn(2, 3, HEAD_SIZE[head], HEAD_SIZE[head])
    scores = fcn(x)
    assert scores.shape == (2, 10, 1, 1)
    torch.testing.assert_close(scores.flatten(1), model(x), rtol=1e-4, atol=1e-5)
    # The fully connected layers are gone; the original is untouched.
    assert not any(isinstance(m, torch.nn.Linear) for m in fcn.modules())
    assert isinstance(model.classifier[0], torch.nn.Linear)


@pytest.mark.parametrize(
    ("head", "size", "side"),
    [
        ("imagenet", 224, 1),
        ("imagenet", 256, 2),
        ("imagenet", 288, 3),
        ("imagenet", 384, 6),
        ("cifar", 32, 1),
        ("cifar", 64, 2),
        ("cifar", 100, 3),
        ("cifar", 128, 4),
    ],
)
def test_the_score_map_has_one_position_per_stride_of_32(head, size, side):
    fcn = fully_convolutional(_model("A", head, width=0.0625))
    assert fcn(torch.randn(1, 3, size, size)).shape == (1, 10, side, side)
    assert fcn.map_size(size) == side


def _slow_score_map(model, x):
    """The original classifier run on every 7x7 (ImageNet) or 1x1 (CIFAR) window of the feature map."""
    features = model.features(x)
    k = 7 if model.head == "imagenet" else 1
    rows, cols = features.shape[2] - k + 1, features.shape[3] - k + 1
    scores = torch.zeros(x.shape[0], 10, rows, cols)
    for i in range(rows):
        for j in range(cols):
            scores[:, :, i, j] = model.classifier(features[:, :, i : i + k, j : j + k].flatten(1))
    return scores


def _slow_dense(model, x, size):
    out = []
    for image in x:  # one image at a time
        image = F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False)
        p = _slow_score_map(model, image).mean((2, 3)).softmax(1)
        q = _slow_score_map(model, image.flip(3)).mean((2, 3)).softmax(1)
        out.append((p + q) / 2)
    return torch.cat(out)


@pytest.mark.parametrize(("head", "size"), [("imagenet", 256), ("cifar", 64), ("cifar", 96)])
def test_dense_evaluation_equals_the_classifier_slid_over_the_feature_map(head, size):
    model = _model("A", head, width=0.0625)
    x = torch.randn(2, 3, size, size)
    torch.testing.assert_close(dense_probabilities(fully_convolutional(model), x), _slow_dense(model, x, size))


def test_multi_scale_is_the_mean_of_dense_evaluations_at_each_size():
    model = _model("B", "cifar")
    x = torch.randn(3, 3, 32, 32)
    sizes = (32, 48, 64)
    slow = torch.stack([_slow_dense(model, x, q) for q in sizes]).mean(0)
    torch.testing.assert_close(multi_scale_probabilities(fully_convolutional(model), x, sizes), slow)


def test_multi_crop_averages_every_crop_and_its_mirror_image():
    model = _model("A", "cifar")
    x = torch.randn(2, 3, 32, 32)
    got = multi_crop_probabilities(model, x, (40, 48), grid=3)
    for n in range(2):
        probs = []
        for q in (40, 48):
            image = F.interpolate(x[n : n + 1], size=(q, q), mode="bilinear", align_corners=False)
            for top in crop_offsets(q, 32, 3):
                for left in crop_offsets(q, 32, 3):
                    c = image[:, :, top : top + 32, left : left + 32]
                    probs += [model(c).softmax(1), model(c.flip(3)).softmax(1)]
        assert len(probs) == 36
        torch.testing.assert_close(got[n : n + 1], torch.cat(probs).mean(0, keepdim=True))
    assert crop_offsets(48, 32, 3) == [0, 8, 16] and crop_offsets(40, 32, 1) == [4]


def test_fusion_averages_soft_max_outputs_and_refuses_mismatched_ones():
    a, b = torch.rand(4, 10).softmax(1), torch.rand(4, 10).softmax(1)
    torch.testing.assert_close(fuse([a, b]), (a + b) / 2)
    with pytest.raises(ValueError, match="same images"):
        fuse([a, b[:3]])
    with pytest.raises(ValueError, match="at least one"):
        fuse([])


def test_scheme_accuracy_counts_correct_top_1():
    x = torch.eye(10)[:, :, None, None].expand(10, 10, 1, 1).reshape(10, 10, 1, 1)
    labels = torch.arange(10)
    labels[0] = 5  # one wrong
    accuracy, probabilities, kept = scheme_accuracy(lambda b: b.flatten(1), [(x, labels)], keep=True)
    assert accuracy == pytest.approx(0.9) and probabilities.shape == (10, 10) and torch.equal(kept, labels)


def test_conversion_errors_say_what_was_wrong():
    with pytest.raises(TypeError, match="vggedu VGG"):
        fully_convolutional(torch.nn.Linear(2, 2))
    fcn = fully_convolutional(_model("A", "imagenet", width=0.0625))
    with pytest.raises(ValueError, match="at least 224x224"):
        fcn(torch.randn(1, 3, 200, 200))
    with pytest.raises(ValueError, match="does not fit"):
        crop_offsets(30, 32, 3)


# --- scale jittering --------------------------------------------------------------------------


def test_rescale_crop_flip_matches_interpolate_then_slice():
    torch.manual_seed(0)
    x = torch.randn(40, 3, 32, 32)
    side, dy, dx, flip = scale_draws(40, (32, 72), 32, torch.Generator().manual_seed(1))
    fast = rescale_crop_flip(x, side, dy, dx, flip)
    for i in range(40):
        s = int(side[i])
        slow = F.interpolate(x[i : i + 1], size=(s, s), mode="bilinear", align_corners=False)
        slow = slow[:, :, dy[i] : dy[i] + 32, dx[i] : dx[i] + 32]
        slow = slow.flip(3) if flip[i] else slow
        torch.testing.assert_close(fast[i : i + 1], slow, atol=1e-4, rtol=1e-4)


def _scale_loader(n=3000, scale=(36, 44)):
    # Image i holds the value i in every pixel, so a crop says which image it came from.
    images = (torch.arange(n) % 256).to(torch.uint8)[:, None, None, None].expand(n, 3, 32, 32).contiguous()
    split = CIFAR10Split(images, torch.arange(n) % 10, ("c",) * 10, "test")
    return DeviceLoader(split, 500, train=True, seed=3, scale=scale, mean=(0, 0, 0), std=(1 / 255,) * 3)


def test_scale_jitter_is_fixed_by_seed_and_epoch_and_covers_its_range():
    loader = _scale_loader()
    loader.set_epoch(2)
    first = loader.epoch_draws()
    loader.set_epoch(2)
    assert torch.equal(loader.epoch_draws(), first), "same (seed, epoch), same draws"
    loader.set_epoch(3)
    assert not torch.equal(loader.epoch_draws(), first)
    side, dy, dx, flip = first[4], first[1], first[2], first[3]
    counts = torch.bincount(side - 36, minlength=9)
    assert len(counts) == 9 and counts.min() > 0.6 * 3000 / 9 and counts.max() < 1.4 * 3000 / 9
    assert (dy >= 0).all() and (dy <= side - 32).all() and (dx <= side - 32).all()
    for s in (36, 44):  # both ends of every side's offset range occur
        assert dy[side == s].min() == 0 and dy[side == s].max() == s - 32
    assert 0.45 < flip.float().mean() < 0.55


def test_scale_jittered_batches_are_the_images_rescaled():
    loader = _scale_loader()
    x, labels = next(iter(loader))
    assert x.shape == (500, 3, 32, 32) and x.dtype == torch.float32
    order = loader.epoch_draws()[0, :500]
    # Constant images stay constant under rescaling: each crop is its own image's value.
    torch.testing.assert_close(x[:, 0, 5, 7], (order % 256).float())


def test_scale_is_checked():
    with pytest.raises(ValueError, match="32 <= low <= high"):
        _scale_loader(scale=(30, 40))
    with pytest.raises(ValueError, match="scale_min and scale_max"):
        TrainConfig(scale_min=40, scale_max=36)
    with pytest.raises(ValueError, match="scale_min and scale_max"):
        TrainConfig(scale_min=36)
    with pytest.raises(ValueError, match="TrainConfig.scale_max must be"):
        TrainConfig(scale_min=36, scale_max=20)
    assert TrainConfig(scale_min=36, scale_max=72).scale == (36, 72) and TrainConfig().scale is None


@pytest.mark.slow
def test_a_scale_jittered_run_trains_and_says_so(synthetic_root):
    from vggedu.data import load_cifar10

    splits = (
        load_cifar10(synthetic_root, train=True, verify=False),
        load_cifar10(synthetic_root, train=False, verify=False),
    )
    # 3 epochs: after 2, one thread or two (which order the sums run in) decides between 27 % and 36 %
    config = TrainConfig(model="A", width=0.125, batch_size=50, lr=0.05, dropout=0.0, val_size=100, epochs=3)
    jittered = dataclasses.replace(config, scale_min=36, scale_max=48)
    result = train(jittered, *splits, device="cpu", progress=False, measure_test=False)
    assert result.val_accuracy > 0.3, result.history  # chance is 0.1
    assert "36..48" in result.card["augmentation"]
    card = run_card(config, torch.device("cpu"), data="synthetic", train_images=900, test_images=200)
    assert "padded" in card["augmentation"]
