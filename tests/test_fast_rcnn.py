"""Fast R-CNN on external proposals: registry, parameter counts, the paper's RoI sampling and loss,
proposal scaling, weight loading, frozen layers, and a tiny model that overfits one image."""
from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torchvision.ops import box_iou

import visionzoo
from visionzoo.models.fast_rcnn import FastRCNN, FastRCNNRoIHeads, fast_rcnn_loss, scale_proposals
from visionzoo.registry import get_entry

NAMES = ("fast_rcnn_vgg16", "fast_rcnn_resnet50_fpn", "fast_rcnn_resnet18_fpn")


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def tiny():
    """R18-FPN at 64/96 px, so an 80 x 120 input is resized by 0.8."""
    torch.manual_seed(0)
    return visionzoo.create_model("fast_rcnn_resnet18_fpn", num_classes=3, min_size=64, max_size=96)


def _meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return get_entry(name).builder(**kwargs)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- registry and sizes ----------------------------------------------------------------------------------


def test_registered_as_detection_models_that_need_proposals():
    assert set(NAMES) <= set(visionzoo.list_models(task="detection"))
    assert visionzoo.list_models("fast_rcnn_*") == sorted(NAMES)
    for name in NAMES:
        assert get_entry(name).family == "fast_rcnn"
        assert get_entry(name).head_prefixes == ("roi_heads.box_predictor.",)
    assert FastRCNN.needs_proposals is True
    info = visionzoo.model_info("fast_rcnn_vgg16")
    assert info["default_num_classes"] == 21 and info["task"] == "detection"


def test_parameter_counts():
    faster = _meta("faster_rcnn_resnet50_fpn")
    assert _n_params(_meta("fast_rcnn_resnet50_fpn")) == _n_params(faster) - _n_params(faster.rpn) == 41_161_351
    # VGG16 conv1_1..conv5_3 (14,714,688) + fc6 (25088 x 4096) + fc7 (4096 x 4096) + 21 scores + 84 deltas.
    vgg = 14_714_688 + 25088 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 21 + 21 + 4096 * 84 + 84
    assert _n_params(_meta("fast_rcnn_vgg16")) == vgg == 134_690_729


def test_paper_settings_are_the_defaults():
    heads = _meta("fast_rcnn_vgg16").roi_heads
    assert heads.fg_bg_sampler.batch_size_per_image == 64 and heads.fg_bg_sampler.positive_fraction == 0.25
    assert heads.proposal_matcher.high_threshold == heads.proposal_matcher.low_threshold == 0.5
    assert heads.bg_iou_low == 0.1 and heads.smooth_l1_beta == 1.0
    assert heads.box_coder.weights == (10.0, 10.0, 5.0, 5.0)
    assert (heads.nms_thresh, heads.score_thresh, heads.detections_per_img) == (0.3, 0.05, 100)
    pool = heads.box_roi_pool.pool
    assert pool.output_size == (7, 7) and pool.spatial_scale == 1 / 16
    assert _meta("fast_rcnn_vgg16").transform.min_size == (600,) and _meta("fast_rcnn_vgg16").transform.max_size == 1000


# ---- the paper's RoI sampling and loss -------------------------------------------------------------------


def _heads(**kwargs) -> FastRCNNRoIHeads:
    return FastRCNNRoIHeads(nn.Identity(), nn.Identity(), nn.Identity(), **kwargs)


def test_sampler_iou_bands():
    gt = torch.tensor([[0.0, 0.0, 100.0, 100.0]])
    proposals = torch.tensor([
        [0, 0, 100, 70],  # IoU 0.7: foreground
        [0, 0, 100, 50],  # IoU 0.5: foreground (>= 0.5)
        [0, 0, 100, 49],  # IoU 0.49: background
        [0, 0, 100, 30],  # IoU 0.3: background
        [0, 0, 100, 10],  # IoU 0.1: background ([0.1, 0.5))
        [0, 0, 100, 9],  # IoU 0.09: never sampled
        [200, 200, 300, 300],  # IoU 0: never sampled
    ], dtype=torch.float32)
    heads = _heads(batch_size_per_image=64)
    rois, _, labels, _ = heads.select_training_samples([proposals], [{"boxes": gt, "labels": torch.tensor([3])}])
    got = {tuple(b.tolist()): int(lab) for b, lab in zip(rois[0], labels[0])}
    expected = {(0, 0, 100, 100): 3, (0, 0, 100, 70): 3, (0, 0, 100, 50): 3,  # the gt box is added as a RoI
                (0, 0, 100, 49): 0, (0, 0, 100, 30): 0, (0, 0, 100, 10): 0}
    assert got == expected

    # bg_iou_low = 0 gives torchvision's behaviour: every IoU < 0.5 is background.
    rois, _, labels, _ = _heads(bg_iou_low=0.0).select_training_samples(
        [proposals], [{"boxes": gt, "labels": torch.tensor([3])}])
    assert len(rois[0]) == 8 and int((labels[0] == 0).sum()) == 5

    # An image without objects: all its proposals are background.
    rois, _, labels, _ = heads.select_training_samples(
        [proposals], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}])
    assert len(rois[0]) == 7 and (labels[0] == 0).all()


def test_sampler_takes_25_percent_foreground():
    torch.manual_seed(0)
    gt = torch.tensor([[0.0, 0.0, 100.0, 100.0]])
    fg = torch.tensor([[0.0, 0.0, 100.0, 80.0]]).repeat(40, 1)  # IoU 0.8
    bg = torch.tensor([[0.0, 0.0, 100.0, 30.0]]).repeat(100, 1)  # IoU 0.3
    targets = [{"boxes": gt, "labels": torch.tensor([1])}]
    _, _, labels, _ = _heads(batch_size_per_image=64).select_training_samples([torch.cat([fg, bg])], targets)
    assert len(labels[0]) == 64 and int((labels[0] > 0).sum()) == 16
    # Few foreground RoIs: the rest of the 64 is background.
    _, _, labels, _ = _heads(batch_size_per_image=64).select_training_samples([torch.cat([fg[:2], bg])], targets)
    assert int((labels[0] > 0).sum()) == 3 and len(labels[0]) == 64


def _smooth_l1(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def test_loss_against_hand_computation():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -2.0], [0.3, 0.2, 3.0]])
    deltas = torch.tensor([[9.0] * 12, [0.1, -0.2, 2.0, 0.0, 0.5, -1.5, 0.2, 0.3, 9.0, 9.0, 9.0, 9.0],
                           [0.0] * 8 + [-3.0, 0.4, 0.0, 0.9]])
    labels = [torch.tensor([0, 1]), torch.tensor([2])]  # two images: a background RoI (no box loss) and two fg
    targets = [torch.tensor([[5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.5, 0.5]])]
    loss_cls, loss_box = fast_rcnn_loss(logits, deltas, labels, targets)

    log_loss = 0.0
    for row, u in zip(logits.tolist(), [0, 1, 2]):
        log_loss -= row[u] - math.log(sum(math.exp(v) for v in row))
    box = sum(map(_smooth_l1, [0.5, -1.5, 0.2, 0.3]))  # RoI 1, class 1, target 0
    box += sum(map(_smooth_l1, [-3.0, 0.4, -0.5, 0.4]))  # RoI 2, class 2, target (0, 0, .5, .5)
    assert loss_cls.item() == pytest.approx(log_loss / 3, rel=1e-6)
    assert loss_box.item() == pytest.approx(box / 3, rel=1e-6)  # normalised by all 3 sampled RoIs

    empty = fast_rcnn_loss(logits[:0], deltas[:0], [torch.zeros(0, dtype=torch.int64)], [torch.zeros(0, 4)])
    assert [v.item() for v in empty] == [0.0, 0.0]


class _ZeroPredictor(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x):
        return x.new_zeros(len(x), self.num_classes), x.new_zeros(len(x), 4 * self.num_classes)


class _CountPool(nn.Module):
    def forward(self, features, proposals, image_shapes):
        return torch.zeros(sum(len(p) for p in proposals), 1)


def test_roi_heads_loss_uses_paper_targets_and_beta():
    """Zero outputs, 3 classes: log loss log 3 per RoI; a RoI shifted by 10 % of its width has the target
    dx = 10 * 0.1 = 1 (weights 10, 10, 5, 5), whose smooth L1 with beta 1 is 0.5 (torchvision's 1/9: 0.94)."""
    heads = _heads(batch_size_per_image=64)
    heads.box_roi_pool, heads.box_predictor = _CountPool(), _ZeroPredictor(3)
    heads.train()
    gt = {"boxes": torch.tensor([[10.0, 0.0, 110.0, 100.0]]), "labels": torch.tensor([2])}
    proposals = torch.tensor([[0.0, 0.0, 100.0, 100.0], [60.0, 0.0, 160.0, 100.0]])  # IoU 0.82 (fg), 0.33 (bg)
    _, losses = heads({}, [proposals], [(200, 200)], [gt])
    assert losses["loss_classifier"].item() == pytest.approx(math.log(3), rel=1e-6)
    assert losses["loss_box_reg"].item() == pytest.approx(0.5 / 3, rel=1e-5)  # 3 RoIs: 2 proposals + the gt


# ---- proposals: checks, scaling, original coordinates ----------------------------------------------------


def test_scale_proposals_follows_the_resize_and_clips():
    props = torch.tensor([[10.0, 20.0, 110.0, 60.0], [150.0, 80.0, 250.0, 120.0], [210.0, 0.0, 230.0, 10.0]])
    out = scale_proposals(props, (100, 200), (50, 100))  # (H, W): scale 0.5
    # The second box is clipped to the resized image; the third lies outside it and is dropped.
    torch.testing.assert_close(out, torch.tensor([[5.0, 10.0, 55.0, 30.0], [75.0, 40.0, 100.0, 50.0]]))
    assert scale_proposals(torch.zeros(0, 4), (100, 200), (50, 100)).shape == (0, 4)


def test_eval_boxes_are_in_original_coordinates(tiny):
    """With zero box deltas and one dominant class the detections are the proposals themselves: they must
    come back in the input image's pixels although the model sees the image at 0.8 x."""
    model = tiny.eval()
    predictor = model.roi_heads.box_predictor
    saved = {k: v.clone() for k, v in predictor.state_dict().items()}
    try:
        with torch.no_grad():
            predictor.bbox_pred.weight.zero_()
            predictor.bbox_pred.bias.zero_()
            predictor.cls_score.weight.zero_()
            predictor.cls_score.bias.copy_(torch.tensor([0.0, 10.0, 0.0]))
            props = torch.tensor([[10.0, 12.0, 50.0, 60.0], [70.0, 5.0, 115.0, 40.0]])
            out = model([torch.rand(3, 80, 120), torch.rand(3, 40, 50)], proposals=[props, torch.zeros(0, 4)])
    finally:
        predictor.load_state_dict(saved)
    assert model.transform.resize(torch.rand(3, 80, 120), None)[0].shape[-2:] == (64, 96)
    order = out[0]["boxes"][:, 0].argsort()
    torch.testing.assert_close(out[0]["boxes"][order], props, rtol=0, atol=1e-3)
    assert out[0]["labels"].tolist() == [1, 1] and (out[0]["scores"] > 0.99).all()
    assert out[1]["boxes"].shape == (0, 4) and out[1]["labels"].shape == (0,)


@pytest.mark.parametrize("proposals,match", [
    (None, "needs proposals"),
    ([torch.zeros(0, 4)], "2 images"),
    (torch.zeros(2, 3, 4), "list"),
    ([torch.zeros(3, 5), torch.zeros(0, 4)], r"shape \(P, 4\)"),
    ([torch.tensor([[10.0, 10.0, 5.0, 20.0]]), torch.zeros(0, 4)], "XYXY"),
    ([torch.tensor([[0.0, 0.0, float("nan"), 5.0]]), torch.zeros(0, 4)], "non-finite"),
])
def test_missing_or_bad_proposals_raise(tiny, proposals, match):
    tiny.eval()
    with pytest.raises(ValueError, match=match):
        tiny([torch.rand(3, 40, 40), torch.rand(3, 40, 40)], proposals=proposals)


def test_training_needs_targets(tiny):
    tiny.train()
    with pytest.raises(ValueError, match="targets"):
        tiny([torch.rand(3, 40, 40)], None, [torch.zeros(0, 4)])


def test_train_losses_finite_with_and_without_proposals(tiny):
    tiny.train()
    images = [torch.rand(3, 80, 120), torch.rand(3, 60, 70), torch.rand(3, 50, 50)]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[5.0, 5.0, 40.0, 30.0]]), "labels": torch.tensor([2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    proposals = [torch.tensor([[12.0, 8.0, 52.0, 58.0], [0.0, 0.0, 30.0, 30.0]]), torch.zeros(0, 4),
                 torch.tensor([[0.0, 0.0, 20.0, 20.0]])]
    losses = tiny(images, targets, proposals)
    assert set(losses) == {"loss_classifier", "loss_box_reg"}
    assert all(torch.isfinite(v) and v.requires_grad for v in losses.values())
    sum(losses.values()).backward()
    tiny.zero_grad(set_to_none=True)


# ---- weights and frozen layers ---------------------------------------------------------------------------


def test_faster_rcnn_state_dict_without_rpn_loads_strict(tmp_path):
    torch.manual_seed(0)
    faster = visionzoo.create_model("faster_rcnn_resnet50_fpn", min_size=128, max_size=128).eval()
    state = {k: v for k, v in faster.state_dict().items() if not k.startswith("rpn.")}
    path = tmp_path / "faster_rcnn_r50_fpn_no_rpn.safetensors"
    save_file(state, str(path))
    model = visionzoo.create_model("fast_rcnn_resnet50_fpn", weights=str(path), min_size=128, max_size=128).eval()
    model.load_state_dict(state, strict=True)

    images = [torch.rand(3, 128, 128)]  # no resize, so both heads see the same proposals
    proposals = [torch.tensor([[10.0, 10.0, 60.0, 70.0], [30.0, 40.0, 120.0, 100.0], [0.0, 0.0, 127.0, 127.0]])]
    outputs = []
    with torch.no_grad():
        for m in (faster, model):
            batch, _ = m.transform(images)
            pooled = m.roi_heads.box_roi_pool(m.backbone(batch.tensors), proposals, batch.image_sizes)
            outputs.append(m.roi_heads.box_predictor(m.roi_heads.box_head(pooled)))
    for a, b in zip(*outputs):
        torch.testing.assert_close(a, b)


def test_vgg16_backbone_weights_load_convs_and_fc6_fc7(tmp_path):
    torch.manual_seed(0)
    classifier = _meta("vgg16", num_classes=10)  # random tensors without VGG's slow init
    state = {k: torch.randn(v.shape) * 0.01 for k, v in classifier.state_dict().items()}
    path = tmp_path / "vgg16_random.safetensors"
    save_file(state, str(path))
    del classifier
    model = visionzoo.create_model("fast_rcnn_vgg16", backbone_weights=str(path), min_size=64, max_size=64)
    own = model.state_dict()
    for k, v in state.items():
        if k.startswith("features."):
            assert torch.equal(own[f"backbone.{k}"], v), k
    for src, dst in (("classifier.0", "fc6"), ("classifier.3", "fc7")):
        for p in ("weight", "bias"):
            assert torch.equal(own[f"roi_heads.box_head.{dst}.{p}"], state[f"{src}.{p}"])
    assert len(model.backbone.features) == 30  # the last max pool (index 30) is gone: stride 16
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 64, 64)], proposals=[torch.tensor([[0.0, 0.0, 40.0, 40.0]])])
    assert set(out[0]) == {"boxes", "labels", "scores"}


def test_frozen_layers():
    features = _meta("fast_rcnn_vgg16").backbone.features
    convs = [m for m in features if isinstance(m, nn.Conv2d)]
    # conv1_1, conv1_2, conv2_1, conv2_2 frozen; conv3_1 .. conv5_3 trained (the paper's choice).
    assert [m.weight.requires_grad for m in convs] == [False] * 4 + [True] * 9
    assert all(p.requires_grad for p in _meta("fast_rcnn_vgg16", trainable_layers=5).parameters())
    assert not any(p.requires_grad for p in _meta("fast_rcnn_vgg16", trainable_layers=0).backbone.parameters())
    with pytest.raises(ValueError, match="trainable_layers"):
        _meta("fast_rcnn_vgg16", trainable_layers=6)
    body = _meta("fast_rcnn_resnet50_fpn").backbone.body
    assert not body.conv1.weight.requires_grad and not body.layer1[0].conv1.weight.requires_grad
    assert body.layer2[0].conv1.weight.requires_grad
    assert all(p.requires_grad for p in _meta("fast_rcnn_resnet18_fpn").parameters())


def test_resnet18_shapes_backbone_weights():
    model = visionzoo.create_model("fast_rcnn_resnet18_fpn", backbone_weights="shapes", num_classes=6)
    classifier = visionzoo.create_model("resnet18", weights="shapes")
    body = model.backbone.body.state_dict()
    for k, v in classifier.state_dict().items():
        if not k.startswith("fc.") and k in body:
            assert torch.equal(body[k], v), k
    assert torch.equal(body["layer4.1.conv2.weight"], classifier.layer4[1].conv2.weight)


# ---- it learns ---------------------------------------------------------------------------------------------


def test_tiny_model_overfits_one_image():
    """R18-FPN (ResNet body frozen for speed) on one 80 x 120 image with two coloured boxes, seen at 0.8 x:
    the loss falls by more than half in 30 steps, and the gt boxes given as proposals come back as
    detections of the right class on the right place of the original image."""
    torch.manual_seed(0)
    model = visionzoo.create_model("fast_rcnn_resnet18_fpn", num_classes=3, min_size=64, max_size=96,
                                   batch_size_per_image=32, trainable_layers=0)
    image = torch.rand(3, 80, 120) * 0.3
    image[:, 15:55, 20:60] = torch.tensor([0.9, 0.2, 0.1])[:, None, None]
    image[:, 30:70, 75:110] = torch.tensor([0.1, 0.3, 0.9])[:, None, None]
    gt = torch.tensor([[20.0, 15.0, 60.0, 55.0], [75.0, 30.0, 110.0, 70.0]])
    targets = [{"boxes": gt, "labels": torch.tensor([1, 2])}]
    g = torch.Generator().manual_seed(0)
    jittered = gt.repeat(20, 1) + torch.randn(40, 4, generator=g) * 6
    xy = torch.rand(40, 2, generator=g) * torch.tensor([100.0, 60.0])
    random_boxes = torch.cat([xy, xy + 10 + torch.rand(40, 2, generator=g) * 40], dim=1)
    proposals = torch.cat([jittered, random_boxes])
    proposals[:, 2:] = torch.maximum(proposals[:, 2:], proposals[:, :2] + 2)

    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    model.train()
    history = []
    for _ in range(30):
        loss = sum(model([image], targets, [proposals]).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    first, last = sum(history[:3]) / 3, sum(history[-5:]) / 5
    assert last < 0.5 * first, history

    model.eval()
    with torch.no_grad():
        out = model([image], proposals=[torch.cat([gt, random_boxes[:5]])])[0]
    for box, label in zip(gt, (1, 2)):
        iou = box_iou(box[None], out["boxes"])[0]
        hit = int(iou.argmax())
        assert iou[hit] > 0.6 and int(out["labels"][hit]) == label and out["scores"][hit] > 0.5
