import pytest
import torch
import torch.nn.functional as F
from torch import nn

from visionzoo.inference.sliding_window import predict_logits, sliding_window_logits, tile_boxes


def _pointwise_model(num_classes=4, seed=0):
    """Per-pixel (1x1 conv): its output at a pixel does not depend on the tile it is computed in."""
    torch.manual_seed(seed)
    return nn.Conv2d(3, num_classes, kernel_size=1).double().eval()


class DictModel(nn.Module):
    """torchvision convention: {"out": logits, "aux": ...}."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        out = self.inner(x)
        return {"out": out, "aux": out * 0}


@pytest.mark.parametrize("size", [(5, 7), (16, 16), (29, 37), (17, 40), (50, 9), (16, 23)])
@pytest.mark.parametrize("overlap", [0.0, 1 / 3, 0.5])
def test_pointwise_model_sliding_equals_full_forward(size, overlap):
    model = _pointwise_model()
    images = torch.randn(2, 3, *size, dtype=torch.float64)
    with torch.no_grad():
        full = model(images)
        slid = sliding_window_logits(model, images, 4, 16, overlap)
        pred = predict_logits(model, images, window=16, overlap=overlap)
    assert slid.shape == full.shape == (2, 4, *size)
    torch.testing.assert_close(slid, full, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(pred, full, atol=1e-12, rtol=1e-12)


def test_rectangular_window_and_dict_model():
    model = DictModel(_pointwise_model(num_classes=3))
    images = torch.randn(1, 3, 31, 26, dtype=torch.float64)
    with torch.no_grad():
        full = model(images)["out"]
        torch.testing.assert_close(sliding_window_logits(model, images, 3, (12, 20)), full)
        torch.testing.assert_close(predict_logits(model, images, window=(12, 20), overlap=0.25), full)
        torch.testing.assert_close(predict_logits(model, images), full)  # one forward pass


def test_counts_average_overlapping_tiles():
    # a model that outputs ones: the canvas divided by the coverage count must give ones everywhere
    calls = []

    def ones(tile):
        calls.append(tuple(tile.shape[-2:]))
        return torch.ones(tile.shape[0], 2, *tile.shape[-2:])

    images = torch.zeros(1, 3, 23, 31)
    out = sliding_window_logits(ones, images, 2, 10, overlap=0.5)
    torch.testing.assert_close(out, torch.ones(1, 2, 23, 31))
    assert set(calls) == {(10, 10)}  # every tile has the window size
    # stride 5: rows start at 0, 5, 10, 13 (flush); columns at 0, 5, 10, 15, 20, 21 (flush)
    assert len(calls) == 4 * 6


@pytest.mark.parametrize("height,width,window,overlap", [
    (23, 31, 10, 0.5), (7, 7, 3, 0.0), (13, 5, 4, 1 / 3), (101, 33, (17, 8), 0.9), (3, 5, 8, 1 / 3),
])
def test_tiles_cover_every_pixel(height, width, window, overlap):
    boxes = tile_boxes(height, width, window, overlap)
    cover = torch.zeros(height, width, dtype=torch.long)
    wh, ww = (window, window) if isinstance(window, int) else window
    for y0, x0, y1, x1 in boxes:
        assert 0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width
        assert y1 - y0 == min(wh, height) and x1 - x0 == min(ww, width)  # full tiles inside the image
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1
    assert len(set(boxes)) == len(boxes)  # no tile twice


def test_window_larger_than_image_pads_then_crops():
    seen = []

    def model_fn(tile):
        seen.append(tile.clone())
        return tile[:, :2] * 2

    images = torch.randn(1, 3, 5, 7)
    out = sliding_window_logits(model_fn, images, 2, 8)
    assert len(seen) == 1 and seen[0].shape == (1, 3, 8, 8)
    assert seen[0][..., 5:, :].abs().sum() == 0 and seen[0][..., 7:].abs().sum() == 0  # zero padding
    torch.testing.assert_close(out, images[:, :2] * 2)


def test_low_resolution_output_is_upsampled():
    # stride-4 model: its logits come back at the input size, bilinear with align_corners=False
    model = nn.Sequential(nn.AvgPool2d(4), nn.Conv2d(3, 5, 1)).eval()
    images = torch.randn(2, 3, 32, 24)
    with torch.no_grad():
        out = predict_logits(model, images)
        expected = F.interpolate(model(images), size=(32, 24), mode="bilinear", align_corners=False)
        slid = predict_logits(model, images, window=16)
    torch.testing.assert_close(out, expected)
    assert slid.shape == (2, 5, 32, 24)


def test_bad_arguments():
    model = _pointwise_model()
    images = torch.randn(1, 3, 20, 20, dtype=torch.float64)
    for window in (0, -3, (8, 0), (8,), 2.5, True):
        with pytest.raises(ValueError, match="window"):
            sliding_window_logits(model, images, 4, window)
    for overlap in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="overlap"):
            sliding_window_logits(model, images, 4, 8, overlap)
        with pytest.raises(ValueError, match="overlap"):
            predict_logits(model, images, window=8, overlap=overlap)
    with pytest.raises(ValueError, match="images"):
        sliding_window_logits(model, images[0], 4, 8)
    with pytest.raises(ValueError, match="shape"):
        sliding_window_logits(model, images, 3, 8)  # the model gives 4 classes
    with pytest.raises(ValueError, match="'out'"):
        predict_logits(lambda x: {"logits": x}, images)
    with pytest.raises(ValueError, match="window"):
        tile_boxes(10, 10, 0)
