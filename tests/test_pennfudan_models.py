"""Normalisation options for training from scratch: GroupNorm R18-FPN detectors (backbone, FPN, heads) and FCN
ResNet-18 build and take a training step; frozen BatchNorm stays the detectors' default (the shipped files load
strict); bad values are refused."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from visionzoo.factory import create_model
from visionzoo.models.backbones import group_norm

SMALL = {"min_size": 64, "max_size": 64, "anchor_sizes": [8, 16, 32, 64, 128], "fpn_channels": 32,
         "representation_size": 64, "box_batch_size_per_image": 16}


def _norms(module: nn.Module) -> set[type]:
    return {type(m) for m in module.modules() if isinstance(m, (nn.GroupNorm, nn.BatchNorm2d, FrozenBatchNorm2d))}


def _targets(masks: bool):
    boxes = torch.tensor([[8.0, 10.0, 40.0, 50.0], [30.0, 5.0, 60.0, 30.0]])
    t = {"boxes": boxes, "labels": torch.tensor([1, 1])}
    if masks:
        t["masks"] = torch.zeros(2, 64, 64, dtype=torch.uint8)
        for k, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
            t["masks"][k, y1:y2, x1:x2] = 1
    return [t, {k: v.clone() for k, v in t.items()}]


def test_group_norm_groups():
    assert group_norm(256).num_groups == 32 and group_norm(64).num_groups == 32
    assert group_norm(48).num_groups == 24 and group_norm(20).num_groups == 20


@pytest.mark.parametrize("name", ["faster_rcnn_resnet18_fpn", "mask_rcnn_resnet18_fpn"])
def test_gn_detector_builds_and_trains_a_step(one_thread, name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=2, norm="gn", box_head="4conv1fc", trainable_layers=5, **SMALL)
    assert _norms(model.backbone.body) == {nn.GroupNorm}
    assert any(isinstance(m, nn.GroupNorm) for m in model.backbone.fpn.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in model.roi_heads.box_head.modules())
    if name.startswith("mask"):
        assert any(isinstance(m, nn.GroupNorm) for m in model.roi_heads.mask_head.modules())
    model.train()
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    losses = model(images, _targets(name.startswith("mask")))
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.01).step()
    moved = [k for k, v in model.named_parameters() if not torch.equal(v, before[k])]
    assert any(k.startswith("backbone.body.layer1") and ".bn" in k for k in moved)  # GN affine terms train
    assert any(k.startswith("roi_heads.box_head") for k in moved)
    model.eval()
    with torch.no_grad():
        assert set(model([torch.rand(3, 64, 64)])[0]) >= {"boxes", "labels", "scores"}


def test_bn_option_and_default_frozen_bn():
    default = create_model("faster_rcnn_resnet18_fpn", num_classes=2, **SMALL)
    assert _norms(default.backbone.body) == {FrozenBatchNorm2d}
    assert not any(isinstance(m, nn.GroupNorm) for m in default.modules())
    bn = create_model("faster_rcnn_resnet18_fpn", num_classes=2, norm="bn", **SMALL)
    assert _norms(bn.backbone.body) == {nn.BatchNorm2d}
    with pytest.raises(ValueError, match="norm must be one of frozen_bn, bn, gn, got 'layer'"):
        create_model("faster_rcnn_resnet18_fpn", norm="layer", **SMALL)
    with pytest.raises(ValueError, match="box_head must be one of 2mlp, 4conv1fc"):
        create_model("faster_rcnn_resnet18_fpn", box_head="conv", **SMALL)


@pytest.mark.parametrize("name", ["faster_rcnn_resnet18_fpn", "mask_rcnn_resnet18_fpn", "fcn4s_resnet18"])
def test_shipped_files_still_load(name):
    """The defaults keep the shipped files' layout (create_model loads them strict)."""
    model = create_model(name, weights="shapes")
    assert _norms(model) <= {FrozenBatchNorm2d, nn.BatchNorm2d}


@pytest.mark.parametrize("name", ["fcn8s_resnet18", "fcn4s_resnet18", "fcn_resnet18"])
def test_gn_fcn_builds_and_trains_a_step(one_thread, name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=11, norm="gn")
    assert nn.BatchNorm2d not in _norms(model) and nn.GroupNorm in _norms(model)
    assert nn.BatchNorm2d in _norms(create_model(name, num_classes=11))  # default: BatchNorm, as before
    x, y = torch.rand(2, 3, 64, 64), torch.randint(0, 11, (2, 64, 64))
    y[:, :4] = 255
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):  # the score layers start at zero (as in the paper): the backbone's gradients flow from step 2
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x)["out"], y, ignore_index=255)
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss) and model.backbone.layer1[0].bn1.weight.grad.abs().sum() > 0
