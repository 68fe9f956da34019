"""Semantic segmentation data layer: mask reading, VOC / mask-folder datasets, joint transforms, collate and
the shapes segmentation writer."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torchvision import tv_tensors

from visionzoo.datasets.common import SkippedSample
from visionzoo.datasets.detection import to_image
from visionzoo.datasets.segmentation import (
    IGNORE_INDEX,
    VOC_SEG_CLASSES,
    MaskFolderSegmentation,
    VOCSegmentation,
    build_segmentation_transforms,
    read_mask,
    segmentation_collate,
    voc_palette,
    write_mask,
)
from visionzoo.datasets.shapes import SHAPE_CLASSES, SPLITS, draw_shape
from visionzoo.datasets.write_shapes_scenes import scene_seed
from visionzoo.datasets.write_shapes_segmentation import (
    META_NAME,
    main,
    make_segmentation_scene,
    segmentation_seed,
    write_shapes_segmentation,
)

# Class colours of the hand-written samples: far from each other and from the 0 of image padding.
COLORS = {0: (60, 60, 60), 1: (230, 40, 40), 2: (40, 230, 40), 3: (40, 40, 230)}
NO_TRANSFORM_STATS = dict(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])


def class_layout(h: int, w: int) -> np.ndarray:
    """An asymmetric (H, W) class map: background, a class-1 block top-left, class 2 bottom-right, a class-3
    stripe on the right, with a 255 border around the class-1 block (as VOC's object borders)."""
    m = np.zeros((h, w), np.uint8)
    m[2: h // 2, 2: w // 2] = 1
    m[h // 2:, w // 2: w - 6] = 2
    m[:, w - 6:] = 3
    border = np.zeros_like(m, dtype=bool)
    border[1: h // 2 + 1, 1: w // 2 + 1] = True
    border[2: h // 2, 2: w // 2] = False
    m[border] = IGNORE_INDEX
    return m


def paint(mask: np.ndarray) -> Image.Image:
    """An RGB image whose pixel colours encode the class of the mask (ignore pixels: class 0's colour)."""
    img = np.zeros((*mask.shape, 3), np.uint8)
    for k, c in COLORS.items():
        img[mask == k] = c
    img[mask == IGNORE_INDEX] = COLORS[0]
    return Image.fromarray(img, "RGB")


def save_palette_png(path, mask: np.ndarray) -> None:
    img = Image.fromarray(mask, "L")
    img.putpalette(voc_palette())
    img.save(path)


def make_voc(root, samples: dict[str, tuple[int, int]], splits: dict[str, list[str]], classes_txt=None):
    """A tiny VOC folder: one JPEG + palette PNG per id (with class_layout masks of the given (H, W))."""
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True, exist_ok=True)
    masks = {}
    for sid, (h, w) in samples.items():
        m = class_layout(h, w)
        paint(m).save(root / "JPEGImages" / f"{sid}.jpg", quality=98)
        save_palette_png(root / "SegmentationClass" / f"{sid}.png", m)
        masks[sid] = m
    for split, ids in splits.items():
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    if classes_txt is not None:
        (root / "classes.txt").write_text("\n".join(classes_txt) + "\n")
    return masks


@pytest.fixture
def voc(tmp_path):
    root = tmp_path / "VOC2012"
    masks = make_voc(root, {"a": (30, 40), "b": (24, 36)}, {"train": ["a", "b"], "val": ["b"]})
    return tmp_path, root, masks


# ------------------------------------------------------------------------------------------- masks
def test_palette_and_read_mask_modes(tmp_path):
    pal = voc_palette()
    assert len(pal) == 768 and pal[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0] and pal[-3:] == [224, 224, 192]
    m = class_layout(10, 16)
    save_palette_png(tmp_path / "p.png", m)
    Image.fromarray(m, "L").save(tmp_path / "l.png")
    write_mask(tmp_path / "w.png", m)
    for name in ("p.png", "l.png", "w.png"):
        got = read_mask(tmp_path / name)
        assert got.dtype == np.uint8 and np.array_equal(got, m)  # palette indices, not colours
    assert Image.open(tmp_path / "w.png").mode == "P"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8), "RGB").save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match=r"rgb\.png.*'RGB'"):
        read_mask(tmp_path / "rgb.png")
    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        read_mask(tmp_path / "nope.png")


# ------------------------------------------------------------------------------------------- VOC
def test_voc_read_back(voc):
    devkit, root, masks = voc
    ds = VOCSegmentation(devkit, "train", year=2012)
    assert len(ds) == 2 and ds.ids == ["a", "b"] and ds.classes == list(VOC_SEG_CLASSES)
    assert ds.num_classes == 21 and ds.ignore_index == IGNORE_INDEX == 255
    assert ds.image_path(1) == (root / "JPEGImages" / "b.jpg").resolve()
    assert ds.mask_path(0).name == "a.png"
    for i, sid in enumerate(ds.ids):
        image, mask = ds[i]
        h, w = masks[sid].shape
        assert image.dtype == torch.float32 and image.shape == (3, h, w)
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert mask.dtype == torch.int64 and mask.shape == (h, w)
        assert np.array_equal(mask.numpy(), masks[sid])
        assert (mask == 255).sum() > 0 and set(mask.unique().tolist()) == {0, 1, 2, 3, 255}
        # the image really is the one of this mask: class 2 pixels are green
        g = image[:, mask == 2].mean(dim=1)
        assert g[1] > 0.8 and g[0] < 0.3
    stats = ds.validate(progress=False, decode_images=True)
    assert stats["samples"] == 2 and len(stats["class_pixels"]) == 21
    assert stats["ignore_pixels"] == sum(int((m == 255).sum()) for m in masks.values())
    assert len(VOCSegmentation(root, "val")) == 1  # root may be the year folder itself


def test_voc_mask_errors(voc):
    _, root, masks = voc
    ds = VOCSegmentation(root, "train")
    # wrong size: both files and both sizes named
    save_palette_png(root / "SegmentationClass" / "a.png", np.zeros((29, 40), np.uint8))
    with pytest.raises(ValueError) as e:
        ds[0]
    msg = str(e.value)
    assert "a.png" in msg and "a.jpg" in msg and "40x29" in msg and "40x30" in msg
    with pytest.raises(ValueError, match="40x29"):
        ds.validate(progress=False)
    # values outside the classes: file, sorted values and the range named
    bad = masks["a"].copy()
    bad[0, 0], bad[0, 1], bad[0, 2] = 40, 21, 77
    save_palette_png(root / "SegmentationClass" / "a.png", bad)
    with pytest.raises(ValueError, match=r"a\.png.*21, 40, 77.*0\.\.20"):
        ds.load_mask(0)
    # labelling errors raise even when corrupt files are skipped
    with pytest.raises(ValueError, match="21, 40, 77"):
        VOCSegmentation(root, "train", on_corrupt="skip")[0]
    # colour-coded masks are refused, naming the file and mode
    paint(masks["a"]).save(root / "SegmentationClass" / "a.png")
    with pytest.raises(ValueError, match=r"a\.png.*'RGB'"):
        ds[0]
    assert ds[1][1].shape == (24, 36)  # the other sample is unaffected


def test_voc_split_and_layout_errors(voc, tmp_path):
    devkit, root, _ = voc
    with pytest.raises(FileNotFoundError, match=r"nosuch\.txt.*available: train, val"):
        VOCSegmentation(root, "nosuch")
    with pytest.raises(FileNotFoundError, match="VOC2012: pass year"):
        VOCSegmentation(devkit, "train")
    with pytest.raises(ValueError, match="invalid split name"):
        VOCSegmentation(root, "../train")
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"x")
    for bad in ("../../secret", "/etc/passwd"):
        (root / "ImageSets" / "Segmentation" / "evil.txt").write_text(f"a\n{bad}\n")
        with pytest.raises(ValueError, match=r"evil\.txt.*inside the dataset root"):
            VOCSegmentation(root, "evil")
    (root / "ImageSets" / "Segmentation" / "gap.txt").write_text("a\nmissing_one\n")
    with pytest.raises(FileNotFoundError, match=r"missing_one\.jpg.*gap\.txt"):
        VOCSegmentation(root, "gap")
    (root / "SegmentationClass" / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"mask file not found: .*b\.png"):
        VOCSegmentation(root, "train")


def test_voc_classes_file_and_skip_truncated_jpeg(voc):
    _, root, _ = voc
    (root / "classes.txt").write_text("background\nred\ngreen\nblue\n\n")
    ds = VOCSegmentation(root, "train", on_corrupt="skip")
    assert ds.classes == ["background", "red", "green", "blue"]
    assert VOCSegmentation(root, "train", classes=["bg", *"abcd"]).num_classes == 5  # explicit wins
    jpg = root / "JPEGImages" / "a.jpg"
    jpg.write_bytes(jpg.read_bytes()[:300])
    s = ds[0]
    assert isinstance(s, SkippedSample) and s.path.endswith("a.jpg") and "a.jpg" in s.reason
    assert ds[1][0].shape == (3, 24, 36)
    with pytest.raises(Exception, match=r"a\.jpg"):
        VOCSegmentation(root, "train")[0]
    (root / "classes.txt").write_text("background\n\nred\n")
    with pytest.raises(ValueError, match=r"classes\.txt.*blank line"):
        VOCSegmentation(root, "train")


# ----------------------------------------------------------------------------------------- folders
def test_mask_folder_dataset(tmp_path):
    for split, names in {"train": ["x1.png", "sub/x2.jpg"], "val": ["y.jpg"]}.items():
        for n in names:
            img, msk = tmp_path / "images" / split / n, (tmp_path / "masks" / split / n).with_suffix(".png")
            img.parent.mkdir(parents=True, exist_ok=True)
            msk.parent.mkdir(parents=True, exist_ok=True)
            m = class_layout(20, 24)
            paint(m).save(img)
            Image.fromarray(m, "L").save(msk)
    (tmp_path / "images" / "train" / ".hidden.png").write_bytes(b"not an image")
    (tmp_path / "images" / "train" / "notes.txt").write_text("ignored")
    with pytest.raises(ValueError, match="classes="):
        MaskFolderSegmentation(tmp_path, "train")
    (tmp_path / "classes.txt").write_text("background\none\ntwo\nthree\n")
    ds = MaskFolderSegmentation(tmp_path, "train")
    assert ds.classes == ["background", "one", "two", "three"] and ds.ids == ["sub/x2", "x1"]
    image, mask = ds[1]
    assert image.shape == (3, 20, 24) and np.array_equal(mask.numpy(), class_layout(20, 24))
    assert MaskFolderSegmentation(tmp_path, "val", classes=["a", "b", "c", "d"]).classes == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match=r"x1\.png.*value\(s\) 3.*0\.\.2"):
        MaskFolderSegmentation(tmp_path, "train", classes=["a", "b", "c"])[1]
    (tmp_path / "masks" / "val" / "y.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"y\.png.*y\.jpg"):
        MaskFolderSegmentation(tmp_path, "val")


# -------------------------------------------------------------------------------------- transforms
def check_aligned(image: torch.Tensor, mask: torch.Tensor, classes: set[int]) -> None:
    """Colours still encode the classes: every mask pixel whose 3x3 neighbourhood is one class (away from
    the bilinear/nearest boundaries and the crop's edges) has that class's colour; padding is 0 in the image
    and 255 in the mask."""
    assert set(mask.unique().tolist()) <= classes | {IGNORE_INDEX}
    img = (image * 255).round()
    padded = (img == 0).all(dim=0)
    assert (mask[padded] == IGNORE_INDEX).all()
    m = torch.nn.functional.pad(mask[None, None].float(), (1, 1, 1, 1), value=-1.0)
    pure = (torch.nn.functional.max_pool2d(m, 3, 1) == -torch.nn.functional.max_pool2d(-m, 3, 1))[0, 0]
    checked = 0
    for k in classes:
        sel = pure & (mask == k)
        if sel.any():
            assert (img[:, sel] - torch.tensor(COLORS[k], dtype=torch.float32)[:, None]).abs().max() <= 12
            checked += int(sel.sum())
    assert checked > 0.3 * mask.numel() or (mask == IGNORE_INDEX).float().mean() > 0.5


def test_train_transforms_keep_image_and_mask_aligned():
    torch.manual_seed(0)
    m = class_layout(40, 56)
    m[m == IGNORE_INDEX] = 0  # so every pixel's colour is its class's
    pil = paint(m)
    tf = build_segmentation_transforms(True, crop_size=48, scale_range=(0.5, 2.0), hflip=0.5, **NO_TRANSFORM_STATS)
    saw_pad, orientations = False, set()
    for _ in range(30):
        image, mask = tf(to_image(pil), tv_tensors.Mask(torch.from_numpy(m)))
        assert image.dtype == torch.float32 and image.shape == (3, 48, 48)
        assert type(mask) is torch.Tensor and mask.dtype == torch.int64 and mask.shape == (48, 48)
        check_aligned(image, mask, {0, 1, 2, 3})
        saw_pad |= bool((mask == IGNORE_INDEX).any())
        # class 3 is a stripe right of everything else in the original: after a flip it is left of the rest
        cols = torch.arange(mask.shape[1]).expand_as(mask)
        three, rest = mask == 3, (mask != 3) & (mask != IGNORE_INDEX)
        rows = three.any(dim=1) & rest.any(dim=1)
        if rows.any():
            big = mask.shape[1]
            left_of_rest = (torch.where(three, cols, big).amin(dim=1) < torch.where(rest, cols, big).amin(dim=1))[rows]
            assert left_of_rest.all() or not left_of_rest.any()
            orientations.add(bool(left_of_rest[0]))
    assert saw_pad and orientations == {True, False}
    # with base_size the shorter side is base_size times the factor; photometric only touches the image
    tf = build_segmentation_transforms(True, crop_size=None, scale_range=(1.0, 1.0), hflip=0.0, base_size=20,
                                       photometric=True, **NO_TRANSFORM_STATS)
    image, mask = tf(to_image(pil), tv_tensors.Mask(torch.from_numpy(m)))
    assert mask.shape == (20, 28) and image.shape == (3, 20, 28)
    assert set(mask.unique().tolist()) <= {0, 1, 2, 3}


def test_eval_transform_and_collate(voc):
    _, root, masks = voc
    tf = build_segmentation_transforms(False, crop_size=321, mean=[0.5, 0.4, 0.3], std=[0.2, 0.2, 0.2])
    ds = VOCSegmentation(root, "train", transform=tf)
    image, mask = ds[0]
    assert image.shape == (3, 30, 40) and np.array_equal(mask.numpy(), masks["a"])  # full size, untouched
    raw = VOCSegmentation(root, "train")[0][0]
    assert torch.allclose(image, (raw - torch.tensor([0.5, 0.4, 0.3])[:, None, None]) / 0.2, atol=1e-5)
    ds.transform = build_segmentation_transforms(False, crop_size=None, base_size=12, **NO_TRANSFORM_STATS)
    image, mask = ds[1]
    assert image.shape == (3, 12, 18) and mask.shape == (12, 18)
    assert set(mask.unique().tolist()) <= {0, 1, 2, 3, 255}

    ds.transform = None
    images, batch_masks = segmentation_collate([ds[0], ds[1]])
    assert images.shape == (2, 3, 30, 40) and images.dtype == torch.float32
    assert batch_masks.shape == (2, 30, 40) and batch_masks.dtype == torch.int64
    assert torch.equal(images[1, :, :24, :36], ds[1][0]) and (images[1, :, 24:] == 0).all()
    assert (images[1, :, :, 36:] == 0).all()
    assert np.array_equal(batch_masks[1, :24, :36].numpy(), masks["b"])
    assert (batch_masks[1, 24:] == 255).all() and (batch_masks[1, :, 36:] == 255).all()
    assert np.array_equal(batch_masks[0].numpy(), masks["a"])
    with pytest.raises(TypeError, match="SkippedSample"):
        segmentation_collate([ds[0], SkippedSample("x", "y")])


# -------------------------------------------------------------------------------------------- writer
COUNTS = {"train": 6, "val": 3, "test": 3}


def test_shapes_segmentation_writer(tmp_path):
    out = tmp_path / "shapes_seg"
    stats = write_shapes_segmentation(out, image_size=48, counts=COUNTS, max_objects=3, seed=0, progress=False)
    assert {s: v["images"] for s, v in stats.items()} == COUNTS
    assert (out / "classes.txt").read_text().split() == ["background", *SHAPE_CLASSES]
    meta = json.loads((out / META_NAME).read_text())
    assert meta["complete"] and meta["image_size"] == 48 and meta["counts"] == COUNTS
    assert (out / "ImageSets/Segmentation/val.txt").read_text().split() == ["val_00000", "val_00001", "val_00002"]
    assert len(list((out / "JPEGImages").glob("*.jpg"))) == 12
    assert len(list((out / "SegmentationClass").glob("*.png"))) == 12
    assert not list(out.rglob(".*.tmp"))

    for split in SPLITS:
        ds = VOCSegmentation(out, split)
        assert ds.classes == ["background", *SHAPE_CLASSES] and ds.num_classes == 6 and len(ds) == COUNTS[split]
        ds.validate(progress=False)
        for i in range(len(ds)):
            image, mask = ds[i]
            assert image.shape == (3, 48, 48) and mask.shape == (48, 48)
            assert Image.open(ds.mask_path(i)).mode == "P"
            ref_image, ref_mask, specs = make_segmentation_scene(segmentation_seed(0, split, i), 48, 3)
            assert np.array_equal(mask.numpy(), ref_mask)  # masks are stored losslessly
            ref = torch.from_numpy(np.array(ref_image)).permute(2, 0, 1)
            assert (image * 255 - ref).abs().mean() < 12  # the JPEG of this scene (noisy textures)
            present = {1 + SHAPE_CLASSES.index(s.kind) for s in specs}
            assert set(mask.unique().tolist()) <= {0} | present
            # every pixel well inside a shape's polygon is labelled with the front-most such shape's class
            # and every pixel well outside all of them is background
            expected = np.zeros((48, 48), np.uint8)
            for s in specs:
                fp = Image.new("L", (48, 48), 0)
                draw_shape(ImageDraw.Draw(fp), s, 1, 1)
                expected[np.asarray(fp) > 0] = 1 + SHAPE_CLASSES.index(s.kind)
            e = torch.from_numpy(expected)[None, None].float()
            pure = (torch.nn.functional.max_pool2d(e, 3, 1, 1) == -torch.nn.functional.max_pool2d(-e, 3, 1, 1))[0, 0]
            assert np.array_equal(mask.numpy()[pure.numpy()], expected[pure.numpy()])

    # the detection scenes use another seed stream
    assert segmentation_seed(0, "train", 0) != segmentation_seed(1, "train", 0)
    assert segmentation_seed(0, "train", 0) != scene_seed(0, "train", 0)

    # idempotent: nothing is rewritten
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert write_shapes_segmentation(out, image_size=48, counts=COUNTS, max_objects=3, progress=False) == stats
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == mtimes
    # other parameters refused unless overwrite
    with pytest.raises(ValueError, match="image_size: 48 on disk vs 32 asked"):
        write_shapes_segmentation(out, image_size=32, counts=COUNTS, max_objects=3, progress=False)
    small = {"train": 2, "val": 1, "test": 0}
    write_shapes_segmentation(out, image_size=32, counts=small, max_objects=3, progress=False, overwrite=True)
    assert len(list((out / "JPEGImages").glob("*.jpg"))) == 3 and len(VOCSegmentation(out, "test")) == 0
    assert VOCSegmentation(out, "train")[0][1].shape == (32, 32)
    # a missing file is written again
    os.remove(out / "SegmentationClass" / "train_00001.png")
    write_shapes_segmentation(out, image_size=32, counts=small, max_objects=3, progress=False)
    assert (out / "SegmentationClass" / "train_00001.png").is_file()
    # VOC folders not written by the tool are refused
    stale = tmp_path / "stale"
    (stale / "JPEGImages").mkdir(parents=True)
    (stale / "JPEGImages" / "x.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="not written by this tool"):
        write_shapes_segmentation(stale, image_size=32, counts=small, progress=False)


def test_writer_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    args = [str(out), "--size", "32", "--train", "2", "--val", "1", "--test", "1", "--no-progress"]
    assert main(args) == 0
    assert "wrote shapes segmentation" in capsys.readouterr().out
    assert main(args) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main([*args[:2], "40", *args[3:]]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "image_size" in err
    assert main([*args, "--overwrite", "--max-objects", "0"]) == 0
    capsys.readouterr()
    assert main([str(tmp_path / "bad"), "--size", "8", "--no-progress"]) == 1
    assert "at least 16" in capsys.readouterr().err
