"""SiamFC / SINT networks, their losses, the crop geometry and the trackers' mechanics."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import visionzoo
from visionzoo.datasets.crops import box_in_crop, context_side, crop_and_resize
from visionzoo.models.siamfc import SiamFC, cross_correlate
from visionzoo.tasks.tracking.losses import contrastive_loss, siamfc_labels, siamfc_logistic_loss
from visionzoo.tracking import SiamFCParams, SiamFCTracker, SINTTracker, create_tracker, track_sequence
from visionzoo.tracking.sint import SINTParams, polar_candidates


def test_siamfc_shapes_and_parameter_count():
    model = visionzoo.create_model("siamfc_alexnet").eval()
    # conv 34,944 + 307,456 + 885,120 + 663,936 + 442,624; BN 2 x (96 + 256 + 384 + 384); the head's bias
    assert sum(p.numel() for p in model.parameters()) == 2_334_080 + 2 * 1120 + 1
    with torch.no_grad():
        assert model.embed(torch.zeros(1, 3, 127, 127)).shape == (1, 256, 6, 6)
        assert model.embed(torch.zeros(1, 3, 255, 255)).shape == (1, 256, 22, 22)
        assert model(torch.zeros(2, 3, 127, 127), torch.zeros(2, 3, 255, 255)).shape == (2, 1, 17, 17)
    # no padding anywhere in the embedding (translation equivariance, as the paper requires)
    assert all(m.padding == (0, 0) for m in model.modules() if isinstance(m, nn.Conv2d))
    assert visionzoo.model_info("siamfc_alexnet")["task"] == "tracking"


def test_cross_correlation_matches_per_sample_convolution_and_head_scale():
    torch.manual_seed(0)
    z, x = torch.randn(3, 8, 4, 4), torch.randn(3, 8, 11, 11)
    expected = torch.cat([F.conv2d(x[i:i + 1], z[i:i + 1]) for i in range(3)])
    assert torch.allclose(cross_correlate(z, x), expected, atol=1e-5)
    shared = cross_correlate(z[:1], x)  # one exemplar for a pyramid of search images
    assert torch.allclose(shared, F.conv2d(x, z[:1]), atol=1e-5)
    model = visionzoo.create_model("siamfc_alexnet", width=0.25).eval()
    with torch.no_grad():
        model.bias.fill_(0.5)
        fz, fx = model.embed(torch.randn(2, 3, 127, 127)), model.embed(torch.randn(2, 3, 255, 255))
        assert torch.allclose(model.correlate(fz, fx), cross_correlate(fz, fx) * 1e-3 + 0.5)
    with pytest.raises(ValueError, match="2 exemplars for 3 search"):
        cross_correlate(z[:2], x)


def test_siamfc_labels_radius_16px_and_balanced_loss():
    centred = torch.tensor([[107.5, 107.5, 147.5, 147.5]])  # centre 127.5 = the crop centre
    labels = siamfc_labels(centred, 17, 8, 255, 16.0)
    assert labels.shape == (1, 17, 17) and labels.sum() == 13  # cells within 2 strides: 1 + 4 + 4 + 4
    assert labels[0, 8, 8] == 1 and labels[0, 8, 10] == 1 and labels[0, 8, 11] == 0 and labels[0, 9, 10] == 0
    shifted = siamfc_labels(centred + 16, 17, 8, 255, 16.0)  # target 16 px right and down: peak moves 2 cells
    assert shifted[0, 10, 10] == 1 and shifted[0, 8, 8] == 0
    # class-balanced logistic loss by hand: positives and negatives each carry weight 1/2
    logits = torch.randn(1, 17, 17)
    pos, neg = labels > 0.5, labels < 0.5
    by_hand = 0.5 * F.softplus(-logits[pos]).mean() + 0.5 * F.softplus(logits[neg]).mean()
    assert torch.allclose(siamfc_logistic_loss(logits, labels), by_hand)


def test_contrastive_loss_both_forms_by_hand():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [0.6, 0.8]])  # squared distances 2 and 0.8
    same = torch.tensor([1.0, 0.0])
    # paper: 1/2 y D^2 + 1/2 (1 - y) max(0, eps - D^2)
    assert contrastive_loss(a, b, same, margin=1.0, form="paper").item() == pytest.approx((0.5 * 2 + 0.5 * 0.2) / 2)
    # Hadsell: 1/2 y D^2 + 1/2 (1 - y) max(0, eps - D)^2
    hadsell = (0.5 * 2 + 0.5 * (1.0 - math.sqrt(0.8)) ** 2) / 2
    assert contrastive_loss(a, b, same, margin=1.0, form="hadsell").item() == pytest.approx(hadsell, rel=1e-5)
    with pytest.raises(ValueError, match="loss.form"):
        contrastive_loss(a, b, same, 1.0, form="other")


def test_sint_embeddings_are_unit_norm_and_roi_formats_agree():
    model = visionzoo.create_model("sint_resnet18").eval()
    images = torch.randn(2, 3, 127, 127)
    boxes = [torch.tensor([[10.0, 10.0, 60.0, 70.0]]), torch.tensor([[0.0, 0.0, 30.0, 40.0], [40.0, 40.0, 120.0, 100.0]])]
    rois = torch.tensor([[0, 10.0, 10.0, 60.0, 70.0], [1, 0.0, 0.0, 30.0, 40.0], [1, 40.0, 40.0, 120.0, 100.0]])
    with torch.no_grad():
        e1, e2 = model(images, boxes), model(images, rois)
    assert e1.shape == (3, 128 * 49 + 256 * 49)
    assert torch.allclose(e1, e2) and torch.allclose(e1.norm(dim=1), torch.ones(3), atol=1e-5)
    with torch.device("meta"):
        paper = visionzoo.create_model("sint")
    # VGG16 conv1-conv5 (14,714,688) + fc6 on a 7x7x512 RoI (25,088 x 4,096 + 4,096)
    assert sum(p.numel() for p in paper.parameters()) == 14_714_688 + 25_088 * 4096 + 4096


def test_crop_geometry_and_mean_colour_padding():
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    # an aligned crop at scale 1 is plain slicing: centre (30, 20), side 20 -> rows 10..29, cols 20..39
    assert np.array_equal(crop_and_resize(image, (30.0, 20.0), 20, 20), image[10:30, 20:40])
    far = crop_and_resize(image, (500.0, 500.0), 10, 10)  # entirely outside: all mean colour
    assert np.abs(far.astype(float) - image.reshape(-1, 3).mean(0)).max() <= 1
    assert np.allclose(box_in_crop((25, 15, 10, 10), (30.0, 20.0), 20, 40), [10, 10, 20, 20])
    assert context_side(10, 30) == pytest.approx(math.sqrt(30 * 50))


def test_polar_candidates_cover_centre_rings_and_scales():
    p = SINTParams(radii=2, angles=4, scales=[0.5, 1.0])
    boxes = polar_candidates((50.0, 50.0), (20.0, 10.0), p)
    assert boxes.shape == (2 * (1 + 2 * 4), 4)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    assert np.allclose(boxes[0], [45, 47.5, 55, 52.5]) and np.allclose(boxes[9], [40, 45, 60, 55])  # scale 0.5, 1
    reach = np.sqrt(20 * 10)
    assert np.isclose(np.linalg.norm(centres[1:9] - 50, axis=1).max(), reach)


class _ColourEmbedding(nn.Module):
    """A fixed 'embedding': 8x8 average colour at stride 8 (no training needed to find a unique colour)."""

    total_stride = 8

    def __init__(self):
        super().__init__()
        self.pool = nn.AvgPool2d(8, 8)

    def forward(self, x):
        return self.pool(x)


def _moving_square_frames(n=12, size=(120, 160), step=(4, 3), side=16):
    frames, boxes = [], []
    for t in range(n):
        img = np.full((*size, 3), 128, np.uint8)
        x, y = 30 + step[0] * t, 40 + step[1] * t
        img[y:y + side, x:x + side] = (255, 0, 0)
        frames.append(img)
        boxes.append((x, y, side, side))
    return frames, np.array(boxes, dtype=float)


def test_siamfc_tracker_follows_a_moving_target():
    frames, truth = _moving_square_frames()
    model = SiamFC(_ColourEmbedding())
    tracker = SiamFCTracker(model, SiamFCParams(), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    result = track_sequence(tracker, frames, truth[0])
    centre_error = np.linalg.norm((result.boxes[:, :2] + result.boxes[:, 2:] / 2) - (truth[:, :2] + truth[:, 2:] / 2), axis=1)
    assert result.boxes.shape == (12, 4) and np.array_equal(result.boxes[0], truth[0])
    assert centre_error.max() < 4.0, centre_error
    assert result.fps > 0 and np.isnan(result.scores[0]) and np.all((result.scores[1:] > 0) & (result.scores[1:] < 1))
    with pytest.raises(ValueError, match="w, h > 0"):
        tracker.init(frames[0], (0, 0, -1, 5))
    with pytest.raises(RuntimeError, match="before init"):
        SiamFCTracker(model).update(frames[0])


def test_sint_tracker_follows_a_moving_target_with_a_colour_embedding():
    from visionzoo.models.sint import SINT

    class Trunk(nn.Module):
        def forward(self, x):
            return {"colour": F.avg_pool2d(x, 4, 4)}

    frames, truth = _moving_square_frames()
    model = SINT(Trunk(), {"colour": 1 / 4}, pool_size=3)
    tracker = SINTTracker(model, SINTParams(radii=8, angles=16), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    result = track_sequence(tracker, frames, truth[0])
    centre_error = np.linalg.norm((result.boxes[:, :2] + result.boxes[:, 2:] / 2) - (truth[:, :2] + truth[:, 2:] / 2), axis=1)
    assert centre_error.max() < 5.0, centre_error


def test_create_tracker_picks_the_family_and_checks_parameters():
    assert isinstance(create_tracker("siamfc_alexnet"), SiamFCTracker)
    assert isinstance(create_tracker("sint_resnet18"), SINTTracker)
    five = create_tracker("siamfc_alexnet", **vars(SiamFCParams.five_scale()))
    assert five.params.scale_num == 5 and len(five.scale_factors) == 5
    assert five.scale_factors[0] == pytest.approx(1.0255 ** -2)
    with pytest.raises(ValueError, match="scale_nmu"):
        create_tracker("siamfc_alexnet", scale_nmu=5)
    with pytest.raises(ValueError, match="not a tracker"):
        create_tracker("resnet18")
    with pytest.raises(ValueError, match="odd"):
        create_tracker("siamfc_alexnet", scale_num=4)
