"""Fast R-CNN (Girshick, ICCV 2015) on external proposals (selective search, a proposals file).

The whole image goes through the conv layers once; each proposal (RoI) is pooled from the last feature
map to a fixed grid (RoI max pooling, 7x7 for VGG16), passed through fc6/fc7, and scored by a softmax over
K + 1 classes plus per-class box regression. Proposals come with the images: `forward(images, targets,
proposals)`, boxes XYXY in the input image's pixels; the model resizes them with the image.

What is torchvision's: GeneralizedRCNNTransform (resize + normalise), RoIPool / MultiScaleRoIAlign, TwoMLPHead,
FastRCNNPredictor, BoxCoder, Matcher, BalancedPositiveNegativeSampler and RoIHeads' gt-proposal adding,
sampling and test-time post-processing (softmax, decoding, clipping, score threshold, per-class NMS).

What is written here, because torchvision does it the Faster R-CNN way rather than the paper's:
- background RoIs are sampled only from IoU in [0.1, 0.5) (the paper's hard-negative heuristic; torchvision
  takes every IoU < 0.5);
- the box loss is smooth L1 with beta 1 (the paper's), not torchvision's 1/9;
- the predictor is initialised from N(0, 0.01) (classifier) and N(0, 0.001) (box regression), as in the paper;
- test-time NMS is 0.3 (the paper's), not 0.5;
- proposals are scaled by the transform's per-image resize factors (torchvision only resizes targets).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import MultiScaleRoIAlign, RoIPool
from torchvision.ops import boxes as box_ops

from visionzoo.models.backbones import load_backbone_weights
from visionzoo.models.rcnn import resnet_fpn_backbone
from visionzoo.registry import Capabilities, register_model

__all__ = ["FastRCNN", "FastRCNNRoIHeads", "fast_rcnn_loss", "scale_proposals"]

_HEAD = ("roi_heads.box_predictor.",)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def fast_rcnn_loss(class_logits: Tensor, box_regression: Tensor, labels: list[Tensor],
                   regression_targets: list[Tensor], beta: float = 1.0) -> tuple[Tensor, Tensor]:
    """The paper's multi-task loss (eq. 1, lambda = 1): log loss over K + 1 classes plus, for foreground RoIs
    (u >= 1), smooth L1 (`beta` 1) summed over the 4 deltas of the true class; both averaged over the sampled RoIs."""
    labels_all = torch.cat(labels, dim=0)
    targets_all = torch.cat(regression_targets, dim=0)
    n = labels_all.numel()
    if n == 0:  # nothing sampled (no proposals and no gt): a zero loss that still reaches every output
        zero = class_logits.sum() * 0.0 + box_regression.sum() * 0.0
        return zero, zero.clone()
    loss_cls = F.cross_entropy(class_logits, labels_all, reduction="sum") / n
    pos = torch.where(labels_all > 0)[0]
    deltas = box_regression.reshape(n, -1, 4)[pos, labels_all[pos]]
    loss_box = F.smooth_l1_loss(deltas, targets_all[pos], beta=beta, reduction="sum") / n
    return loss_cls, loss_box


def scale_proposals(proposals: Tensor, original_size: tuple[int, int], new_size: tuple[int, int]) -> Tensor:
    """Proposals (P, 4) XYXY in the original image's pixels -> the resized image's pixels, by the same
    per-axis factors as the transform applies to the gt boxes, clipped to the resized image; boxes that
    become empty (outside the image) are dropped, as torchvision's RPN drops its own."""
    boxes = box_ops.clip_boxes_to_image(resize_boxes(proposals, list(original_size), list(new_size)), new_size)
    return boxes[box_ops.remove_small_boxes(boxes, min_size=1e-3)]


class FastRCNNRoIHeads(RoIHeads):
    """torchvision's RoIHeads with the paper's background band, loss and test-time settings.

    Training: each image's proposals plus its gt boxes are matched to the gt; RoIs with IoU >= `fg_iou_thresh`
    (0.5) are foreground, [`bg_iou_low`, `bg_iou_thresh`) = [0.1, 0.5) background, the rest never sampled;
    `batch_size_per_image` RoIs (64: the paper's 128 per 2-image minibatch), `positive_fraction` (25 %)
    foreground, the rest filled with background."""

    def __init__(self, box_roi_pool: nn.Module, box_head: nn.Module, box_predictor: nn.Module, *,
                 fg_iou_thresh: float = 0.5, bg_iou_thresh: float = 0.5, bg_iou_low: float = 0.1,
                 batch_size_per_image: int = 64, positive_fraction: float = 0.25,
                 bbox_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
                 smooth_l1_beta: float = 1.0, score_thresh: float = 0.05, nms_thresh: float = 0.3,
                 detections_per_img: int = 100):
        if not 0.0 <= bg_iou_low <= bg_iou_thresh <= fg_iou_thresh:
            raise ValueError("need 0 <= bg_iou_low <= bg_iou_thresh <= fg_iou_thresh, got "
                             f"{bg_iou_low}, {bg_iou_thresh}, {fg_iou_thresh}")
        # bbox_reg_weights (10, 10, 5, 5) = the paper's normalisation of the deltas by std (0.1, 0.1, 0.2, 0.2).
        super().__init__(box_roi_pool, box_head, box_predictor, fg_iou_thresh, bg_iou_thresh, batch_size_per_image,
                         positive_fraction, bbox_reg_weights, score_thresh, nms_thresh, detections_per_img)
        self.bg_iou_low = bg_iou_low
        self.smooth_l1_beta = smooth_l1_beta

    def assign_targets_to_proposals(self, proposals: list[Tensor], gt_boxes: list[Tensor],
                                    gt_labels: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Class label per proposal: gt class (IoU >= fg), 0 (background band), -1 (not sampled)."""
        matched_idxs, labels = super().assign_targets_to_proposals(proposals, gt_boxes, gt_labels)
        for props, gt, lab in zip(proposals, gt_boxes, labels):
            # An image without objects has no hard negatives to prefer: all its RoIs stay background
            # (the paper's VOC images always have objects; dropping them all would waste the image).
            if gt.numel() > 0 and props.numel() > 0 and self.bg_iou_low > 0:
                max_iou = box_ops.box_iou(gt, props).max(dim=0).values
                lab[max_iou < self.bg_iou_low] = -1
        return matched_idxs, labels

    def forward(self, features: dict[str, Tensor], proposals: list[Tensor], image_shapes: list[tuple[int, int]],
                targets: list[dict[str, Tensor]] | None = None) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        # float32 under bf16/fp16 autocast too: the box coder takes the regression's dtype, and bfloat16
        # coordinates beyond 512 px fall on a 4-px grid (the backbone keeps the autocast dtype)
        features = {k: v.float() for k, v in features.items()}
        device_type = next(iter(features.values()), proposals[0] if proposals else torch.empty(0)).device.type
        with torch.autocast(device_type=device_type, enabled=False):
            return self._forward(features, [p.float() for p in proposals], image_shapes, targets)

    def _forward(self, features, proposals, image_shapes, targets):
        labels = regression_targets = None
        if self.training:
            proposals, _, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        if self.training:
            loss_cls, loss_box = fast_rcnn_loss(class_logits, box_regression, labels, regression_targets,
                                                self.smooth_l1_beta)
            return [], {"loss_classifier": loss_cls, "loss_box_reg": loss_box}
        boxes, scores, classes = self.postprocess_detections(class_logits, box_regression, proposals, image_shapes)
        return [{"boxes": b, "labels": c, "scores": s} for b, s, c in zip(boxes, scores, classes)], {}


class FastRCNN(nn.Module):
    """Fast R-CNN: backbone -> RoI pooling of external proposals -> box head -> softmax + per-class boxes.

    `forward(images, targets=None, proposals=...)`: images are (3, H, W) floats in 0..1 of any size;
    proposals one (P_i, 4) XYXY tensor per image in that image's pixels (P_i may be 0). Training returns
    {"loss_classifier", "loss_box_reg"}; eval a list of {"boxes", "labels", "scores"} in the input images'
    coordinates. Module names follow torchvision's FasterRCNN (backbone.*, roi_heads.*) without the RPN."""

    needs_proposals = True

    def __init__(self, backbone: nn.Module, roi_heads: FastRCNNRoIHeads, transform: GeneralizedRCNNTransform):
        super().__init__()
        self.transform = transform
        self.backbone = backbone
        self.roi_heads = roi_heads

    @staticmethod
    def _check_proposals(images: list[Tensor], proposals) -> list[Tensor]:
        if proposals is None:
            raise ValueError("FastRCNN needs proposals: forward(images, targets, proposals=[Tensor (P_i, 4) XYXY "
                             "per image]); use an empty (0, 4) tensor for an image without proposals")
        if isinstance(proposals, Tensor) or not isinstance(proposals, (list, tuple)):
            raise ValueError(f"proposals must be a list with one (P_i, 4) tensor per image, got {type(proposals)}")
        if len(proposals) != len(images):
            raise ValueError(f"got {len(proposals)} proposal tensors for {len(images)} images")
        out = []
        for i, (p, img) in enumerate(zip(proposals, images)):
            p = torch.as_tensor(p).as_subclass(torch.Tensor)  # tv_tensors.BoundingBoxes -> plain tensor
            if p.numel() == 0:
                p = p.reshape(0, 4)
            if p.ndim != 2 or p.shape[-1] != 4:
                raise ValueError(f"proposals[{i}] must have shape (P, 4) (XYXY), got {tuple(p.shape)}")
            p = p.to(device=img.device, dtype=img.dtype if img.is_floating_point() else torch.float32)
            if not torch.isfinite(p).all():
                raise ValueError(f"proposals[{i}] contains non-finite values")
            if ((p[:, 2:] < p[:, :2]).any()):
                raise ValueError(f"proposals[{i}] has boxes with x2 < x1 or y2 < y1: boxes must be XYXY, not XYWH")
            out.append(p)
        return out

    @staticmethod
    def _check_targets(targets) -> None:
        if targets is None:
            raise ValueError("FastRCNN in training mode needs targets (a list of dicts with boxes and labels)")
        for i, t in enumerate(targets):
            boxes = t["boxes"]
            if not boxes.is_floating_point() or boxes.ndim != 2 or boxes.shape[-1] != 4:
                raise ValueError(f"targets[{i}]['boxes'] must be a float (N, 4) tensor, got {boxes.dtype} "
                                 f"{tuple(boxes.shape)}")
            if t["labels"].dtype != torch.int64:
                raise ValueError(f"targets[{i}]['labels'] must be int64, got {t['labels'].dtype}")
            if (boxes[:, 2:] <= boxes[:, :2]).any():
                raise ValueError(f"targets[{i}] has degenerate boxes (x2 <= x1 or y2 <= y1)")

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None,
                proposals: list[Tensor] | None = None):
        proposals = self._check_proposals(images, proposals)
        if self.training:
            self._check_targets(targets)
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        image_list, targets = self.transform(images, targets)
        proposals = [scale_proposals(p, o, s) for p, o, s in zip(proposals, original_sizes, image_list.image_sizes)]
        features = self.backbone(image_list.tensors)
        if isinstance(features, Tensor):
            features = OrderedDict([("0", features)])
        detections, losses = self.roi_heads(features, proposals, image_list.image_sizes, targets)
        if self.training:
            return losses
        return self.transform.postprocess(detections, image_list.image_sizes, original_sizes)


# ---- VGG16 (the paper's largest network, "L") ---------------------------------------------------------------


class VGG16Backbone(nn.Module):
    """VGG16's conv layers up to conv5_3 + ReLU (stride 16): the last max pool is replaced by RoI pooling."""

    out_channels = 512

    def __init__(self, features: nn.Sequential):
        super().__init__()
        self.features = features

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


class VGG16BoxHead(nn.Module):
    """fc6 and fc7 of VGG16's classifier (4096, ReLU, dropout), on 512 x 7 x 7 pooled RoIs."""

    def __init__(self, fc6: nn.Linear, fc7: nn.Linear, dropout: float = 0.5):
        super().__init__()
        self.fc6 = fc6
        self.fc7 = fc7
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.dropout(F.relu(self.fc6(x.flatten(start_dim=1))))
        return self.dropout(F.relu(self.fc7(x)))


class SingleLevelRoIPool(nn.Module):
    """RoI max pooling (the paper's layer) behind the (features, proposals, image_shapes) call of RoIHeads."""

    def __init__(self, output_size: int = 7, spatial_scale: float = 1 / 16, level: str = "0"):
        super().__init__()
        self.pool = RoIPool((output_size, output_size), spatial_scale)
        self.level = level

    def forward(self, features: dict[str, Tensor], proposals: list[Tensor],
                image_shapes: list[tuple[int, int]]) -> Tensor:
        return self.pool(features[self.level], proposals)


def _freeze_vgg_stages(features: nn.Sequential, trainable_layers: int) -> None:
    # The 5 conv stages end at the max pools; the paper fine-tunes conv3_1 and up (trainable_layers = 3),
    # since conv1/conv2 are generic and training them costs memory and time for no mAP.
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers must be in 0..5, got {trainable_layers}")
    stage = 1
    for module in features:
        if isinstance(module, nn.MaxPool2d):
            stage += 1
            continue
        if stage <= 5 - trainable_layers:
            module.requires_grad_(False)


def _paper_init_predictor(predictor: FastRCNNPredictor) -> FastRCNNPredictor:
    # Section 2.3: softmax and box-regression layers from zero-mean Gaussians, std 0.01 and 0.001, biases 0.
    nn.init.normal_(predictor.cls_score.weight, std=0.01)
    nn.init.normal_(predictor.bbox_pred.weight, std=0.001)
    nn.init.zeros_(predictor.cls_score.bias)
    nn.init.zeros_(predictor.bbox_pred.bias)
    return predictor


def _fast_rcnn(backbone: nn.Module, box_roi_pool: nn.Module, box_head: nn.Module, representation: int,
               num_classes: int, min_size: int, max_size: int, image_mean, image_std, **head_kwargs) -> FastRCNN:
    predictor = _paper_init_predictor(FastRCNNPredictor(representation, num_classes))
    roi_heads = FastRCNNRoIHeads(box_roi_pool, box_head, predictor, **head_kwargs)
    transform = GeneralizedRCNNTransform(min_size, max_size, list(image_mean or _IMAGENET_MEAN),
                                         list(image_std or _IMAGENET_STD))
    return FastRCNN(backbone, roi_heads, transform)


def _head_kwargs(batch_size_per_image: int, bg_iou_low: float, box_score_thresh: float, box_nms_thresh: float,
                 box_detections_per_img: int) -> dict:
    return {"batch_size_per_image": batch_size_per_image, "bg_iou_low": bg_iou_low,
            "score_thresh": box_score_thresh, "nms_thresh": box_nms_thresh,
            "detections_per_img": box_detections_per_img}


@register_model(task="detection", family="fast_rcnn", input_size=(3, 600, 600), num_classes=21, head=_HEAD,
                capabilities=Capabilities(needs_proposals=True))
def fast_rcnn_vgg16(num_classes: int = 21, min_size: int = 600, max_size: int = 1000, trainable_layers: int = 3,
                    dropout: float = 0.5, batch_size_per_image: int = 64, bg_iou_low: float = 0.1,
                    box_score_thresh: float = 0.05, box_nms_thresh: float = 0.3, box_detections_per_img: int = 100,
                    image_mean: list[float] | None = None, image_std: list[float] | None = None,
                    backbone_weights: str | None = None):
    """Fast R-CNN, VGG16 (the paper's model L): conv5_3 at stride 16, RoIPool 7x7, fc6/fc7 4096, VOC scale 600/1000.

    `backbone_weights` loads the zoo's `vgg16` classifier weights into the conv layers and fc6/fc7 (its
    classifier.6 is dropped); conv1_1..conv2_2 are frozen by default (trainable_layers = 3, as in the paper)."""
    vgg = tvm.vgg16(weights=None)  # torchvision's init: kaiming convs, N(0, 0.01) fc layers
    backbone = VGG16Backbone(vgg.features[:-1])
    box_head = VGG16BoxHead(vgg.classifier[0], vgg.classifier[3], dropout)
    if backbone_weights is not None:
        # A view with the classifier's own module names (features.*, classifier.0/.3) sharing our layers,
        # so the file loads through the same checked path as every other backbone.
        view = nn.Module()
        view.features = backbone.features
        view.classifier = nn.Sequential(box_head.fc6, nn.ReLU(), nn.Dropout(), box_head.fc7)
        load_backbone_weights(view, "vgg16", backbone_weights, drop_prefixes=("classifier.6.",))
    _freeze_vgg_stages(backbone.features, trainable_layers)
    return _fast_rcnn(backbone, SingleLevelRoIPool(7, 1 / 16), box_head, 4096, num_classes, min_size, max_size,
                      image_mean, image_std, **_head_kwargs(batch_size_per_image, bg_iou_low, box_score_thresh,
                                                            box_nms_thresh, box_detections_per_img))


def _resnet_fpn_fast_rcnn(depth: int, num_classes: int, min_size: int, max_size: int, trainable_layers: int,
                          backbone_weights: str | None, image_mean, image_std, fpn_channels: int = 256,
                          representation_size: int = 1024, **head_kwargs) -> FastRCNN:
    # Faster R-CNN R50-FPN's box branch exactly (detectron2's "Fast R-CNN R50-FPN"): RoIAlign 7x7 over P2-P5.
    backbone = resnet_fpn_backbone(depth, trainable_layers, backbone_weights, out_channels=fpn_channels)
    pool = MultiScaleRoIAlign(featmap_names=["0", "1", "2", "3"], output_size=7, sampling_ratio=2)
    box_head = TwoMLPHead(backbone.out_channels * 7 * 7, representation_size)
    return _fast_rcnn(backbone, pool, box_head, representation_size, num_classes, min_size, max_size, image_mean,
                      image_std, **head_kwargs)


@register_model(task="detection", family="fast_rcnn", input_size=(3, 800, 800), num_classes=91, head=_HEAD,
                capabilities=Capabilities(needs_proposals=True))
def fast_rcnn_resnet50_fpn(num_classes: int = 91, min_size: int = 800, max_size: int = 1333,
                           trainable_layers: int = 3, batch_size_per_image: int = 64, bg_iou_low: float = 0.1,
                           box_score_thresh: float = 0.05, box_nms_thresh: float = 0.3,
                           box_detections_per_img: int = 100, image_mean: list[float] | None = None,
                           image_std: list[float] | None = None, backbone_weights: str | None = None):
    """Fast R-CNN, ResNet-50-FPN: Faster R-CNN R50-FPN without the RPN (its state dict minus rpn.* loads strict)."""
    return _resnet_fpn_fast_rcnn(50, num_classes, min_size, max_size, trainable_layers, backbone_weights,
                                 image_mean, image_std, **_head_kwargs(batch_size_per_image, bg_iou_low,
                                                                       box_score_thresh, box_nms_thresh,
                                                                       box_detections_per_img))


@register_model(task="detection", family="fast_rcnn", input_size=(3, 256, 256), num_classes=91, head=_HEAD,
                capabilities=Capabilities(needs_proposals=True))
def fast_rcnn_resnet18_fpn(num_classes: int = 91, min_size: int = 256, max_size: int = 256,
                           trainable_layers: int = 5, batch_size_per_image: int = 64, bg_iou_low: float = 0.1,
                           box_score_thresh: float = 0.05, box_nms_thresh: float = 0.3,
                           box_detections_per_img: int = 100, image_mean: list[float] | None = None,
                           image_std: list[float] | None = None, backbone_weights: str | None = None,
                           fpn_channels: int = 256, representation_size: int = 1024):
    """Fast R-CNN on a ResNet-18-FPN backbone: the small variant for CPU work (e.g. backbone_weights="shapes");
    `fpn_channels` / `representation_size` narrow the FPN and the box head as in faster_rcnn_resnet18_fpn."""
    return _resnet_fpn_fast_rcnn(18, num_classes, min_size, max_size, trainable_layers, backbone_weights,
                                 image_mean, image_std, fpn_channels, representation_size, **_head_kwargs(batch_size_per_image, bg_iou_low,
                                                                       box_score_thresh, box_nms_thresh,
                                                                       box_detections_per_img))
