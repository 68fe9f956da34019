"""Segmentation models in the registry: FCN-32s/16s/8s (VGG16), FCN-ResNet, the small variants."""
import pytest
import torch
import torchvision

import visionzoo
from visionzoo.models.fcn import bilinear_kernel
from visionzoo.registry import count_parameters_and_flops


def test_fcn_resnet50_parameter_count_matches_published():
    assert count_parameters_and_flops("fcn_resnet50", 21)[0] == 35_322_218


@pytest.mark.parametrize("name,theirs", [("fcn_resnet50", "fcn_resnet50"), ("fcn_resnet101", "fcn_resnet101")])
def test_same_parameter_count_as_torchvision(name, theirs):
    with torch.device("meta"):
        reference = torchvision.models.get_model(theirs, weights=None, weights_backbone=None, num_classes=21,
                                                 aux_loss=True)
    assert count_parameters_and_flops(name, 21)[0] == sum(p.numel() for p in reference.parameters())


@pytest.mark.parametrize("name,params", [
    # VGG16 conv 14,714,688 + fc6 102,764,544 + fc7 16,781,312 + score_fr 86,037, plus the upsamplings
    ("fcn32s_vgg16", 136_152_917),  # + upscore 21*21*64*64
    ("fcn16s_vgg16", 134_815_994),  # + score_pool4 10,773 + upscore2 21*21*4*4 + upscore16 21*21*32*32
    ("fcn8s_vgg16", 134_489_759),  # + score_pool3 5,397 + upscore_pool4 7,056 + upscore8 21*21*16*16
])
def test_vgg_fcn_parameter_counts(name, params):
    assert count_parameters_and_flops(name, 21)[0] == params


def test_segmentation_models_are_listed_by_task():
    names = set(visionzoo.list_models(task="segmentation"))
    assert {"fcn32s_vgg16", "fcn16s_vgg16", "fcn8s_vgg16", "fcn_resnet50", "fcn_resnet101", "fcn_resnet18",
            "fcn8s_resnet18", "fcn4s_resnet18"} <= names
    assert visionzoo.list_models("fcn*s_vgg16") == ["fcn16s_vgg16", "fcn32s_vgg16", "fcn8s_vgg16"]


def test_torchvision_fcn_state_dict_loads_strict_with_same_outputs(tmp_path):
    """A state dict laid out like the official fcn_resnet50 COCO-with-VOC-labels file loads strict (with and
    without BatchNorm's num_batches_tracked counters) and reproduces torchvision's model."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    reference = torchvision.models.get_model("fcn_resnet50", weights=None, weights_backbone=None, num_classes=21,
                                             aux_loss=True).eval()
    with torch.no_grad():
        for name, buffer in reference.named_buffers():
            if name.endswith("running_var"):
                buffer.uniform_(0.5, 2.0)
            elif name.endswith("running_mean"):
                buffer.normal_(0, 0.1)
    state = reference.state_dict()
    for variant, sd in (("full", state), ("no_counter", {k: v for k, v in state.items()
                                                          if not k.endswith("num_batches_tracked")})):
        path = tmp_path / f"fcn_resnet50_coco-{variant}.safetensors"
        save_file(sd, str(path))
        model = visionzoo.create_model("fcn_resnet50", weights=str(path)).eval()
        x = torch.rand(1, 3, 72, 88)
        with torch.no_grad():
            a, b = model(x), reference(x)
        assert set(a) == {"out", "aux"} and a["out"].shape == (1, 21, 72, 88)
        torch.testing.assert_close(a["out"], b["out"])
        torch.testing.assert_close(a["aux"], b["aux"])


def test_official_fcn_weights_missing_file_names_it(isolated_caches):
    from visionzoo.weights import WeightsError

    with pytest.raises(WeightsError, match=r"fcn_resnet50_coco-1167a1af\.pth"):
        visionzoo.create_model("fcn_resnet50", weights="torchvision:COCO_WITH_VOC_LABELS_V1")


def test_vgg_fcns_crop_back_to_any_input_size():
    torch.manual_seed(0)
    with torch.no_grad():
        for name in ("fcn32s_vgg16", "fcn16s_vgg16", "fcn8s_vgg16"):
            model = visionzoo.create_model(name, num_classes=3).eval()
            for size in ((32, 32), (37, 53)):
                assert model(torch.rand(1, 3, *size))["out"].shape == (1, 3, *size)


def test_fcn_paper_initialisation():
    model = visionzoo.create_model("fcn8s_vgg16", num_classes=4)
    assert model.features[0].padding == (100, 100)
    assert all(model.features[i].ceil_mode for i in (4, 9, 16, 23, 30))
    for layer in (model.score_fr, model.score_pool4, model.score_pool3):
        assert not layer.weight.any() and not layer.bias.any()  # zero-initialised scoring layers
    assert model.upscore2.weight.requires_grad and model.upscore_pool4.weight.requires_grad
    assert not model.upscore8.weight.requires_grad  # the final upsampling stays bilinear
    torch.testing.assert_close(model.upscore8.weight, bilinear_kernel(4, 16))
    assert model.fc6.weight.shape == (4096, 512, 7, 7) and model.fc7.weight.shape == (4096, 4096, 1, 1)


def test_bilinear_kernel_upsamples_bilinearly():
    """A transposed convolution with the kernel reproduces a linear ramp exactly away from the borders and
    does not mix channels."""
    layer = torch.nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(bilinear_kernel(2, 4))
        ramp = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 1, 8, 8)
        x = torch.cat([ramp, torch.zeros_like(ramp)], 1)
        y = layer(x)
    assert y.shape == (1, 2, 16, 16)
    assert not y[:, 1].any()
    row = y[0, 0, 8, 1:-1]
    torch.testing.assert_close(row[1:] - row[:-1], torch.full((13,), 0.5))


def test_vgg16_classifier_weights_initialise_the_fcn(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.vgg16(weights=None).state_dict().items()}
    state = {k: torch.randn(shape) for k, shape in shapes.items()}
    path = tmp_path / "vgg16.safetensors"
    save_file(state, str(path))
    model = visionzoo.create_model("fcn32s_vgg16", num_classes=5, backbone_weights=str(path))
    torch.testing.assert_close(model.features[28].weight, state["features.28.weight"])
    torch.testing.assert_close(model.fc6.weight.flatten(1), state["classifier.0.weight"])
    torch.testing.assert_close(model.fc7.bias, state["classifier.3.bias"])


@pytest.mark.parametrize("name", ["fcn8s_resnet18", "fcn4s_resnet18", "fcn_resnet18"])
@pytest.mark.parametrize("size", [(32, 32), (100, 77), (129, 64)])
def test_small_variants_any_input_size(name, size):
    model = visionzoo.create_model(name, num_classes=6).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, *size))["out"].shape == (2, 6, *size)


def test_fcn4s_adds_a_stride4_skip_to_fcn8s():
    """Same trunk and coarse skips as FCN-8s (its parameters load by name), plus a zero-initialised layer1
    score layer and one more learned 2x upsampling, ending in a fixed 4x (not 8x) bilinear upsampling."""
    fcn8s = visionzoo.create_model("fcn8s_resnet18", num_classes=6)
    fcn4s = visionzoo.create_model("fcn4s_resnet18", num_classes=6)
    missing, unexpected = fcn4s.load_state_dict(fcn8s.state_dict(), strict=False)
    assert sorted(missing) == ["score_pool2.bias", "score_pool2.weight", "upscore4.weight", "upscore_pool3.weight"]
    assert unexpected == ["upscore8.weight"]
    assert fcn4s.score_pool2.weight.abs().sum() == 0 and fcn4s.score_pool2.in_channels == 64
    assert not fcn4s.upscore4.weight.requires_grad and fcn4s.upscore_pool3.weight.requires_grad
    with pytest.raises(ValueError, match="finest_stride"):
        from visionzoo.models.fcn import FCN8sResNet

        FCN8sResNet(torchvision.models.resnet18(), 6, finest_stride=2)


def test_small_variant_backbone_from_shipped_classifier():
    from visionzoo.models.backbones import classifier_state_dict

    model = visionzoo.create_model("fcn8s_resnet18", num_classes=6, backbone_weights="shapes", trainable_layers=3)
    state = classifier_state_dict("resnet18", "shapes")
    torch.testing.assert_close(model.backbone.layer3[0].conv1.weight, state["layer3.0.conv1.weight"].float())
    assert not model.backbone.conv1.weight.requires_grad and not model.backbone.layer1[0].conv1.weight.requires_grad
    assert model.backbone.layer2[0].conv1.weight.requires_grad
