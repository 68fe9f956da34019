"""Bad API input to the predictors and the raw models gets a one-line message naming what was expected;
unambiguous forms are converted; valid inputs give the same outputs as before (and as exported graphs)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import visionzoo
from visionzoo.predict import load_image
from visionzoo.tracking.base import check_box

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread")


def _frame(h=20, w=30, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------ load_image
def test_every_documented_form_and_the_unambiguous_transposes_give_the_same_pixels(tmp_path):
    hwc = _frame()
    Image.fromarray(hwc).save(tmp_path / "f.png")
    chw_tensor = torch.from_numpy(hwc).permute(2, 0, 1)
    forms = {
        "path": tmp_path / "f.png", "str path": str(tmp_path / "f.png"), "PIL": Image.fromarray(hwc),
        "HWC uint8 array": hwc, "CHW uint8 array": hwc.transpose(2, 0, 1).copy(), "CHW uint8 tensor": chw_tensor,
        "CHW float tensor": chw_tensor.float() / 255, "HWC float array": hwc.astype(np.float32) / 255,
        "HWC tensor": chw_tensor.permute(1, 2, 0), "RGBA PIL": Image.fromarray(hwc).convert("RGBA"),
    }
    for name, image in forms.items():
        np.testing.assert_array_equal(np.asarray(load_image(image)), hwc, err_msg=name)
    grey = hwc[:, :, 0]
    for image in (grey, torch.from_numpy(grey)[None]):
        np.testing.assert_array_equal(np.asarray(load_image(image)), np.repeat(grey[:, :, None], 3, 2))


@pytest.mark.parametrize(("image", "words"), [
    (np.zeros((20, 30, 4), np.uint8), ["(20, 30, 4)", "uint8", "4 channels", "(H, W, 3)"]),
    (torch.zeros(4, 20, 30), ["(4, 20, 30)", "float32", "4 channels", "(3, H, W)"]),
    (np.zeros((0, 30, 3), np.uint8), ["empty", "(0, 30, 3)"]),
    (torch.zeros(3, 20, 0), ["empty", "(3, 20, 0)"]),
    (torch.zeros(2, 3, 20, 30), ["batch", "(2, 3, 20, 30)", "list"]),
    (np.zeros((20, 30, 3), np.int64), ["int64", "uint8"]),
    (torch.full((3, 20, 30), 2.0), ["[0, 1]", "2..2"]),
    (np.full((20, 30, 3), np.nan, np.float32), ["NaN"]),
    (np.zeros((20, 30, 2), np.uint8), ["(20, 30, 2)", "(H, W, 3)"]),
])
def test_what_cannot_be_an_image_is_refused_naming_shape_and_dtype(image, words):
    with pytest.raises(ValueError) as info:
        load_image(image)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_a_folder_or_an_object_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="is a folder"):
        load_image(tmp_path)
    with pytest.raises(TypeError, match="got int"):
        load_image(3)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png")


# ------------------------------------------------------------------------------------------ predictors
def test_detector_and_segmenter_refuse_before_running_the_model():
    det = visionzoo.Detector(visionzoo.create_model("faster_rcnn_resnet18_fpn", num_classes=3, min_size=64,
                                                    max_size=64))
    seg = visionzoo.Segmenter(visionzoo.create_model("fcn_resnet18", num_classes=3))
    for predictor in (det, seg):
        with pytest.raises(ValueError, match=r"4 channels"):
            predictor(np.zeros((20, 30, 4), np.uint8))
        with pytest.raises(ValueError, match=r"empty"):
            predictor([_frame(), np.zeros((20, 0, 3), np.uint8)])
    # a CHW numpy frame is converted like a CHW tensor, with the same result
    frame = _frame(40, 48)
    a = seg(frame)
    b = seg(frame.transpose(2, 0, 1).copy())
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.mask.shape == (40, 48)


def test_tracker_refuses_boxes_outside_or_far_larger_than_the_frame():
    tracker = visionzoo.create_tracker("siamfc_alexnet")
    frame = _frame(60, 80)
    for box, words in [((100, 10, 10, 10), "outside the 80x60 frame"), ((-30, 5, 20, 10), "outside"),
                       ((0, 0, 400, 50), "far larger than the 80x60 frame"), ((0, 0, 10), "4 finite numbers"),
                       ((0, 0, 10, float("nan")), "4 finite numbers"), ((0, 0, 0, 5), "w, h > 0")]:
        with pytest.raises(ValueError, match=words):
            tracker.init(frame, box)
    with pytest.raises(ValueError, match="4 channels"):
        tracker.init(np.zeros((60, 80, 4), np.uint8), (10, 10, 20, 20))
    # a box partly outside, and a box a little larger than the frame (a close-up) are taken
    assert check_box((-5, -5, 20, 20), frame.shape).tolist() == [-5, -5, 20, 20]
    assert check_box((0, 0, 100, 70), frame.shape).tolist() == [0, 0, 100, 70]
    tracker.init(frame.transpose(2, 0, 1).copy(), (10, 10, 20, 20))  # CHW array frame, converted
    box, _ = tracker.update(torch.from_numpy(frame).permute(2, 0, 1))
    assert np.isfinite(box).all()


# ------------------------------------------------------------------------------------------ Classifier
def test_classifier_top_k_equals_the_model_on_the_evaluation_transform():
    from visionzoo.config import load_config
    from visionzoo.datasets.shapes import SHAPE_CLASSES, ShapesClassification
    from visionzoo.tasks.classification.task import build_transforms

    if not (ROOT / "weights/resnet18.shapes.safetensors").is_file():
        pytest.skip("needs weights/resnet18.shapes.safetensors")
    data = ShapesClassification("test", num_samples=12)
    images, labels = zip(*[data[i] for i in range(12)])
    clf = visionzoo.Classifier("resnet18", weights="shapes", top_k=3)
    results = clf(list(images))
    transform = build_transforms(load_config(ROOT / "configs/classification/resnet18_shapes.yaml"), train=False)
    with torch.no_grad():
        probs = torch.softmax(clf.model(torch.stack([transform(im) for im in images])), 1).numpy()
    for r, p in zip(results, probs):
        assert len(r) == 3 and r.labels == [clf.class_names[i] for i in r.indices]
        np.testing.assert_array_equal(r.indices, np.argsort(-p, kind="stable")[:3])
        np.testing.assert_allclose(r.scores, p[r.indices], rtol=1e-6)
    assert sum(r.label == SHAPE_CLASSES[y] for r, y in zip(results, labels)) >= 10  # the card's 95 % top-1
    single = clf(np.asarray(images[0]).transpose(2, 0, 1).copy())  # one CHW array -> one result
    assert single.labels == results[0].labels
    drawn = clf.draw(images[0], single)
    assert drawn.size == (256, 256)
    with pytest.raises(ValueError, match="4 channels"):
        clf([images[0], np.zeros((8, 8, 4), np.uint8)])


def test_classifier_refuses_other_tasks_and_bad_options():
    with pytest.raises(ValueError, match="Detector"):
        visionzoo.Classifier(visionzoo.create_model("faster_rcnn_resnet18_fpn", num_classes=3))
    model = visionzoo.create_model("resnet18", num_classes=4)
    with pytest.raises(ValueError, match="top_k"):
        visionzoo.Classifier(model, top_k=0)
    clf = visionzoo.Classifier(model, top_k=10, input_size=32)
    r = clf(_frame(40, 40))
    assert len(r) == 4 and r.labels == [f"class_{i}" for i in r.indices]  # k capped at the class count
    np.testing.assert_allclose(r.scores.sum(), 1.0, rtol=1e-5)
    grey = visionzoo.Classifier(visionzoo.create_model("lenet5", num_classes=10), input_size=28)
    assert grey.channels == 1 and len(grey(_frame(28, 28))) == 5  # an RGB frame, made grey for a grey model
    with pytest.raises(ValueError, match="one value per input channel"):
        visionzoo.Classifier(model, mean=[0.5], std=[0.5])


# ------------------------------------------------------------------------------------------ raw models
@pytest.mark.parametrize(("x", "words"), [
    (torch.zeros(1, 32, 32, 3), ["(1, 32, 32, 3)", "(N, 3, H, W)", "permute(0, 3, 1, 2)"]),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), ["uint8", "float", "/ 255"]),
    (torch.zeros(3, 32, 32), ["(3, 32, 32)", "x[None]"]),
    (torch.zeros(1, 4, 32, 32), ["(1, 4, 32, 32)", "(N, 3, H, W)"]),
    (np.zeros((1, 3, 32, 32), np.float32), ["ndarray", "visionzoo.Classifier"]),
])
def test_raw_models_check_their_input_in_one_line(x, words):
    for name in ("resnet18", "fcn4s_resnet18"):
        model = visionzoo.create_model(name, num_classes=3).eval()
        with pytest.raises((ValueError, TypeError)) as info:
            model(x)
        message = str(info.value)
        assert "\n" not in message and message.startswith(name)
        for word in words:
            assert word in message, (word, message)


def test_the_check_changes_no_output_and_stays_out_of_scripted_and_traced_graphs():
    torch.manual_seed(0)
    model = visionzoo.create_model("resnet18", num_classes=3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        hooks = dict(model._forward_pre_hooks)
        model._forward_pre_hooks.clear()
        plain = model(x)
        model._forward_pre_hooks.update(hooks)
    torch.testing.assert_close(out, plain, rtol=0, atol=0)
    scripted = torch.jit.script(model)
    traced = torch.jit.trace(model, x)
    for graph in (scripted, traced):
        torch.testing.assert_close(graph(x), out)
        assert "_check_image_batch" not in str(graph.graph)
    with pytest.raises(RuntimeError):  # the scripted graph has no Python check; torch's own error remains
        scripted(torch.zeros(1, 4, 32, 32))


def test_create_model_keyword_mistakes():
    with pytest.raises(TypeError, match="Did you mean weights"):
        visionzoo.create_model("resnet18", weight="shapes")
    for bad in (True, 0, 2.5, "3"):
        with pytest.raises(ValueError, match="num_classes must be a positive integer"):
            visionzoo.create_model("resnet18", num_classes=bad)
