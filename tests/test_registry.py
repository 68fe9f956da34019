import pytest
import torch
import torchvision

import visionzoo
from visionzoo.registry import count_parameters_and_flops

# Published parameter counts at 1000 classes (torchvision's model tables; ../shared/REFERENCE.md).
PUBLISHED_PARAMS = {
    "alexnet": 61_100_840,
    "vgg11": 132_863_336, "vgg11_bn": 132_868_840, "vgg13": 133_047_848, "vgg13_bn": 133_053_736,
    "vgg16": 138_357_544, "vgg16_bn": 138_365_992, "vgg19": 143_667_240, "vgg19_bn": 143_678_248,
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    "resnet101": 44_549_160, "resnet152": 60_192_808,
}


def test_every_required_classifier_is_registered():
    assert set(PUBLISHED_PARAMS) <= set(visionzoo.list_models(task="classification"))


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_parameter_count_matches_published(name):
    params, _ = count_parameters_and_flops(name, 1000)
    assert params == PUBLISHED_PARAMS[name]


@pytest.mark.parametrize("name,gflops", [("alexnet", 0.714), ("vgg16", 15.47), ("resnet18", 1.814),
                                         ("resnet50", 4.089)])
def test_flops_match_published(name, gflops):
    info = visionzoo.model_info(name)
    assert info["gflops"] == pytest.approx(gflops, rel=2e-3)
    assert info["default_input_size"] == [3, 224, 224]
    assert info["task"] == "classification"


def test_list_models_wildcards_and_task_filter():
    assert visionzoo.list_models("resnet??") == ["resnet18", "resnet34", "resnet50"]
    assert visionzoo.list_models("resnet*_cifar") == ["resnet110_cifar", "resnet20_cifar", "resnet32_cifar",
                                                      "resnet44_cifar", "resnet56_cifar"]
    assert visionzoo.list_models("vgg1?_bn") == ["vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]
    assert visionzoo.list_models("resnet*", task="detection") == []
    with pytest.raises(ValueError, match="unknown task"):
        visionzoo.list_models(task="clasification")


def test_unknown_model_lists_closest_names():
    with pytest.raises(ValueError, match="resnet18") as err:
        visionzoo.create_model("resnt18")
    assert "Did you mean" in str(err.value)


def test_unknown_keyword_is_a_clear_error():
    with pytest.raises(TypeError, match="dropuot.*Did you mean dropout"):
        visionzoo.create_model("alexnet", dropuot=0.2)
    with pytest.raises(ValueError, match="num_classes"):
        visionzoo.create_model("alexnet", num_classes=0)


def test_model_info_lists_torchvision_weights_with_metrics():
    info = visionzoo.model_info("resnet50")
    assert info["parameters"] == 25_557_032
    v1 = info["weights"]["torchvision:IMAGENET1K_V1"]
    assert v1["metrics"]["ImageNet-1K"]["acc@1"] == pytest.approx(76.13)
    assert v1["url"].endswith("resnet50-0676ba61.pth")


@pytest.mark.parametrize("name", ["alexnet", "vgg11", "resnet18"])
def test_same_architecture_as_torchvision(name):
    ours = visionzoo.create_model(name, num_classes=7)
    theirs = torchvision.models.get_model(name, weights=None, num_classes=7)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in theirs.state_dict().items()]


def test_hubconf_loads_models(tmp_path):
    from tests.conftest import ROOT

    model = torch.hub.load(str(ROOT), "resnet18", source="local", num_classes=4)
    assert model.fc.out_features == 4
