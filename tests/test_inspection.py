"""Hooks, Grad-CAM against a finite-difference reference, and the ImageNet weights loader, offline."""

import os
import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision

from vggedu import vgg
from vggedu.inspection import (
    IMAGENET_NAMES,
    WeightsUnavailable,
    activations,
    grad_cam,
    imagenet_weights,
    imagenet_weights_file,
    layer_names,
    load_imagenet_weights,
)


def _small(config="A", batch_norm=True, seed=0):
    torch.manual_seed(seed)
    return vgg(config, batch_norm=batch_norm, head="cifar", num_classes=10, width=0.125).eval()


@pytest.mark.parametrize("config", ["A", "A-LRN", "C", "E"])
def test_layer_names_follow_the_paper(config):
    names = layer_names(_small(config, batch_norm=config != "A-LRN"))
    convs = [n for n in names if n.startswith("conv")]
    expected = {"A": 8, "A-LRN": 8, "C": 13, "E": 16}[config]
    assert len(convs) == expected and [n for n in names if n.startswith("pool")] == [f"pool{i}" for i in range(1, 6)]
    assert names["conv1_1"] == ("features.2" if config != "A-LRN" else "features.1")  # the ReLU, after BN
    assert ("lrn" in names) == (config == "A-LRN")


def test_hooks_return_every_block_with_the_right_shape():
    model = _small("D")
    x = torch.randn(3, 3, 32, 32)
    out = activations(model, x)
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    last_of_block = [convs[i].out_channels for i in (1, 3, 6, 9, 12)]  # D: 2, 2, 3, 3, 3 convolutions
    assert list(out) == [f"pool{i}" for i in range(1, 6)]
    for i, a in enumerate(out.values()):  # the size halves, the channels grow (to their width-scaled 512)
        assert a.shape == (3, last_of_block[i], 32 >> (i + 1), 32 >> (i + 1))
    # Every named layer, and the activations really are the layers' outputs.
    every = activations(model, x, list(layer_names(model)))
    assert (every["conv1_1"] >= 0).all() and every["conv1_1"].shape[-1] == 32
    torch.testing.assert_close(every["pool1"], F.max_pool2d(every["conv1_2"], 2))
    with torch.no_grad():
        torch.testing.assert_close(model.classifier(model.avgpool(every["pool5"]).flatten(1)), model(x))
    with pytest.raises(KeyError, match="conv1_1"):
        activations(model, x, ["conv9_9"])


def test_hooks_leave_the_model_as_it_was():
    model = _small("A").train()
    activations(model, torch.randn(2, 3, 32, 32))
    assert model.training and all(m.inplace for m in model.modules() if isinstance(m, torch.nn.ReLU))
    assert not any(m._forward_hooks for m in model.modules())


@pytest.mark.slow
def test_grad_cam_matches_a_finite_difference_reference():
    model = _small("A", seed=1).double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    # conv4_2's batch-norm output (4x4 maps, before the ReLU): finite differences at the ReLU's output would
    # straddle max-pool ties between zeros, where the derivative is not defined.
    index = int(layer_names(model)["conv4_2"].split(".")[1]) - 1
    layer = f"features.{index}"
    cams, logits = grad_cam(model, x, layer, target=3)
    cut = index + 1
    head, tail = model.features[:cut], model.features[cut:]

    def logit(a):  # the network from the layer's output on
        return model.classifier(model.avgpool(tail(a)).flatten(1))[0, 3]

    for n in range(2):
        with torch.no_grad():
            a = head(x[n : n + 1])
            grads = torch.zeros_like(a)
            eps = 1e-6
            for index in range(a.numel()):  # the gradient, one value at a time
                step = torch.zeros(a.numel(), dtype=a.dtype)
                step[index] = eps
                step = step.view_as(a)
                grads.view(-1)[index] = (logit(a + step) - logit(a - step)) / (2 * eps)
        weights = grads.mean((2, 3))[0]
        cam = torch.zeros(a.shape[-2:], dtype=a.dtype)
        for c in range(a.shape[1]):
            cam += weights[c] * a[0, c]
        cam = F.interpolate(cam.clamp_min(0)[None, None], size=(32, 32), mode="bilinear", align_corners=False)[0, 0]
        torch.testing.assert_close(cams[n], cam / cam.max(), rtol=1e-5, atol=1e-6)
    assert logits.shape == (2, 10) and cams.min() >= 0 and cams.amax((1, 2)).allclose(torch.ones(2, dtype=cams.dtype))


def test_grad_cam_defaults_to_the_predicted_class_and_leaves_no_trace():
    model = _small("B")
    x = torch.randn(4, 3, 32, 32)
    cams, logits = grad_cam(model, x, "conv4_2")  # a 4x4 map: the maps differ from image to image
    assert cams.shape == (4, 32, 32) and cams.flatten(1).std(1).min() > 0.01
    others = grad_cam(model, x, "conv4_2", target=(logits.argmax(1) + 1) % 10)[0]
    assert not torch.allclose(cams, others), "another class gives other maps: the default target is not arbitrary"
    torch.testing.assert_close(cams, grad_cam(model, x, "conv4_2", target=logits.argmax(1))[0])
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())


def test_grad_cam_defaults_to_the_last_layer_larger_than_1x1():
    from vggedu.inspection import last_spatial_layer

    model = _small("D")
    x = torch.randn(2, 3, 32, 32)
    assert last_spatial_layer(model, x) == "conv5_3"  # block 5 works on 2x2 maps; pool5 is 1x1 on 32x32 images
    assert last_spatial_layer(model, torch.randn(1, 3, 64, 64)) == "pool5"  # 2x2 at 64x64
    cams, _ = grad_cam(model, x)
    torch.testing.assert_close(cams, grad_cam(model, x, "conv5_3")[0])
    flat, _ = grad_cam(model, x, "pool5")  # what the old default gave: one value up-sampled, a flat map
    assert flat.flatten(1).std(1).max() < 1e-6 and cams.flatten(1).std(1).min() > 0.01


# --- ImageNet weights, offline ---------------------------------------------------------------


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache, and no network: a download attempt fails as it would offline."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "hub"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """torchvision's own VGG-11 and VGG-11-BN, randomly initialised, saved as their weights files would be (once)."""
    folder = tmp_path_factory.mktemp("torchvision")
    out = {}
    for name in ("vgg11", "vgg11_bn"):
        torch.manual_seed(0)
        reference = getattr(torchvision.models, name)(weights=None).eval()
        torch.save(reference.state_dict(), folder / f"{name}.pth")
        out[name] = (reference, folder / f"{name}.pth")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg11", "vgg11_bn"])
def test_torchvision_weights_load_strictly_by_name(name, saved, hub):
    reference, file = saved[name]
    model = load_imagenet_weights(name, path=file)
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
    if name != "vgg11":
        return
    # The same file in torchvision's cache is found there, with no path and no network.
    cached = imagenet_weights_file(name)
    cached.parent.mkdir(parents=True)
    os.link(file, cached)
    assert str(cached).startswith(str(hub)) and cached.name.startswith(name)
    cached_model = load_imagenet_weights(name)
    assert torch.equal(cached_model.features[0].weight, reference.features[0].weight)


def test_no_network_and_no_file_says_what_to_do(hub):
    with pytest.raises(WeightsUnavailable, match="Offline, download https://.*vgg16.*put it at"):
        load_imagenet_weights("vgg16")
    with pytest.raises(WeightsUnavailable, match="not in the cache"):
        load_imagenet_weights("vgg16", download=False)
    with pytest.raises(FileNotFoundError, match="no weights file"):
        load_imagenet_weights("vgg16", path=hub / "missing.pth")


@pytest.mark.slow
def test_weights_of_another_architecture_are_refused(saved, tmp_path, hub):
    file = saved["vgg11"][1]
    with pytest.raises(ValueError, match="not vgg11_bn's"):
        load_imagenet_weights("vgg11_bn", path=file)
    with pytest.raises(ValueError, match="not vgg13's"):
        load_imagenet_weights("vgg13", path=file)
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        load_imagenet_weights("vgg11", path=junk)
    assert junk.read_text() == "not a checkpoint"


def test_names_and_metadata_need_no_network():
    assert set(IMAGENET_NAMES) == {f"vgg{d}{s}" for d in (11, 13, 16, 19) for s in ("", "_bn")}
    weights = imagenet_weights("vgg16")
    assert len(weights.meta["categories"]) == 1000 and weights.url.startswith("https://")
    with pytest.raises(ValueError, match="vgg16_bn"):
        imagenet_weights("vgg15")


def test_a_download_goes_into_the_cache_folder_it_creates(saved, hub, monkeypatch):
    source = saved["vgg11"][1]

    def fake_download(url, dst, *args, **kwargs):  # the network, as torch.hub uses it: write to dst
        assert url == imagenet_weights("vgg11").url
        os.link(source, dst)  # fails if the folder does not exist, as the real download does

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    assert not hub.exists()
    model = load_imagenet_weights("vgg11")
    assert imagenet_weights_file("vgg11").is_file() and model.features[0].weight.shape == (64, 3, 3, 3)
