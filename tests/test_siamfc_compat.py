"""siamfc-pytorch checkpoints (github.com/huanglianghua/siamfc-pytorch) through
create_tracker("siamfc_alexnet", weights=PATH, compat="siamfc-pytorch"), against fixtures worked out from that
project's published formulas (it is not a package to install): a state dict in its key layout written with
torch.save of plain tensors; its network written out with torch.nn.functional; its crop rule (integer side
and corner, constant padding with the mean colour, cv2 bilinear resize) done pixel by pixel; its box origin
(1-based) by hand; and its whole tracking step re-derived here and compared over a short sequence."""
from __future__ import annotations

from collections import OrderedDict

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import visionzoo
from visionzoo.tracking.siamfc_pytorch import center_and_size_from_one_based, integer_crop, one_based_box

# siamfc-pytorch's AlexNetV1: conv1..conv5 are nn.Sequential(Conv2d, BatchNorm2d, ...); conv5 is a Conv2d alone.
# (out channels, in channels per group, kernel, stride, groups, has BatchNorm + ReLU, max-pool after)
ALEXNET_V1 = [("conv1", 96, 3, 11, 2, 1, True, True), ("conv2", 256, 48, 5, 1, 2, True, True),
              ("conv3", 384, 256, 3, 1, 1, True, False), ("conv4", 384, 192, 3, 1, 2, True, False),
              ("conv5", 256, 192, 3, 1, 2, False, False)]


def _their_state_dict(seed: int = 0) -> OrderedDict:
    """Random weights in the checkpoint's key layout, scaled so that raw 0-255 input gives moderate responses."""
    g = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for name, cout, cin, k, _, _, bn, _ in ALEXNET_V1:
        fan_in = cin * k * k
        damp = 8.0 if name == "conv5" else 1.0  # responses (quadratic in conv5) of about 1, not saturated scores
        state[f"backbone.{name}.0.weight"] = torch.randn(cout, cin, k, k, generator=g) / fan_in ** 0.5 / damp
        state[f"backbone.{name}.0.bias"] = torch.randn(cout, generator=g) * 0.1 / damp
        if bn:
            state[f"backbone.{name}.1.weight"] = 1 + 0.1 * torch.randn(cout, generator=g)
            state[f"backbone.{name}.1.bias"] = 0.1 * torch.randn(cout, generator=g)
            state[f"backbone.{name}.1.running_mean"] = torch.randn(cout, generator=g)
            state[f"backbone.{name}.1.running_var"] = 1 + torch.rand(cout, generator=g) * (100 if name == "conv1" else 4)
            state[f"backbone.{name}.1.num_batches_tracked"] = torch.tensor(1000)
    return state


def _their_backbone(state, x: torch.Tensor) -> torch.Tensor:
    """AlexNetV1 in eval mode, written out layer by layer (BatchNorm eps 1e-6)."""
    for name, _, _, _, stride, groups, bn, pool in ALEXNET_V1:
        x = F.conv2d(x, state[f"backbone.{name}.0.weight"], state[f"backbone.{name}.0.bias"], stride=stride,
                     groups=groups)
        if bn:
            p = f"backbone.{name}.1."
            x = F.relu(F.batch_norm(x, state[p + "running_mean"], state[p + "running_var"], state[p + "weight"],
                                    state[p + "bias"], training=False, eps=1e-6))
        if pool:
            x = F.max_pool2d(x, 3, 2)
    return x


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    state = _their_state_dict()
    path = tmp_path_factory.mktemp("siamfc_pytorch") / "siamfc_alexnet_e50.pth"
    torch.save(state, path)
    return path, state


def _direct_crop(image, center_rc, side, out_size, mean_color):
    """The crop rule, pixel by pixel: side = round(side); top-left = round(centre - (side - 1) / 2); pixels off
    the image take the mean colour (rounded to uint8, as OpenCV stores it); then cv2.resize, bilinear."""
    side = int(round(float(side)))
    top, left = (int(v) for v in np.round(np.asarray(center_rc, dtype=np.float32) - (side - 1) / 2))
    border = np.round(np.asarray(mean_color, dtype=np.float64)).astype(np.uint8)
    patch = np.empty((side, side, 3), dtype=np.uint8)
    for i in range(side):
        for j in range(side):
            r, c = top + i, left + j
            inside = 0 <= r < image.shape[0] and 0 <= c < image.shape[1]
            patch[i, j] = image[r, c] if inside else border
    return cv2.resize(patch, (out_size, out_size), interpolation=cv2.INTER_LINEAR)


def test_one_based_box_origin_by_hand():
    # x = 1, w = 4 covers pixel columns 0..3 (0-based): centre column 1.5; y = 1, h = 2: rows 0..1, centre 0.5
    center, size = center_and_size_from_one_based([1, 1, 4, 2])
    assert center.dtype == np.float32 and center.tolist() == [0.5, 1.5] and size.tolist() == [2, 4]
    assert one_based_box(center, size).tolist() == [1, 1, 4, 2]
    center, size = center_and_size_from_one_based([10.5, 20.25, 7, 3])
    assert center.tolist() == [20.25 - 1 + 1, 10.5 - 1 + 3] and one_based_box(center, size).tolist() == [10.5, 20.25, 7, 3]


def test_integer_crop_hand_worked_and_against_the_pixel_rule():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
    mean = np.array([100.3, 50.6, 200.2])
    # side 4.6 -> 5; top-left = round((5, 7.3) - 2) = (3, 5): with out_size 5 the crop is the image window itself
    assert np.array_equal(integer_crop(image, np.float32([5.0, 7.3]), 4.6, 5, mean), image[3:8, 5:10])
    # half to even: side 4.5 -> 4, corner round(2 - 1.5) = round(0.5) = 0 and round(3 - 1.5) = round(1.5) = 2
    assert np.array_equal(integer_crop(image, np.float32([2.0, 3.0]), 4.5, 4, mean), image[0:4, 2:6])
    # two rows and columns above / left of the image take the mean colour, rounded
    corner = integer_crop(image, np.float32([0.0, 0.0]), 5, 5, mean)
    assert (corner[:2] == [100, 51, 200]).all() and (corner[:, :2] == [100, 51, 200]).all()
    assert np.array_equal(corner[2:, 2:], image[:3, :3])
    for center, side, out in [((8.0, 10.0), 9.7, 31), ((0.4, 19.6), 13.2, 17), ((15.5, -3.0), 30.0, 12),
                              ((7.25, 9.75), 40.5, 63), ((3.0, 3.0), 1.0, 7)]:
        got = integer_crop(image, np.float32(center), side, out, mean)
        assert got.shape == (out, out, 3)
        assert np.array_equal(got, _direct_crop(image, center, side, out, mean)), (center, side, out)


def test_checkpoint_keys_map_onto_siamfc_alexnet(checkpoint, one_thread):
    from visionzoo.models.siamfc import load_siamfc_pytorch

    path, state = checkpoint
    model = load_siamfc_pytorch(path)
    for ours, theirs in [(0, "conv1.0"), (1, "conv1.1"), (4, "conv2.0"), (5, "conv2.1"), (8, "conv3.0"),
                         (9, "conv3.1"), (11, "conv4.0"), (12, "conv4.1"), (14, "conv5.0")]:
        for leaf, value in model.backbone[ours].state_dict().items():
            assert torch.equal(value, state[f"backbone.{theirs}.{leaf}"]), (ours, theirs, leaf)
    assert model.bias.item() == 0.0 and model.out_scale == 0.001
    # the network on raw 0-255 pixels: embeddings and the 0.001 x cross-correlation response, no bias
    g = torch.Generator().manual_seed(1)
    z, x = torch.rand(1, 3, 127, 127, generator=g) * 255, torch.rand(2, 3, 255, 255, generator=g) * 255
    with torch.no_grad():
        kz, kx = _their_backbone(state, z), _their_backbone(state, x)
        assert kz.shape == (1, 256, 6, 6) and kx.shape == (2, 256, 22, 22)
        assert torch.allclose(model.embed(x), kx, rtol=1e-4, atol=1e-4 * kx.abs().max().item())
        expected = F.conv2d(kx, kz) * 0.001
        assert torch.allclose(model.correlate(model.embed(z), model.embed(x)), expected, rtol=1e-4,
                              atol=1e-4 * expected.abs().max().item())


def _reference_track(state, frames, box, penalty=0.9745):
    """siamfc-pytorch's tracker re-derived from its published formulas (its default parameters), numpy + cv2."""
    center = np.array([box[1] - 1 + (box[3] - 1) / 2, box[0] - 1 + (box[2] - 1) / 2], dtype=np.float32)
    size = np.array([box[3], box[2]], dtype=np.float32)
    up = 16 * 17
    hann = np.outer(np.hanning(up), np.hanning(up))
    hann /= hann.sum()
    factors = 1.0375 ** np.linspace(-1, 1, 3)
    context = 0.5 * np.sum(size)
    z_side = np.sqrt(np.prod(size + context))
    x_side = z_side * 255 / 127
    mean = np.mean(frames[0], axis=(0, 1))
    z = _direct_crop(frames[0], center, z_side, 127, mean)
    with torch.no_grad():
        kernel = _their_backbone(state, torch.from_numpy(z).permute(2, 0, 1)[None].float())
    boxes = [np.asarray(box, dtype=np.float64)]
    for frame in frames[1:]:
        crops = np.stack([_direct_crop(frame, center, x_side * f, 255, mean) for f in factors])
        with torch.no_grad():
            feats = _their_backbone(state, torch.from_numpy(crops).permute(0, 3, 1, 2).float())
            responses = (F.conv2d(feats, kernel) * 0.001)[:, 0].numpy()
        responses = np.stack([cv2.resize(r, (up, up), interpolation=cv2.INTER_CUBIC) for r in responses])
        responses[0] *= penalty
        responses[2] *= penalty
        best = int(np.argmax(responses.reshape(3, -1).max(1)))
        r = responses[best] - responses[best].min()
        r = r / (r.sum() + 1e-16)
        r = 0.824 * r + 0.176 * hann
        row, col = np.unravel_index(r.argmax(), r.shape)
        shift = (np.array([row, col]) - (up - 1) / 2) * 8 / 16 * x_side * factors[best] / 255
        center += shift
        scale = 0.41 + 0.59 * factors[best]
        size *= scale
        z_side, x_side = z_side * scale, x_side * scale
        boxes.append(np.array([center[1] + 1 - (size[1] - 1) / 2, center[0] + 1 - (size[0] - 1) / 2,
                               size[1], size[0]], dtype=np.float64))
    return np.stack(boxes)


def _moving_square(n=5, shape=(150, 200)):
    rng = np.random.default_rng(3)
    background = rng.integers(0, 120, (*shape, 3), dtype=np.uint8)
    frames = []
    for t in range(n):
        frame = background.copy()
        x, y = 70 + 4 * t, 50 + 3 * t
        frame[y:y + 30, x:x + 24] = (250, 200, 30)
        frames.append(frame)
    return frames


def test_tracker_follows_the_reference_step_by_step(checkpoint, one_thread):
    path, state = checkpoint
    frames = _moving_square()
    init = (71.0, 51.0, 24.0, 30.0)  # 1-based: the square's pixels start at column 70, row 50
    tracker = visionzoo.create_tracker("siamfc_alexnet", weights=str(path), compat="siamfc-pytorch")
    result = visionzoo.track_sequence(tracker, frames, init)
    expected = _reference_track(state, frames, init)
    assert np.allclose(result.boxes, expected, rtol=0, atol=1e-3), (result.boxes, expected)
    assert ((result.scores[1:] > 0.5) & (result.scores[1:] < 0.99)).all()  # sigmoid of the peak logit
    assert (np.diff(result.boxes[:, 0]) > 0).all() and (np.diff(result.boxes[:, 1]) > 0).all()  # it follows

    # a penalty above 1 favours the outer scales: the scale search, penalty and damped size update run too
    tracker = visionzoo.create_tracker("siamfc_alexnet", weights=str(path), compat="siamfc-pytorch",
                                       scale_penalty=1.2)
    result = visionzoo.track_sequence(tracker, frames, init)
    expected = _reference_track(state, frames, init, penalty=1.2)
    assert np.allclose(result.boxes, expected, rtol=0, atol=1e-3), (result.boxes, expected)
    ratios = result.boxes[1:, 2] / result.boxes[:-1, 2]  # sizes change by 0.41 + 0.59 x 1.0375^{-1, 0, 1}
    steps = [0.41 + 0.59 / 1.0375, 1.0, 0.41 + 0.59 * 1.0375]
    assert all(np.isclose(r, steps, rtol=1e-5).any() for r in ratios) and not np.allclose(ratios, 1.0)


class _Payload:
    """Not a tensor: torch.load(weights_only=True) must refuse to rebuild it."""


def test_bad_checkpoints_and_options_are_named(tmp_path, checkpoint):
    path, state = checkpoint
    ours = tmp_path / "ours.pth"
    torch.save(visionzoo.create_model("siamfc_alexnet").state_dict(), ours)
    with pytest.raises(ValueError, match=r"not a siamfc-pytorch AlexNetV1 state dict: missing \['backbone.conv1.0.bias'"):
        visionzoo.create_tracker("siamfc_alexnet", weights=str(ours), compat="siamfc-pytorch")
    partial = tmp_path / "partial.pth"
    torch.save(OrderedDict((k, v) for k, v in state.items() if not k.startswith("backbone.conv5")), partial)
    with pytest.raises(ValueError, match=r"missing \['backbone.conv5.0.bias', 'backbone.conv5.0.weight'\]"):
        visionzoo.create_tracker("siamfc_alexnet", weights=str(partial), compat="siamfc-pytorch")
    extra = tmp_path / "extra.pth"
    torch.save(OrderedDict(state, **{"head.weight": torch.zeros(1)}), extra)
    with pytest.raises(ValueError, match=r"unexpected \['head.weight'\]"):
        visionzoo.create_tracker("siamfc_alexnet", weights=str(extra), compat="siamfc-pytorch")
    narrow = tmp_path / "narrow.pth"
    torch.save(OrderedDict(state, **{"backbone.conv1.0.weight": torch.zeros(48, 3, 11, 11)}), narrow)
    with pytest.raises(ValueError, match=r"backbone.conv1.0.weight has shape \(48, 3, 11, 11\)"):
        visionzoo.create_tracker("siamfc_alexnet", weights=str(narrow), compat="siamfc-pytorch")
    pickled = tmp_path / "pickled.pth"
    torch.save({"net": _Payload()}, pickled)
    with pytest.raises(ValueError, match="weights_only=True"):
        visionzoo.create_tracker("siamfc_alexnet", weights=str(pickled), compat="siamfc-pytorch")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        visionzoo.create_tracker("siamfc_alexnet", weights=str(tmp_path / "missing.pth"), compat="siamfc-pytorch")
    with pytest.raises(ValueError, match="compat='pysot' is not known; one of: siamfc-pytorch"):
        visionzoo.create_tracker("siamfc_alexnet", weights=str(path), compat="pysot")
    with pytest.raises(ValueError, match="not 'sint_resnet18'"):
        visionzoo.create_tracker("sint_resnet18", weights=str(path), compat="siamfc-pytorch")
    with pytest.raises(ValueError, match="needs weights=PATH"):
        visionzoo.create_tracker("siamfc_alexnet", compat="siamfc-pytorch")
    with pytest.raises(ValueError, match="max_scale, min_scale cannot be set"):
        visionzoo.create_tracker("siamfc_alexnet", weights=str(path), compat="siamfc-pytorch", min_scale=0.1,
                                 max_scale=3.0)
    with pytest.raises(ValueError, match="mean cannot be set"):
        visionzoo.create_tracker("siamfc_alexnet", weights=str(path), compat="siamfc-pytorch", mean=(0.5,) * 3)
    with pytest.raises(ValueError, match="scale_nmu"):
        visionzoo.create_tracker("siamfc_alexnet", weights=str(path), compat="siamfc-pytorch", scale_nmu=5)
