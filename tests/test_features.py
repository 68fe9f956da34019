"""extract_features: layers, pooling, normalisation and every accepted input, against features computed by
hand from the model's own modules."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import visionzoo
from visionzoo.features import LayerFeatures, extract_features, layer_names, preprocess_transform

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return visionzoo.create_model("resnet18", num_classes=5).eval()


@pytest.fixture(scope="module")
def batch():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _trunk(model, x, upto):
    """ResNet activations by hand: the stem and blocks up to `upto` (inclusive)."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    for name in ("layer1", "layer2", "layer3", "layer4"):
        x = getattr(model, name)(x)
        if name == upto:
            return x
    raise AssertionError(upto)


def test_default_is_pooled_penultimate_normalised(resnet, batch):
    feats = extract_features(resnet, batch, progress=False)
    with torch.no_grad():
        ref = _trunk(resnet, batch, "layer4").mean((2, 3))
        # the same vectors the classifier head sees
        torch.testing.assert_close(resnet.fc(ref), resnet(batch))
    assert feats.shape == (3, 512) and feats.dtype == torch.float32
    torch.testing.assert_close(feats, F.normalize(ref, dim=1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(3))
    assert LayerFeatures(resnet).layer == "flatten"


def test_layers_and_pooling(resnet, batch):
    with torch.no_grad():
        l3 = _trunk(resnet, batch, "layer3")  # (3, 256, 2, 2)
    raw = {"avg": l3.mean((2, 3)), "max": l3.amax((2, 3)),
           "gem": l3.clamp(min=1e-6).pow(3).mean((2, 3)).pow(1 / 3), None: l3.flatten(1)}
    for pool, ref in raw.items():
        feats = extract_features(resnet, batch, layer="layer3", pool=pool, normalize=False, progress=False)
        torch.testing.assert_close(feats, ref, rtol=1e-5, atol=1e-6, msg=f"pool={pool}")
    assert raw["gem"].ne(raw["avg"]).any() and raw["gem"].le(raw["max"] + 1e-6).all()
    gem4 = extract_features(resnet, batch, layer="layer3", pool="gem", gem_p=4, normalize=False, progress=False)
    torch.testing.assert_close(gem4, l3.clamp(min=1e-6).pow(4).mean((2, 3)).pow(1 / 4), rtol=1e-5, atol=1e-6)
    # an exact node name inside a block is the same tensor as the block's name (its last node)
    exact = extract_features(resnet, batch, layer="layer3.1.relu_1", normalize=False, progress=False)
    torch.testing.assert_close(exact, raw["avg"])
    # the logits layer: already a vector, no pooling
    logits = extract_features(resnet, batch, layer="fc", normalize=False, progress=False)
    torch.testing.assert_close(logits, resnet(batch), rtol=1e-5, atol=1e-6)
    # normalisation: unit rows, same direction
    normed = extract_features(resnet, batch, layer="layer3", pool="max", progress=False)
    torch.testing.assert_close(normed, raw["max"] / raw["max"].norm(dim=1, keepdim=True), rtol=1e-5, atol=1e-6)


def test_bad_layer_lists_close_names(resnet, batch):
    with pytest.raises(ValueError) as e:
        extract_features(resnet, batch, layer="layr3", progress=False)
    msg = str(e.value)
    assert "'layr3' is not a node of resnet18" in msg and "Closest: layer3" in msg and "layer_names" in msg
    with pytest.raises(ValueError, match=r"layer4\.1\.relu_1"):
        extract_features(resnet, batch, layer="layer4.1.relu_7", progress=False)
    with pytest.raises(ValueError, match="pool must be one of"):
        extract_features(resnet, batch, pool="mean", progress=False)
    with pytest.raises(ValueError, match="pool='gem' needs a feature map"):  # the default layer is pooled already
        extract_features(resnet, batch, pool="gem", progress=False)
    with pytest.raises(ValueError, match="no images"):
        extract_features(resnet, [], progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        extract_features(resnet, batch, batch_size=0)
    names = layer_names(resnet)
    assert names[0] == "x" and names[-2:] == ["flatten", "fc"] and "layer2.0.downsample.1" in names


def test_head_input_for_sequential_classifier_and_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
                          nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(5, 3, 12, 12)
    assert LayerFeatures(model).layer == "5"  # the input of the final Linear
    with torch.no_grad():
        ref = model[:6](x)
    for batch_size in (1, 2, 64):
        torch.testing.assert_close(extract_features(model, x, normalize=False, batch_size=batch_size, progress=False),
                                   ref)
    model.train()
    extract_features(model, x, progress=False)
    assert model.training and model[0].training  # the caller's mode is restored


def test_backbone_of_a_detector_is_used():
    det = visionzoo.create_model("faster_rcnn_resnet18_fpn")
    extractor = LayerFeatures(det, layer="backbone.body.layer2")
    assert extractor.module_path == "backbone.body" and extractor.layer == "backbone.body.layer2"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        body = det.backbone.body
        ref = body.layer2(body.layer1(body.maxpool(body.relu(body.bn1(body.conv1(x)))))).mean((2, 3))
    torch.testing.assert_close(extractor(x), F.normalize(ref, dim=1), rtol=1e-5, atol=1e-6)
    assert LayerFeatures(det).layer == "backbone.body.layer4.1.relu_1"
    assert layer_names(det)[0] == "backbone.body.x"


def test_raw_images_get_the_model_cards_preprocessing(tmp_path):
    model = visionzoo.create_model("resnet18", weights="shapes")
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == [3, 64, 64] and cfg["mean"] == [0.5, 0.5, 0.5]
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(4)]
    pils = [Image.fromarray(a) for a in arrays]
    paths = []
    for i, pil in enumerate(pils):
        paths.append(tmp_path / f"im{i}.png")
        pil.save(paths[-1])
    # by hand: bilinear antialiased resize 40 -> 64 (crop_pct 1.0), then (x - 0.5) / 0.25
    manual = torch.stack([
        (F.interpolate(torch.from_numpy(a).permute(2, 0, 1)[None].float(), size=(64, 64), mode="bilinear",
                       antialias=True, align_corners=False)[0].round().clamp(0, 255) / 255 - 0.5) / 0.25
        for a in arrays])
    prepared = torch.stack([preprocess_transform(cfg)(p) for p in pils])
    torch.testing.assert_close(prepared, manual, atol=0.02, rtol=0)  # v2 resizes uint8 images in uint8
    expected = extract_features(model, prepared, progress=False)
    for images in (pils, paths, [str(p) for p in paths], arrays,
                   torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2),  # uint8 batch: raw images
                   [(p, k) for k, p in enumerate(pils)]):  # (image, label) items like a dataset's
        torch.testing.assert_close(extract_features(model, images, batch_size=3, progress=False), expected,
                                   rtol=1e-4, atol=1e-5)
    single = extract_features(model, paths[0], progress=False)
    torch.testing.assert_close(single, expected[:1], rtol=1e-4, atol=1e-5)
    by_name = extract_features("resnet18", pils, weights="shapes", progress=False)
    torch.testing.assert_close(by_name, expected, rtol=1e-4, atol=1e-5)
    loader = DataLoader(TensorDataset(prepared, torch.arange(4)), batch_size=3)
    torch.testing.assert_close(extract_features(model, loader, progress=False), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="weights= is only for a model name"):
        extract_features(model, pils, weights="shapes")
    with pytest.raises(TypeError, match="images must be"):
        extract_features(model, 3.5, progress=False)
