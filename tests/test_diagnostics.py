"""Diagnostics (visionzoo/diagnostics): lr range test, overfit verdicts, gradient checks, layer statistics and
visualisations, in process (the command line is in test_diagnostics_cli.py)."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.helpers import write_in_memory_shapes_config
from visionzoo.diagnostics import ActivationStats, check_function, check_model, check_module, lr_range_test
from visionzoo.diagnostics.common import find_module
from visionzoo.diagnostics.gradcheck import default_input_shapes
from visionzoo.diagnostics.lr_finder import save_lr_find, suggest_lr
from visionzoo.diagnostics.overfit import diagnose
from visionzoo.diagnostics.stats import channel_correlation

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


# ---- lr range test ------------------------------------------------------------------------------------------

def _least_squares(seed=0):
    """A convex problem with a known curvature: gradient descent on 0.5 * mean((Xw - y)^2) is stable for
    lr < 2 / L, L the largest eigenvalue of X^T X / n, and fastest around 1 / L."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 10, generator=g, dtype=torch.float64) * torch.logspace(0, 0.5, 10, dtype=torch.float64)
    y = x @ torch.randn(10, 1, generator=g, dtype=torch.float64)
    curvature = float(torch.linalg.eigvalsh(x.T @ x / len(x)).max())
    w = torch.zeros(10, 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([w], lr=1.0)

    def step():
        opt.zero_grad()
        loss = 0.5 * ((x @ w - y) ** 2).mean()
        loss.backward()
        opt.step()
        return float(loss.detach())

    def set_lr(lr):
        for group in opt.param_groups:
            group["lr"] = lr

    return step, set_lr, curvature


def test_lr_range_test_suggests_a_stable_lr_on_a_convex_problem_and_stops_on_divergence(tmp_path):
    step, set_lr, L = _least_squares()
    result = lr_range_test(step, set_lr, start_lr=1e-4 / L, end_lr=1e3 / L, steps=100, progress=False)
    # gradient descent diverges above 2 / L: the suggestion must be below, and not absurdly small
    assert 0.01 / L < result.suggested_lr < 2 / L
    assert result.steepest_lr == result.suggested_lr
    # divergence stopped the sweep early, at an lr past the stability limit
    assert result.stopped_early and "diverged" in result.stop_reason
    assert len(result.lrs) < 100 and result.lrs[-1] > 2 / L
    assert result.smoothed[-1] > 4 * min(result.smoothed[:-1])
    # the lrs grow exponentially
    ratios = np.diff(np.log(result.lrs))
    assert np.allclose(ratios, ratios[0])
    files = save_lr_find(result, tmp_path)
    assert files["png"].stat().st_size > 1000 and files["json"].is_file()


def test_lr_range_test_stops_on_nan_and_validates_its_arguments():
    losses = iter([1.0, 0.9, 0.8, math.nan, 0.1])
    result = lr_range_test(lambda: next(losses), lambda lr: None, start_lr=1e-3, end_lr=1.0, steps=5, progress=False)
    assert result.stopped_early and len(result.lrs) == 4 and "nan" in result.stop_reason
    with pytest.raises(ValueError, match="start_lr < end_lr"):
        lr_range_test(lambda: 1.0, lambda lr: None, start_lr=1.0, end_lr=0.1, steps=10, progress=False)
    with pytest.raises(ValueError, match="at least 2 steps"):
        lr_range_test(lambda: 1.0, lambda lr: None, start_lr=1e-3, end_lr=1.0, steps=1, progress=False)


def test_suggest_lr_on_a_flat_or_rising_curve():
    lrs = np.logspace(-5, 0, 30)
    suggested, steepest, min_lr, note = suggest_lr(lrs, np.linspace(2.0, 1.9999, 30))
    assert steepest is None and "hardly fell" in note
    suggested, steepest, min_lr, note = suggest_lr(lrs, np.linspace(1, 3, 30))
    assert suggested is None and "lower --start-lr" in note


# ---- overfit verdicts ---------------------------------------------------------------------------------------

def test_overfit_diagnoses():
    kind, msg = diagnose([2.0, 1.5, math.nan], error=None, target_error=0.0, target_loss=0.1, predicted=None,
                         targets=None)
    assert kind == "loss_nan" and "step 3" in msg
    kind, msg = diagnose([1.6] * 50, error=0.8, target_error=0.0, target_loss=0.1,
                         predicted=torch.full((8,), 2), targets=torch.tensor([0, 1, 2, 3, 4, 0, 1, 2]))
    assert kind == "one_class" and "predicts one class (2)" in msg
    kind, msg = diagnose([1.6] * 50, error=0.8, target_error=0.0, target_loss=0.1, predicted=torch.arange(8) % 5,
                         targets=torch.arange(8) % 5, lr=1e-9)
    assert kind == "not_falling" and "1e-09" in msg
    kind, msg = diagnose(list(np.linspace(1.6, 0.4, 50)), error=0.25, target_error=0.0, target_loss=0.1,
                         predicted=torch.arange(8) % 5, targets=torch.arange(8) % 5)
    assert kind == "not_enough_steps" and "0.25" in msg


def _tiny_config(tmp_path, **optim):
    from visionzoo.config import load_config

    return load_config(write_in_memory_shapes_config(tmp_path / "tiny.yaml", lr=optim.get("lr", 0.002)))


def test_overfit_check_memorises_eight_shapes(tmp_path):
    from visionzoo.diagnostics import overfit_check

    cfg = _tiny_config(tmp_path)
    result = overfit_check(cfg, samples=8, steps=80, eval_every=5, progress=False)
    assert result.status == "passed", result.verdict
    assert result.verdict.startswith("reached 0 training error at step")
    assert result.errors[-1][1] == 0.0 and result.reached_step == result.errors[-1][0]
    assert cfg.data.augment.enabled is False and any("augmentation off" in n for n in result.notes)


# ---- gradient checks ----------------------------------------------------------------------------------------

class _WrongSquare(torch.autograd.Function):
    """x^2 with a deliberately wrong backward (3x instead of 2x)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 3 * x * grad


class _RightSquare(_WrongSquare):
    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


def test_gradcheck_fails_a_wrong_custom_backward_and_passes_the_right_one():
    x = torch.randn(6)
    (wrong,) = check_function(_WrongSquare.apply, [x], name="wrong")
    assert not wrong.passed and "Jacobian mismatch" in wrong.message
    assert wrong.max_rel_error > 0.1  # 3x vs 2x: a third of the analytic value
    (right,) = check_function(_RightSquare.apply, [x], name="right")
    assert right.passed and right.max_abs_error < 1e-6 and right.mode == "full"


def test_gradcheck_siamfc_cross_correlation():
    from visionzoo.models.siamfc import cross_correlate

    results = check_function(cross_correlate, [torch.randn(2, 3, 3, 3), torch.randn(2, 3, 7, 7)], name="xcorr")
    assert [r.name for r in results] == ["xcorr: input 0", "xcorr: input 1"]
    assert all(r.passed and r.max_abs_error < 1e-6 for r in results)


def test_gradcheck_dense_crf_is_differentiable_in_the_logits():
    from visionzoo.inference.crf import DenseCRF

    crf = DenseCRF(iterations=2, window_radius=1)
    logits, images = torch.randn(1, 3, 5, 5), torch.rand(1, 3, 5, 5) * 255
    (result,) = check_function(crf, [logits, images], wrt=[0], name="crf")
    assert result.passed and result.max_abs_error < 1e-6


def test_gradcheck_vae_loss_terms_with_sampling_noise_and_parameters():
    from visionzoo.factory import create_model

    vae = create_model("vae_mlp", image_size=4, channels=1, latent_dim=2, hidden=8)
    x = torch.rand(2, 1, 4, 4)
    # loss_terms draws its reparameterisation noise inside: the check re-seeds before every call
    results = check_module(vae, [x], name="vae_mlp")
    assert [r.name for r in results] == ["vae_mlp: input 0", "vae_mlp: parameters"]
    assert all(r.passed for r in results), [r.line() for r in results]


def test_gradcheck_sint_contrastive_loss_names_its_float32_cast():
    from visionzoo.tasks.tracking.losses import contrastive_loss

    same = torch.tensor([1.0, 0.0, 1.0, 0.0])

    def loss(a, b):
        return contrastive_loss(a, b, same.to(a.dtype), margin=1.0)

    a, b = torch.randn(4, 8) * 0.3, torch.randn(4, 8) * 0.3
    # the loss computes in float32 (a.float()), so float64 finite differences cannot confirm it, and say why
    results = check_function(loss, [a, b], name="contrastive")
    assert not any(r.passed for r in results)
    assert all("float -> float32" in r.message for r in results)
    # at its own precision, with a matching step and tolerances, its gradient is right
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gradcheck's "not double precision" warning
        results = check_function(loss, [a, b], name="contrastive", dtype=torch.float32, eps=1e-3, atol=1e-3,
                                 rtol=1e-2)
    assert all(r.passed for r in results)


def test_gradcheck_models_and_bad_requests():
    results = check_model("dae_conv", input_shapes=[(1, 3, 32, 32)], params=False, progress=False)
    assert len(results) == 1 and results[0].passed and results[0].numel == 3 * 32 * 32
    with pytest.raises(ValueError, match="list of images"):
        check_model("faster_rcnn_resnet18_fpn", progress=False)
    with pytest.raises(ValueError, match="GAN.*--submodule generator"):
        check_model("dcgan", progress=False)
    with pytest.raises(ValueError, match="forward on inputs of shape"):
        check_module(nn.Linear(4, 2), [torch.randn(1, 5)])


def test_gradcheck_default_inputs_take_the_models_own_channels_and_small_sizes():
    # the grey 28-px LeNet-5 and the 42-px distorted-MNIST CNN, then a 224-px RGB classifier at 32 px
    assert default_input_shapes("lenet5") == [(1, 1, 28, 28)]
    assert default_input_shapes("mnist_cnn") == [(1, 1, 42, 42)]
    assert default_input_shapes("resnet18") == [(1, 3, 32, 32)]
    results = check_model("lenet5", params=False, progress=False)
    assert len(results) == 1 and results[0].passed and results[0].numel == 28 * 28


# ---- layer statistics ---------------------------------------------------------------------------------------

class _Probe(nn.Module):
    """dead: a ReLU after a layer whose bias makes every pre-activation negative; sat: a sigmoid of large
    inputs; twins: a conv whose 4 output channels are one channel repeated (correlation 1)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 16)
        self.dead = nn.ReLU()
        self.big = nn.Linear(8, 16)
        self.sat = nn.Sigmoid()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)
        self.relu = nn.ReLU()
        with torch.no_grad():
            self.fc.weight.mul_(0.01)
            self.fc.bias.fill_(-10.0)
            self.big.weight.mul_(100.0)

    def forward(self, x, img):
        a = self.dead(self.fc(x))
        b = self.sat(self.big(x))
        maps = self.conv(img).repeat(1, 4, 1, 1)
        c = self.relu(maps) + self.relu(-maps)  # the ReLU is called twice: two entries
        return a.sum() + b.sum() + c.mean()


def test_activation_stats_records_and_warns():
    torch.manual_seed(0)
    model = _Probe()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    stats = ActivationStats(interval=2).attach(model)
    assert {"dead", "sat", "conv", "relu"} <= set(stats.hooked_layers)
    for step in range(4):
        stats.begin_step(step)
        loss = model(torch.randn(32, 8), torch.randn(4, 3, 8, 8))
        opt.zero_grad()
        loss.backward()
        stats.after_backward(opt)
        opt.step()
        stats.after_optimizer_step()
        stats.end_step({"loss": float(loss.detach())})
    assert [r["step"] for r in stats.records] == [0, 2]  # every 2nd step
    acts = stats.records[0]["activations"]
    assert acts["dead"]["dead_fraction"] == 1.0 and acts["dead"]["zero_fraction"] == 1.0
    assert acts["sat"]["saturated_fraction"] > 0.5
    assert acts["conv"].get("channel_correlation") is None  # one channel: nothing to correlate
    assert "relu#2" in acts and acts["relu"]["channel_correlation"] == pytest.approx(1.0, abs=1e-4)
    params = stats.records[0]["params"]
    assert params["big.weight"]["grad_norm"] > 0
    ratio = params["big.weight"]["update_ratio"]
    assert ratio > 0
    kinds = {(w["layer"], w["kind"]) for w in stats.warnings()}
    assert {("dead", "dead_relu"), ("sat", "saturated"), ("relu", "correlated")} <= kinds
    summary = stats.summary()
    assert summary["steps"] == 2 and summary["activations"]["dead"]["dead_fraction"]["mean"] == 1.0
    records = stats.to_json_records()
    assert records[0]["type"] == "stats" and records[-1]["type"] == "summary"
    stats.detach()
    stats.begin_step(4)
    model(torch.randn(2, 8), torch.randn(1, 3, 8, 8))
    assert stats.end_step() is not None and not stats.records[-1]["activations"]  # hooks removed


def test_channel_correlation_matches_numpy():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 1, 6, 6, generator=g)
    x = torch.cat([base, 0.5 * base + torch.randn(4, 1, 6, 6, generator=g), torch.randn(4, 1, 6, 6, generator=g)], 1)
    flat = x.transpose(0, 1).reshape(3, -1).numpy()
    c = np.abs(np.corrcoef(flat))
    expected = (c.sum() - np.trace(c)) / 6
    assert channel_correlation(x) == pytest.approx(expected, rel=1e-5)


def test_unknown_layer_names_close_matches():
    from torchvision.models import resnet18

    with pytest.raises(ValueError, match=r"no layer 'layer1\.0\.conv3'.*closest: .*layer1\.0\.conv1"):
        find_module(resnet18(), "layer1.0.conv3")


# ---- visualisation on the shipped classifier -----------------------------------------------------------------

WEIGHTS = ROOT / "weights" / "resnet18.shapes.safetensors"


@pytest.fixture(scope="module")
def shapes_val(tmp_path_factory):
    """The first 64 val images of the shapes data the classifier was trained on (seed 0, 64 px), written anew."""
    from visionzoo.datasets.write_shapes import write_image_folder

    root = tmp_path_factory.mktemp("shapes")
    write_image_folder(root, image_size=64, counts={"train": 0, "val": 64, "test": 0}, seed=0, progress=False)
    return root


def _shape_image_and_mask(shapes: Path, index: int):
    """val image `index` of the shapes data and the mask of its shape, re-rendered from the dataset's seed (and
    checked to be the same picture as the file)."""
    from PIL import Image

    from visionzoo.datasets.shapes import (
        CLASSIFICATION_SIZE_RANGE,
        SHAPE_CLASSES,
        render_scene,
        sample_seed,
        sample_shape,
    )

    rng = np.random.default_rng(sample_seed(0, "val", index))
    label = int(rng.integers(len(SHAPE_CLASSES)))
    spec = sample_shape(rng, 64, SHAPE_CLASSES[label], size_range=CLASSIFICATION_SIZE_RANGE)
    image, masks = render_scene([spec], 64, rng)
    path = shapes / "val" / SHAPE_CLASSES[label] / f"val_{index:05d}.png"
    on_disk = Image.open(path).convert("RGB")
    assert np.array_equal(np.asarray(on_disk), np.asarray(image)), path
    return on_disk, masks[0], label


def test_visualisations_of_the_shipped_classifier(shapes_val):
    from visionzoo.config import validate
    from visionzoo.diagnostics import visualize as vis
    from visionzoo.factory import create_model
    from visionzoo.tasks.classification.task import build_transforms
    from visionzoo.weights import read_card

    model = create_model("resnet18", weights=str(WEIGHTS)).float().eval()
    cfg = validate(read_card(WEIGHTS)["config"])
    cfg.data.root = str(shapes_val)
    preprocess = build_transforms(cfg, train=False)
    name, w, grid = vis.first_layer_filters(model)
    assert name == "conv1" and w.shape == (64, 3, 7, 7) and grid.size[0] > 100

    from visionzoo.datasets.shapes import SHAPE_CLASSES, _dilate

    names = read_card(WEIGHTS)["class_names"]  # the ImageFolder (alphabetical) order the model was trained in
    ratios, enrichment, correct = [], [], 0
    for index in range(6):
        image, mask, label = _shape_image_and_mask(shapes_val, index)
        x = preprocess(image)
        maps = vis.feature_maps(model, "layer1", x)
        assert maps.shape == (64, 16, 16)
        sal, cls, _ = vis.saliency(model, x)
        assert sal.shape == (64, 64) and sal.max() > 0
        correct += cls == names.index(SHAPE_CLASSES[label])
        region = _dilate(mask, 2)  # the shape and its outline, where the evidence of its class lies
        ratios.append(sal[region].mean() / sal[~region].mean())
        top = sal >= np.quantile(sal, 0.9)
        enrichment.append((top & region).sum() / top.sum() / region.mean())
    assert correct >= 5
    # the classifier's gradient concentrates on the shape, not on the textured background: per pixel it is
    # larger there, and its top 10 % of pixels fall inside the shape region more often than its area predicts
    assert np.median(ratios) > 1.5 and min(ratios) > 1.1, ratios
    assert np.mean(enrichment) > 1.4, enrichment

    from visionzoo.tasks import task_for

    dataset = task_for(cfg).build_dataset("val", train=False)
    top = vis.top_activating(model, "layer4", 3, dataset, k=4, max_images=64, progress=False)
    assert len(top.indices) == 4 and top.values == sorted(top.values, reverse=True)
    assert all(0 <= i < 64 for i in top.indices)
    with pytest.raises(ValueError, match="out of range"):
        vis.top_activating(model, "layer4", 999, dataset, k=2, max_images=4, progress=False)
