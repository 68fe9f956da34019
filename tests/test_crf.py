import math

import pytest
import torch
import torch.nn.functional as F

from visionzoo.inference.crf import DenseCRF

# Moderate potentials so that both kernels matter and nothing saturates.
SMALL = dict(spatial_weight=0.5, spatial_sigma=2.0, bilateral_weight=1.0, bilateral_sigma_xy=4.0,
             bilateral_sigma_rgb=30.0)


def _reference(logits, images, iterations, radius, valid=None, spatial_weight=3.0, spatial_sigma=3.0,
               bilateral_weight=5.0, bilateral_sigma_xy=50.0, bilateral_sigma_rgb=13.0):
    """Mean field with the explicit (P, P) kernel matrix, j restricted to |dy|, |dx| <= radius, in float64."""
    logits, images = logits.double(), images.double()
    n, c, h, w = logits.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    pos = torch.stack([ys.reshape(-1), xs.reshape(-1)], 1)  # (P, 2)
    dpos = pos[:, None, :] - pos[None, :, :]
    d2 = dpos.pow(2).sum(-1)
    in_window = (dpos.abs() <= radius).all(-1) & ~torch.eye(h * w, dtype=torch.bool)
    out = []
    for b in range(n):
        rgb = images[b].reshape(3, -1).T  # (P, 3)
        c2 = (rgb[:, None, :] - rgb[None, :, :]).pow(2).sum(-1)
        kern = (bilateral_weight * torch.exp(-d2 / (2 * bilateral_sigma_xy ** 2) - c2 / (2 * bilateral_sigma_rgb ** 2))
                + spatial_weight * torch.exp(-d2 / (2 * spatial_sigma ** 2)))
        kern = kern * in_window
        if valid is not None:
            v = valid[b].reshape(-1).double()
            kern = kern * v[:, None] * v[None, :]
        unary = logits[b].reshape(c, -1)  # (C, P)
        z = unary
        for _ in range(iterations):
            q = z.softmax(0)
            # Potts: -sum_{l' != l} sum_j k(i, j) Q_j(l'), the literal update
            msg = q @ kern.T  # msg[l, i] = sum_j k(i, j) Q_j(l)
            z = unary - (msg.sum(0, keepdim=True) - msg)
        out.append(z.log_softmax(0).reshape(c, h, w))
    return torch.stack(out)


def _random_case(n=2, c=4, h=6, w=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=g) * 2
    images = torch.rand(n, 3, h, w, generator=g) * 255
    return logits, images


def test_zero_iterations_is_log_softmax():
    logits, images = _random_case()
    out = DenseCRF(iterations=0)(logits, images)
    torch.testing.assert_close(out, F.log_softmax(logits, dim=1))


@pytest.mark.parametrize("params", [SMALL, {}], ids=["small", "defaults"])
def test_matches_fully_connected_reference(params):
    logits, images = _random_case()
    crf = DenseCRF(iterations=3, window_radius=7, **params)  # window covers the whole 6 x 7 image
    expected = _reference(logits, images, 3, radius=100, **params)
    torch.testing.assert_close(crf(logits.double(), images.double()), expected, atol=1e-5, rtol=0)
    out32 = crf(logits, images)
    assert out32.dtype == torch.float32 and out32.shape == logits.shape
    torch.testing.assert_close(out32.double(), expected, atol=2e-4, rtol=1e-5)


@pytest.mark.parametrize("radius", [1, 2])
def test_window_truncation_is_exact(radius):
    logits, images = _random_case(seed=1)
    crf = DenseCRF(iterations=2, window_radius=radius, **SMALL)
    expected = _reference(logits, images, 2, radius=radius, **SMALL)
    torch.testing.assert_close(crf(logits.double(), images.double()), expected, atol=1e-5, rtol=0)
    # and the truncation matters: a wider window gives a different answer
    wider = _reference(logits, images, 2, radius=radius + 2, **SMALL)
    assert (wider - expected).abs().max() > 1e-3


def test_cleans_noisy_prediction_along_colour_edge():
    g = torch.Generator().manual_seed(0)
    h, w = 24, 24
    truth = torch.zeros(h, w, dtype=torch.long)
    truth[:, 11:] = 1  # a vertical edge between the two colours
    colours = torch.tensor([[60.0, 80.0, 100.0], [200.0, 160.0, 120.0]])
    image = colours[truth].permute(2, 0, 1) + 5 * torch.randn(3, h, w, generator=g)
    logits = 2.0 * F.one_hot(truth, 2).permute(2, 0, 1).float() + 1.5 * torch.randn(2, h, w, generator=g)
    before = (logits.argmax(0) != truth).sum().item()
    refined = DenseCRF()(logits[None], image.clamp(0, 255)[None])
    after = (refined[0].argmax(0) != truth).sum().item()
    assert before >= 40  # a genuinely noisy start (~17 % of 576 pixels)
    assert after <= before // 10
    # the result is a distribution
    torch.testing.assert_close(refined.exp().sum(1), torch.ones(1, h, w))


def test_bilateral_kernel_snaps_boundary_to_colour_edge():
    # The network's boundary is 3 px right of the colour edge: the appearance kernel moves it back,
    # the smoothness kernel alone (colour-blind, symmetric across a straight boundary) cannot.
    g = torch.Generator().manual_seed(0)
    h, w = 20, 24
    truth = torch.zeros(h, w, dtype=torch.long)
    truth[:, 11:] = 1
    colours = torch.tensor([[60.0, 80.0, 100.0], [200.0, 160.0, 120.0]])
    image = (colours[truth].permute(2, 0, 1) + 5 * torch.randn(3, h, w, generator=g)).clamp(0, 255)
    net = torch.zeros(h, w, dtype=torch.long)
    net[:, 14:] = 1
    logits = F.one_hot(net, 2).permute(2, 0, 1).float()[None]
    assert (logits[0].argmax(0) != truth).sum() == 3 * h
    refined = DenseCRF()(logits, image[None])
    assert (refined[0].argmax(0) != truth).sum() == 0
    spatial_only = DenseCRF(bilateral_weight=0.0)(logits, image[None])
    assert (spatial_only[0].argmax(0) != truth).sum() == 3 * h


def test_invalid_pixels_do_not_influence_valid_ones():
    logits, images = _random_case(n=2, h=8, w=9, seed=2)
    valid = torch.ones(2, 8, 9, dtype=torch.bool)
    valid[:, :, 6:] = False  # right padding
    valid[1, 0, 0] = False
    crf = DenseCRF(iterations=3, window_radius=3)
    out = crf(logits, images, valid)
    g = torch.Generator().manual_seed(3)
    logits2, images2 = logits.clone(), images.clone()
    logits2[~valid[:, None].expand_as(logits)] = 10 * torch.randn(int((~valid).sum()) * 4, generator=g)
    images2[~valid[:, None].expand_as(images)] = 255 * torch.rand(int((~valid).sum()) * 3, generator=g)
    out2 = crf(logits2, images2, valid)
    m = valid[:, None].expand_as(out)
    torch.testing.assert_close(out[m], out2[m])
    # invalid pixels are not refined
    torch.testing.assert_close(out2[~m], F.log_softmax(logits2, 1)[~m])
    # and it agrees with the reference that zeroes their kernel rows and columns
    expected = _reference(logits, images, 3, radius=3, valid=valid)
    torch.testing.assert_close(out.double(), expected, atol=2e-4, rtol=1e-5)
    # without the mask the padding would matter
    assert not torch.allclose(crf(logits, images)[m], crf(logits2, images2)[m])


def test_differentiable():
    logits, images = _random_case(n=1, h=5, w=5)
    logits.requires_grad_(True)
    DenseCRF(iterations=2, window_radius=2)(logits, images)[:, 0].sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


def test_shapes_and_edge_sizes():
    crf = DenseCRF(iterations=2, window_radius=3)
    for n, c, h, w in [(1, 3, 1, 1), (2, 2, 1, 9), (1, 5, 10, 3), (0, 3, 4, 4)]:
        logits = torch.randn(n, c, h, w)
        out = crf(logits, torch.rand(n, 3, h, w) * 255)
        assert out.shape == (n, c, h, w)
        assert torch.isfinite(out).all()
    assert len(crf.offsets(20, 20)) == 7 * 7 - 1
    assert len(crf.offsets(2, 20)) == 3 * 7 - 1  # clipped to offsets that land in the image


@pytest.mark.parametrize("kwargs", [
    dict(iterations=-1), dict(iterations=1.5), dict(window_radius=0), dict(spatial_sigma=0.0),
    dict(bilateral_sigma_xy=-1.0), dict(bilateral_sigma_rgb=math.inf), dict(spatial_weight=-0.1),
    dict(bilateral_weight=math.nan),
])
def test_bad_constructor_args(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        DenseCRF(**kwargs)


def test_bad_forward_args():
    crf = DenseCRF(iterations=1)
    logits, images = _random_case(n=2, h=6, w=7)
    with pytest.raises(ValueError, match="images"):
        crf(logits, images[:, :, :5])
    with pytest.raises(ValueError, match="images"):
        crf(logits, images[:1])
    with pytest.raises(ValueError, match="logits"):
        crf(logits[0], images[0])
    with pytest.raises(ValueError, match="floating"):
        crf(logits.long(), images)
    with pytest.raises(ValueError, match="valid"):
        crf(logits, images, torch.ones(2, 6, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        crf(logits, images, torch.ones(2, 6, 7))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    logits, images = _random_case(n=2, h=16, w=13)
    valid = torch.rand(2, 16, 13) > 0.1
    crf = DenseCRF(iterations=3, window_radius=4)
    cpu = crf(logits, images, valid)
    with torch.no_grad():
        gpu = crf(logits.cuda(), images.cuda(), valid.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-5)
