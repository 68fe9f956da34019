"""CamVid reader on the real files of ../shared/data/camvid-jpeg.tar.gz (skipped without them): split counts,
class names, void (label 11) as the ignore value, the engine's data.dataset = camvid branch, and bad label
files named in the errors (on a small copy)."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.helpers import ROOT
from visionzoo.datasets.camvid import CAMVID_CLASSES, CamVidSegmentation
from visionzoo.datasets.common import ImageReadError, SkippedSample
from visionzoo.datasets.segmentation import IGNORE_INDEX


@pytest.fixture(scope="module")
def root(shared_archive):
    return shared_archive("camvid-jpeg.tar.gz")


def test_split_counts_and_classes(root):
    counts = {s: len(CamVidSegmentation(root, s)) for s in ("train", "val", "test")}
    assert counts == {"train": 367, "val": 101, "test": 233}
    ds = CamVidSegmentation(root / "CamVid", "test")  # the CamVid folder itself works too
    assert ds.classes == list(CAMVID_CLASSES) and ds.num_classes == 11
    assert ds.classes[0] == "Sky" and ds.classes[3] == "Road" and ds.classes[10] == "Bicyclist"
    assert ds.ids == sorted(ds.ids) and ds.image_path(0).suffix == ".jpg"
    with pytest.raises(FileNotFoundError, match="CamVid folder not found: .*trainval"):
        CamVidSegmentation(root, "trainval")


def test_void_becomes_ignore(root):
    ds = CamVidSegmentation(root, "train")
    raw = np.array(Image.open(ds.mask_path(0)))
    assert (raw == 11).sum() > 0  # this frame has void pixels
    mask = ds.load_mask(0)
    assert ((mask == IGNORE_INDEX) == (raw == 11)).all()
    assert (mask[raw != 11] == raw[raw != 11]).all() and mask[mask != IGNORE_INDEX].max() <= 10
    image, target = ds[0]
    assert tuple(image.shape) == (3, 360, 480) and tuple(target.shape) == (360, 480)
    assert int((target == IGNORE_INDEX).sum()) == int((raw == 11).sum())


def test_engine_builds_camvid(root):
    from visionzoo.config import load_config
    from visionzoo.tasks import task_for

    cfg = load_config(ROOT / "configs/segmentation/fcn_r18_camvid.yaml", [f"data.root={root}"])
    task = task_for(cfg)
    train = task.build_dataset("train", train=True)
    image, mask = train[0]
    assert len(train) == 367 and image.shape[0] == 3 and mask.shape == image.shape[1:]
    assert task.split_exists("test") and not task.split_exists("trainval")
    test = task.build_dataset("test", train=False, class_names=list(CAMVID_CLASSES))
    assert len(test) == 233


def test_bad_label_files_are_named(root, tmp_path):
    for sub in ("val", "valannot"):
        (tmp_path / sub).mkdir()
    src = CamVidSegmentation(root, "val")
    for k in range(3):
        shutil.copy(src.image_path(k), tmp_path / "val")
        shutil.copy(src.mask_path(k), tmp_path / "valannot")
    ds = CamVidSegmentation(tmp_path, "val")
    assert len(ds) == 3

    label = ds.mask_path(1)
    raw = np.array(Image.open(label))
    raw[0, 0] = 12
    Image.fromarray(raw).save(label)
    with pytest.raises(ValueError, match=re.escape(str(label)) + ".*label value.*12"):
        ds[1]

    label.write_bytes(b"\x89PNG broken")
    with pytest.raises(ImageReadError, match=re.escape(str(label))):
        ds[1]
    assert isinstance(CamVidSegmentation(tmp_path, "val", on_corrupt="skip")[1], SkippedSample)

    label.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(label))):
        CamVidSegmentation(tmp_path, "val")
