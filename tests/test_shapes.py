"""The procedural shapes: determinism, classes, splits, rendering, occlusion-aware masks and boxes."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from visionzoo.datasets.shapes import (
    BACKGROUND_KINDS,
    DEFAULT_MIN_CONTRAST,
    SHAPE_CLASSES,
    ShapesClassification,
    ShapeSpec,
    make_classification_sample,
    mask_to_box,
    render_background,
    render_scene,
    sample_seed,
    sample_shape,
)


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img)


def flat(color, n=64) -> np.ndarray:
    return np.full((n, n, 3), color, np.uint8)


def test_classification_sample_is_deterministic_by_seed():
    a, la = make_classification_sample(123)
    b, lb = make_classification_sample(123)
    assert la == lb and np.array_equal(pixels(a), pixels(b))
    c, _ = make_classification_sample(124)
    assert not np.array_equal(pixels(a), pixels(c))
    assert a.mode == "RGB" and a.size == (64, 64)
    small, _ = make_classification_sample(123, image_size=32)
    assert small.mode == "RGB" and small.size == (32, 32)


def test_dataset_classes_labels_and_transform():
    ds = ShapesClassification("train", num_samples=60, image_size=32, seed=0, transform=pixels)
    assert ds.classes == list(SHAPE_CLASSES) and len(ds) == 60
    assert set(ds.targets) == set(range(len(SHAPE_CLASSES)))  # every class appears
    arr, label = ds[7]
    assert isinstance(arr, np.ndarray) and arr.shape == (32, 32, 3) and arr.dtype == np.uint8
    assert label == ds.targets[7]
    assert [ds[i][1] for i in range(10)] == ds.targets[:10]
    assert np.array_equal(pixels(ds.load_image(7)), arr)
    assert np.array_equal(ds[-1][0], ds[59][0])
    with pytest.raises(IndexError):
        ds[60]
    # the same (seed, split, index) renders the same image in a fresh dataset
    assert np.array_equal(ShapesClassification("train", 60, 32, seed=0, transform=pixels)[7][0], arr)


def test_splits_and_seeds_differ_and_default_sizes():
    seeds = {s: {sample_seed(0, s, i) for i in range(300)} for s in ("train", "val", "test")}
    assert not (seeds["train"] & seeds["val"]) and not (seeds["train"] & seeds["test"])
    assert not (seeds["val"] & seeds["test"])
    first = [pixels(ShapesClassification(s, 5, 32)[0][0]) for s in ("train", "val", "test")]
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[1], first[2])
    other_seed = pixels(ShapesClassification("train", 5, 32, seed=1)[0][0])
    assert not np.array_equal(first[0], other_seed)
    assert [len(ShapesClassification(s)) for s in ("train", "val", "test")] == [5000, 1000, 1000]


def test_bad_split_names_it_and_the_valid_ones():
    with pytest.raises(ValueError, match=r"'validation'.*train, val, test"):
        ShapesClassification("validation")


def test_sample_shape_ranges_and_kind():
    rng = np.random.default_rng(0)
    for _ in range(200):
        s = sample_shape(rng, 64)
        assert s.kind in SHAPE_CLASSES
        assert 0.15 * 64 - 1e-6 <= s.size <= 0.45 * 64
        # mostly inside: at most a small part of the radius sticks out
        assert -0.2 * s.size <= s.cx - s.size and s.cx + s.size <= 64 + 0.2 * s.size
        assert -0.2 * s.size <= s.cy - s.size and s.cy + s.size <= 64 + 0.2 * s.size
        assert 0 <= s.rotation < 360 and all(0 <= c <= 255 for c in s.color)
    assert sample_shape(rng, 64, "star").kind == "star"
    with pytest.raises(ValueError, match="'blob'"):
        sample_shape(rng, 64, "blob")


def test_backgrounds_are_textured_and_varied():
    rng = np.random.default_rng(0)
    for kind in BACKGROUND_KINDS:
        bg = render_background(rng, 48, kind)
        assert bg.shape == (48, 48, 3) and bg.dtype == np.uint8
        assert (bg.std(axis=(0, 1)).max() < 1e-6) == (kind == "flat")
    means = [render_background(rng, 16).mean(axis=(0, 1)) for _ in range(20)]
    assert np.std(means, axis=0).min() > 10  # colours vary between images


def test_render_scene_colours_masks_and_noise():
    rng = np.random.default_rng(0)
    spec = ShapeSpec("square", 32, 32, 16, 0, (250, 20, 20))
    img, masks = render_scene([spec], 64, rng, noise_std=0, background=flat((20, 20, 200)))
    a = pixels(img)
    assert img.size == (64, 64) and img.mode == "RGB"
    assert len(masks) == 1 and masks[0].shape == (64, 64) and masks[0].dtype == bool
    assert tuple(a[32, 32]) == (250, 20, 20) and tuple(a[2, 2]) == (20, 20, 200)
    assert tuple(a[masks[0]].mean(axis=0).round()) != (20, 20, 200)
    # anti-aliased: a rotated square has edge pixels between the two colours
    img2, _ = render_scene([ShapeSpec("square", 32, 32, 16, 20, (250, 20, 20))], 64, rng, noise_std=0,
                           background=flat((20, 20, 200)))
    reds = np.unique(pixels(img2)[..., 0])
    assert len(reds) > 5
    # noise: same scene, different pixels around the mean
    noisy, _ = render_scene([ShapeSpec("square", 32, 32, 16, 0, (250, 20, 20))], 64, rng, noise_std=8,
                            background=flat((20, 20, 200)))
    diff = pixels(noisy).astype(float) - a
    assert 5 < diff[~masks[0]].std() < 11


def test_masks_follow_occlusion_order():
    rng = np.random.default_rng(0)
    small = ShapeSpec("circle", 32, 32, 5, 0, (255, 0, 0))
    big = ShapeSpec("square", 32, 32, 28, 0, (0, 0, 255))  # inscribed radius ~19.8 > 5: covers small
    corner = ShapeSpec("triangle", 50, 50, 10, 0, (0, 255, 0))
    _, masks = render_scene([small, big, corner], 64, rng, noise_std=0, background=flat((128, 128, 128)))
    assert masks[0].sum() == 0 and mask_to_box(masks[0]) is None  # fully covered
    assert masks[1].sum() > 0 and masks[2].sum() > 0
    assert not (masks[1] & masks[2]).any()  # visible masks never overlap
    _, alone = render_scene([big], 64, rng, noise_std=0, background=flat((128, 128, 128)))
    assert alone[0].sum() > masks[1].sum()  # the triangle on top hides part of the square
    assert np.array_equal(alone[0], masks[1] | (alone[0] & masks[2]))
    # reversed order: the small circle is now on top and visible
    _, rev = render_scene([big, small], 64, rng, noise_std=0, background=flat((128, 128, 128)))
    assert 60 < rev[1].sum() < 100 and not (rev[0] & rev[1]).any()


def test_shape_colour_is_changed_when_it_matches_the_background():
    rng = np.random.default_rng(0)
    spec = ShapeSpec("hexagon", 32, 32, 15, 0, (100, 150, 100))
    img, masks = render_scene([spec], 64, rng, noise_std=0, background=flat((100, 150, 100)))
    assert spec.color != (100, 150, 100)  # updated in place to the colour drawn
    assert np.linalg.norm(np.subtract(spec.color, (100, 150, 100))) >= DEFAULT_MIN_CONTRAST
    assert tuple(pixels(img)[32, 32]) == spec.color
    keep = ShapeSpec("hexagon", 32, 32, 15, 0, (100, 150, 100))
    render_scene([keep], 64, rng, noise_std=0, background=flat((100, 150, 100)), min_contrast=None)
    assert keep.color == (100, 150, 100)


def test_generated_shapes_contrast_with_their_surroundings():
    for seed in range(40):
        rng = np.random.default_rng(seed)
        spec = sample_shape(rng, 64)
        bg = render_background(rng, 64)
        _, (mask,) = render_scene([spec], 64, rng, noise_std=0, background=bg)
        ring = np.zeros_like(mask)
        ys, xs = np.nonzero(mask)
        ring[max(ys.min() - 2, 0):ys.max() + 3, max(xs.min() - 2, 0):xs.max() + 3] = True
        ring &= ~mask
        d = np.linalg.norm(bg[ring].astype(float) - spec.color, axis=1)
        assert np.percentile(d, 10) >= DEFAULT_MIN_CONTRAST * 0.8, seed


def test_mask_to_box():
    m = np.zeros((10, 12), bool)
    assert mask_to_box(m) is None
    m[3, 5] = True
    assert mask_to_box(m) == (5, 3, 6, 4)
    m[7, 9] = True
    assert mask_to_box(m) == (5, 3, 10, 8)
    _, (sq,) = render_scene([ShapeSpec("square", 30, 20, 10 * 2 ** 0.5, 0, (255, 255, 255))], 64,
                            np.random.default_rng(0), noise_std=0, background=flat((0, 0, 0)))
    assert mask_to_box(sq) == (20, 10, 40, 30)  # axis-aligned square of side 20 centred at (30, 20)


def test_background_argument_and_validation():
    rng = np.random.default_rng(0)
    bg = Image.new("RGB", (32, 32), (10, 200, 30))
    img, masks = render_scene([], 32, rng, noise_std=0, background=bg)
    assert masks == [] and np.array_equal(pixels(img), pixels(bg))
    with pytest.raises(ValueError, match="32x32x3"):
        render_scene([], 32, rng, background=flat((0, 0, 0), 16))
