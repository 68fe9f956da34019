"""Penn-Fudan reader on the real files of ../shared/data/pennfudanped.tar.gz (skipped without them): counts,
instance ids against the data set's own annotation text files, the seeded split (the torchvision tutorial's test
images), masks and boxes, COCO ground truth, and bad files named in the errors (on a small copy)."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch

from visionzoo.datasets.common import ImageReadError, SkippedSample
from visionzoo.datasets.pennfudan import PennFudanDetection, pennfudan_split_indices


@pytest.fixture(scope="module")
def root(shared_archive):
    return shared_archive("pennfudanped.tar.gz")


@pytest.fixture(scope="module")
def everything(root):
    return PennFudanDetection(root, split="all")


def test_counts_and_splits(root, everything):
    assert len(everything) == 170
    assert sum(len(i) for i in everything.instance_ids) == 423
    assert everything.classes == ["__background__", "person"]
    splits = {s: PennFudanDetection(root, split=s, masks=False) for s in ("train", "val", "test", "trainval")}
    assert {s: len(d) for s, d in splits.items()} == {"train": 100, "val": 20, "test": 50, "trainval": 120}
    ids = {s: set(d.ids) for s, d in splits.items()}
    assert not ids["train"] & ids["val"] and not ids["trainval"] & ids["test"]
    assert ids["train"] | ids["val"] == ids["trainval"] and ids["trainval"] | ids["test"] == set(range(170))
    # the tutorial's split: torch.manual_seed(1); indices = torch.randperm(len(dataset)).tolist(); test = last 50
    torch.manual_seed(1)
    assert sorted(splits["test"].ids) == sorted(torch.randperm(170).tolist()[-50:])
    assert splits["test"].names[0].startswith(("FudanPed", "PennPed"))
    assert pennfudan_split_indices(170, "test", seed=2) != splits["test"].ids  # the seed moves the split
    with pytest.raises(ValueError, match="unknown Penn-Fudan split 'everything'"):
        PennFudanDetection(root, split="everything")


def test_instances_match_the_annotation_files(everything):
    """One instance per mask value 1..k; k and the boxes agree with Annotation/<name>.txt (1-based inclusive
    corners), which the reader never reads."""
    worst = []
    for i, name in enumerate(everything.names):
        text = (everything.root / "Annotation" / f"{name}.txt").read_text()
        count = int(re.search(r"Objects with ground truth : (\d+)", text).group(1))
        assert everything.instance_ids[i].tolist() == list(range(1, count + 1)), name
        corners = re.findall(r"\((\d+), (\d+)\) - \((\d+), (\d+)\)", text)
        annotated = np.array([(int(a) - 1, int(b) - 1, int(c), int(d)) for a, b, c, d in corners], np.float32)
        worst.append(np.abs(annotated - everything.get_annotation(i)["boxes"]).max())
    assert np.median(worst) == 0 and max(worst) <= 6


def test_sample_masks_boxes_and_coco_ground_truth(everything):
    image, target = everything[0]
    assert everything.names[0] == "FudanPed00001" and tuple(image.shape) == (3, 536, 559)
    assert target["boxes"].tolist() == [[159, 181, 302, 431], [419, 170, 535, 486]]
    assert target["labels"].tolist() == [1, 1] and target["masks"].shape == (2, 536, 559)
    for m, box, area in zip(target["masks"], target["boxes"], target["area"]):
        ys, xs = torch.nonzero(m, as_tuple=True)
        assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == box.tolist() and m.sum() == area
    coco = everything.coco
    assert len(coco.anns) == 423 and len(coco.imgs) == 170
    from pycocotools import mask as mask_utils

    ann = coco.imgToAnns[everything.ids[0]][1]
    assert (mask_utils.decode(ann["segmentation"]) == target["masks"][1].numpy()).all()
    assert not PennFudanDetection(everything.root, split="test", masks=False)[0][1].get("masks")


def test_reader_takes_the_folder_or_its_parent(root, everything):
    inner = PennFudanDetection(root / "PennFudanPed", split="val", masks=False)
    assert inner.ids == PennFudanDetection(root, split="val", masks=False).ids
    with pytest.raises(FileNotFoundError, match="PNGImages"):
        PennFudanDetection(root / "PennFudanPed" / "PedMasks")


@pytest.fixture
def small_copy(everything, tmp_path):
    """Six real images and masks in a folder of their own."""
    for sub in ("PNGImages", "PedMasks"):
        (tmp_path / sub).mkdir()
    for name in everything.names[:6]:
        shutil.copy(everything.root / "PNGImages" / f"{name}.png", tmp_path / "PNGImages")
        shutil.copy(everything.root / "PedMasks" / f"{name}_mask.png", tmp_path / "PedMasks")
    return tmp_path


def test_bad_files_are_named(small_copy):
    ok = PennFudanDetection(small_copy, split="all", test_size=2, val_size=1)
    assert len(ok) == 6 and len(PennFudanDetection(small_copy, split="train", test_size=2, val_size=1)) == 3
    with pytest.raises(ValueError, match="6 images cannot hold a test split of 5"):
        PennFudanDetection(small_copy, split="train", test_size=5, val_size=1)

    image = small_copy / "PNGImages" / f"{ok.names[1]}.png"
    image.write_bytes(image.read_bytes()[:2000])  # truncated: the header reads, the pixels do not
    ds = PennFudanDetection(small_copy, split="all", test_size=2, val_size=1)
    with pytest.raises(ImageReadError, match=re.escape(str(image))):
        ds[1]
    skipping = PennFudanDetection(small_copy, split="all", test_size=2, val_size=1, on_corrupt="skip")
    assert isinstance(skipping[1], SkippedSample) and skipping[1].path == str(image)

    mask = small_copy / "PedMasks" / f"{ok.names[2]}_mask.png"
    mask.write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match=re.escape(str(mask))):
        PennFudanDetection(small_copy, split="all", test_size=2, val_size=1)
    mask.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(mask))):
        PennFudanDetection(small_copy, split="all", test_size=2, val_size=1)
