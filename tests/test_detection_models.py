"""Detection models in the registry: published parameter counts and torchvision-compatible weights."""
import pytest
import torch
import torchvision

import visionzoo
from visionzoo.registry import count_parameters_and_flops


@pytest.mark.parametrize("name,params", [
    ("faster_rcnn_resnet50_fpn", 41_755_286),  # frozen backbone BatchNorm, as the official COCO files
    ("mask_rcnn_resnet50_fpn", 44_401_393),
])
def test_parameter_counts_match_published(name, params):
    assert count_parameters_and_flops(name, 91)[0] == params


def test_detection_models_are_listed_by_task():
    names = visionzoo.list_models(task="detection")
    assert {"faster_rcnn_resnet50_fpn", "mask_rcnn_resnet50_fpn", "faster_rcnn_resnet18_fpn",
            "mask_rcnn_resnet18_fpn"} <= set(names)
    assert visionzoo.model_info("mask_rcnn_resnet18_fpn")["task"] == "detection"


@pytest.mark.parametrize("ours,theirs", [
    ("faster_rcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn"),
    ("mask_rcnn_resnet50_fpn", "maskrcnn_resnet50_fpn"),
])
def test_torchvision_state_dict_loads_strict_with_same_outputs(tmp_path, ours, theirs):
    """A state dict laid out like the official COCO files (frozen BN: no num_batches_tracked) loads
    strict and reproduces torchvision's model."""
    torch.manual_seed(0)
    reference = torchvision.models.get_model(theirs, weights=None, weights_backbone=None, min_size=160,
                                             max_size=160).eval()
    state = {k: v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    with torch.no_grad():  # non-trivial BN statistics, so frozen-vs-eval BN would show a difference
        for k in state:
            if k.endswith("running_var"):
                state[k].uniform_(0.5, 2.0)
            elif k.endswith("running_mean"):
                state[k].normal_(0, 0.1)
    reference.load_state_dict(state, strict=False)
    path = tmp_path / f"{theirs}-0123abcd.safetensors"
    from safetensors.torch import save_file

    save_file(state, str(path))
    model = visionzoo.create_model(ours, weights=str(path), min_size=160, max_size=160).eval()
    images = [torch.rand(3, 150, 170)]
    with torch.no_grad():
        a, b = model(images)[0], reference(images)[0]
    assert a["boxes"].shape == b["boxes"].shape
    torch.testing.assert_close(a["boxes"], b["boxes"], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(a["scores"], b["scores"], rtol=1e-4, atol=1e-4)


def test_other_class_count_replaces_the_detection_heads(tmp_path):
    from safetensors.torch import save_file

    src = visionzoo.create_model("mask_rcnn_resnet18_fpn", num_classes=91)
    path = tmp_path / "coco.safetensors"
    save_file(src.state_dict(), str(path))
    with pytest.warns(UserWarning, match="re-initialised the head"):
        model = visionzoo.create_model("mask_rcnn_resnet18_fpn", weights=str(path), num_classes=6)
    assert model.roi_heads.box_predictor.cls_score.out_features == 6
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 6
    assert torch.equal(model.backbone.body.conv1.weight, src.backbone.body.conv1.weight)


@pytest.mark.parametrize("name", ["faster_rcnn_resnet18_fpn", "mask_rcnn_resnet50_fpn"])
def test_test_time_filters_come_from_the_keywords(name):
    model = visionzoo.create_model(name, num_classes=6, min_size=96, max_size=96)
    assert (model.roi_heads.score_thresh, model.roi_heads.nms_thresh) == (0.05, 0.5)  # torchvision's defaults
    model = visionzoo.create_model(name, num_classes=6, min_size=96, max_size=96, box_score_thresh=0.001,
                                   box_nms_thresh=0.6)
    assert (model.roi_heads.score_thresh, model.roi_heads.nms_thresh) == (0.001, 0.6)


def test_lower_score_threshold_keeps_every_detection_and_adds_some():
    """The shipped detector on a shapes scene: threshold 0 adds low-scoring boxes after the same ones."""
    from torchvision.transforms.v2.functional import pil_to_tensor

    from visionzoo.datasets.write_shapes_scenes import make_scene

    model = visionzoo.create_model("faster_rcnn_resnet18_fpn", weights="shapes").eval()
    images = [pil_to_tensor(make_scene(7)[0]).float() / 255]
    with torch.no_grad():
        default = model(images)[0]
        model.roi_heads.score_thresh = 0.0
        everything = model(images)[0]
    assert 0 < len(default["scores"]) < len(everything["scores"])
    kept = everything["scores"] > 0.05
    torch.testing.assert_close(everything["boxes"][kept], default["boxes"])
