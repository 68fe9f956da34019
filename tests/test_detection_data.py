"""Detection data layer: COCO / VOC readers, shapes scenes writer, joint v2 transforms."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torchvision import tv_tensors

from visionzoo.datasets.coco import CocoDetection
from visionzoo.datasets.common import ImageReadError, SkippedSample
from visionzoo.datasets.detection import (
    build_detection_transforms,
    detection_collate,
    make_target,
    safe_join,
    sanitize_boxes,
)
from visionzoo.datasets.voc import VOC_CLASSES, VOCDetection
from visionzoo.datasets.write_shapes_scenes import (
    CATEGORY_IDS,
    _write_coco_scenes,
    main,
    split_paths,
    write_coco_scenes,
)

SCENE_COUNTS = {"train": 14, "val": 3, "test": 0}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    stats = write_coco_scenes(out, image_size=64, counts=SCENE_COUNTS, max_objects=3, seed=0, progress=False)
    return out, stats


def tight_box(mask: torch.Tensor) -> list[float]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1.0, ys.max().item() + 1.0]


# ---------------------------------------------------------------------------------------- scenes
def test_scenes_written_as_coco_and_read_back(scenes):
    out, stats = scenes
    assert stats["train"]["images"] == 14 and stats["val"]["images"] == 3 and stats["test"]["images"] == 0
    root, ann_file = split_paths(out, "train")
    data = json.loads(ann_file.read_text())
    assert [c["id"] for c in data["categories"]] == list(CATEGORY_IDS) == [1, 3, 5, 7, 9]
    assert all(isinstance(a["segmentation"]["counts"], str) and a["iscrowd"] == 0 for a in data["annotations"])
    assert len(list(root.glob("*.png"))) == 14

    ds = CocoDetection(root, ann_file, masks=True)
    assert len(ds) == 14 and ds.ids == sorted(ds.ids) and isinstance(ds.coco, COCO)
    assert ds.classes == ["__background__", "circle", "square", "triangle", "star", "hexagon"]
    assert ds.cat_ids == [1, 3, 5, 7, 9] and ds.label_to_cat_id == {1: 1, 2: 3, 3: 5, 4: 7, 5: 9}
    n_instances = negatives = 0
    for i in range(len(ds)):
        image, t = ds[i]
        assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8 and image.shape == (3, 64, 64)
        n = len(t["labels"])
        assert isinstance(t["boxes"], tv_tensors.BoundingBoxes) and t["boxes"].shape == (n, 4)
        assert t["boxes"].format == tv_tensors.BoundingBoxFormat.XYXY and tuple(t["boxes"].canvas_size) == (64, 64)
        assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64
        assert isinstance(t["masks"], tv_tensors.Mask) and t["masks"].shape == (n, 64, 64)
        assert t["masks"].dtype == torch.uint8
        assert t["iscrowd"].dtype == torch.int64 and t["iscrowd"].tolist() == [0] * n
        assert t["area"].dtype == torch.float32 and t["orig_size"].tolist() == [64, 64]
        assert t["image_id"] == ds.ids[i]
        assert ((t["labels"] >= 1) & (t["labels"] <= 5)).all()
        for box, mask, area in zip(t["boxes"], t["masks"], t["area"]):
            assert box.tolist() == tight_box(mask)  # boxes come from the visible masks
            assert area.item() == mask.sum().item()
        # labels map back to the file's category ids
        anns = ds.coco.imgToAnns[ds.ids[i]]
        assert sorted(ds.label_to_cat_id[int(lab)] for lab in t["labels"]) == sorted(a["category_id"] for a in anns)
        n_instances += n
        negatives += n == 0
    assert negatives >= 1 and negatives == stats["train"]["negatives"]
    assert n_instances == stats["train"]["instances"] > 14


def test_scenes_deterministic_and_idempotent(scenes, tmp_path):
    out, stats = scenes
    ann_file = split_paths(out, "train")[1]
    mtime = ann_file.stat().st_mtime_ns
    again, written = _write_coco_scenes(out, 64, SCENE_COUNTS, 3, 0, False, False)
    assert not written and again == stats and ann_file.stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="different parameters.*seed"):
        write_coco_scenes(out, image_size=64, counts=SCENE_COUNTS, max_objects=3, seed=1, progress=False)

    other = tmp_path / "other"
    assert main([str(other), "--size", "64", "--train", "14", "--val", "3", "--test", "0", "--max-objects", "3",
                 "--no-progress"]) == 0
    assert split_paths(other, "train")[1].read_text() == ann_file.read_text()
    name = "train_00005.png"
    assert (other / "images/train" / name).read_bytes() == (out / "images/train" / name).read_bytes()


# ----------------------------------------------------------------------------- hand-written COCO
def _png(path: Path, w: int, h: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def _coco_file(tmp_path: Path, images, annotations, categories=None, name="instances_test.json") -> Path:
    cats = categories if categories is not None else [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"},
                                                      {"id": 12, "name": "crowd_thing"}]
    path = tmp_path / "annotations" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": cats}))
    return path


def _rle_mask() -> np.ndarray:
    m = np.zeros((16, 20), np.uint8)
    m[4:9, 12:17] = 1
    m[6, 3:6] = 1
    return m


@pytest.fixture
def coco_case(tmp_path):
    root = tmp_path / "images"
    _png(root / "a.png", 20, 16)
    _png(root / "sub" / "neg.png", 20, 16)
    _png(root / "c.png", 20, 16)
    rle = mask_utils.encode(np.asfortranarray(_rle_mask()))
    crowd = np.zeros((16, 20), np.uint8)
    crowd[10:14, 0:4] = 1
    unc = {"size": [16, 20], "counts": [int(c) for c in
                                        _uncompressed_counts(crowd)]}
    images = [{"id": 42, "file_name": "c.png", "width": 20, "height": 16},
              {"id": 5, "file_name": "a.png", "width": 20, "height": 16},
              {"id": 9, "file_name": "sub/neg.png", "width": 20, "height": 16}]
    annotations = [
        # polygon, category 7
        {"id": 100, "image_id": 5, "category_id": 7, "bbox": [2, 2, 8, 6], "area": 48.0, "iscrowd": 0,
         "segmentation": [[2, 2, 10, 2, 10, 8, 2, 8]]},
        # compressed RLE (counts as str), category 3, box partly outside the image -> clipped
        {"id": 101, "image_id": 5, "category_id": 3, "bbox": [3, 4, 19, 5], "iscrowd": 0,
         "segmentation": {"size": [16, 20], "counts": rle["counts"].decode()}},
        # zero-width box -> dropped with a warning
        {"id": 102, "image_id": 5, "category_id": 3, "bbox": [5, 5, 0, 4], "iscrowd": 0,
         "segmentation": [[5, 5, 5, 9, 5, 9]]},
        # crowd region with uncompressed RLE, category 12
        {"id": 103, "image_id": 42, "category_id": 12, "bbox": [0, 10, 4, 4], "area": 16.0, "iscrowd": 1,
         "segmentation": unc},
    ]
    return tmp_path, root, images, annotations, crowd


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    flat = mask.flatten(order="F")
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    return counts


def test_coco_handwritten_cases(coco_case):
    tmp_path, root, images, annotations, crowd = coco_case
    ann_file = _coco_file(tmp_path, images, annotations)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = CocoDetection(root, ann_file, masks=True)
    msgs = [str(w.message) for w in rec]
    assert len(msgs) == 1, msgs
    assert "instances_test.json" in msgs[0] and "dropped 1 boxes with width or height <= 0" in msgs[0]
    assert "102" in msgs[0]

    assert ds.ids == [5, 9, 42] and ds.cat_ids == [3, 7, 12]
    assert ds.classes == ["__background__", "cat", "dog", "crowd_thing"] and ds.num_classes == 4
    assert ds.label_to_cat_id == {1: 3, 2: 7, 3: 12}
    assert ds.load_image(0).size == (20, 16)

    _, t = ds[0]  # image 5: polygon + RLE (zero-size box dropped)
    assert t["image_id"] == 5 and t["labels"].tolist() == [2, 1]
    assert t["boxes"].tolist() == [[2, 2, 10, 8], [3, 4, 20, 9]]  # second one clipped from x2 = 22
    assert t["iscrowd"].tolist() == [0, 0] and t["area"][0].item() == 48.0
    poly = np.zeros((16, 20), np.uint8)
    poly[2:8, 2:10] = 1
    assert np.array_equal(t["masks"][0].numpy(), poly)
    assert np.array_equal(t["masks"][1].numpy(), _rle_mask())

    _, t = ds[1]  # negative image in a subfolder
    assert t["boxes"].shape == (0, 4) and t["labels"].shape == (0,) and t["masks"].shape == (0, 16, 20)
    assert t["iscrowd"].shape == (0,) and t["area"].shape == (0,)

    _, t = ds[2]  # crowd, uncompressed RLE, non-contiguous id 12 -> label 3
    assert t["labels"].tolist() == [3] and t["iscrowd"].tolist() == [1]
    assert np.array_equal(t["masks"][0].numpy(), crowd)

    # without masks: no "masks" key, same boxes
    _, t = CocoDetection(root, ann_file)[0]
    assert "masks" not in t and t["boxes"].tolist() == [[2, 2, 10, 8], [3, 4, 20, 9]]


@pytest.mark.parametrize("bad", ["../escape.png", "/etc/passwd", "sub/../../escape.png", "link.png", "linkdir/x.png"])
def test_coco_file_name_escaping_root_rejected(coco_case, bad):
    tmp_path, root, images, annotations, _ = coco_case
    _png(tmp_path / "escape.png", 20, 16)
    (tmp_path / "outside").mkdir()
    _png(tmp_path / "outside" / "x.png", 20, 16)
    os.symlink(tmp_path / "escape.png", root / "link.png")
    os.symlink(tmp_path / "outside", root / "linkdir")
    images = images + [{"id": 77, "file_name": bad, "width": 20, "height": 16}]
    ann_file = _coco_file(tmp_path, images, annotations)
    with pytest.raises(ValueError) as e, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        CocoDetection(root, ann_file)
    msg = str(e.value)
    assert "instances_test.json" in msg and repr(bad) in msg and str(root) in msg


def test_coco_missing_image_and_corrupt_files(coco_case):
    tmp_path, root, images, annotations, _ = coco_case
    images = images + [{"id": 1, "file_name": "missing.png", "width": 20, "height": 16},
                       {"id": 2, "file_name": "broken.png", "width": 20, "height": 16}]
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    ann_file = _coco_file(tmp_path, images, annotations)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = CocoDetection(root, ann_file)
        skipping = CocoDetection(root, ann_file, on_corrupt="skip")
    assert ds.ids[:2] == [1, 2]
    with pytest.raises(FileNotFoundError, match="missing.png"):
        ds[0]
    with pytest.raises(ImageReadError, match="broken.png"):
        ds[1]
    s = skipping[1]
    assert isinstance(s, SkippedSample) and s.path.endswith("broken.png")


def test_coco_malformed_annotation_files(coco_case):
    tmp_path, root, images, annotations, _ = coco_case
    bad = tmp_path / "annotations" / "broken.json"
    bad.parent.mkdir(exist_ok=True)
    bad.write_text('{"images": [')
    with pytest.raises(ValueError, match="broken.json.*not valid JSON"):
        CocoDetection(root, bad)
    bad.write_text(json.dumps({"images": images, "annotations": annotations}))
    with pytest.raises(ValueError, match="broken.json.*'categories'"):
        CocoDetection(root, bad)
    no_bbox = [dict(annotations[0])]
    del no_bbox[0]["bbox"]
    with pytest.raises(ValueError, match=r"instances_test.json.*annotations\[0\].*'bbox'"):
        CocoDetection(root, _coco_file(tmp_path, images, no_bbox))
    dangling = [dict(annotations[0], category_id=99)]
    with pytest.raises(ValueError, match="category_id 99"):
        CocoDetection(root, _coco_file(tmp_path, images, dangling))
    no_segm = [{k: v for k, v in annotations[0].items() if k != "segmentation"}]
    CocoDetection(root, _coco_file(tmp_path, images, no_segm))  # fine without masks
    with pytest.raises(ValueError, match="id 100.*segmentation"):
        CocoDetection(root, _coco_file(tmp_path, images, no_segm), masks=True)


# ----------------------------------------------------------------------------------------- VOC
VOC_XML = """<annotation>
  <folder>VOC2007</folder><filename>{id}.jpg</filename>
  <size><width>40</width><height>30</height><depth>3</depth></size>
  {objects}
</annotation>"""
VOC_OBJ = ("<object><name>{name}</name><difficult>{d}</difficult>"
           "<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")


def _voc_dir(base: Path, objects: dict, split: str = "trainval") -> Path:
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for image_id, objs in objects.items():
        Image.new("RGB", (40, 30), (10, 200, 30)).save(base / "JPEGImages" / f"{image_id}.jpg")
        body = "".join(VOC_OBJ.format(**o) for o in objs)
        (base / "Annotations" / f"{image_id}.xml").write_text(VOC_XML.format(id=image_id, objects=body))
    (base / "ImageSets/Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in objects))
    return base


VOC_OBJECTS = {
    "000001": [dict(name="dog", d=0, x1=1, y1=1, x2=10, y2=20), dict(name="person", d=1, x1=5, y1=6, x2=30, y2=30)],
    "000002": [dict(name="car", d=0, x1=20, y1=3, x2=40, y2=12), dict(name="car", d=0, x1=8, y1=5, x2=7, y2=9)],
}


def test_voc_parsing_difficult_and_conversion(tmp_path):
    _voc_dir(tmp_path / "VOCdevkit" / "VOC2007", VOC_OBJECTS)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = VOCDetection(tmp_path / "VOCdevkit", split="trainval", year=2007)
    msgs = [str(w.message) for w in rec]
    assert len(msgs) == 1 and "trainval.txt" in msgs[0] and "dropped 1 boxes" in msgs[0] and "000002" in msgs[0]
    assert ds.ids == ["000001", "000002"] and ds.classes[0] == "__background__" and ds.num_classes == 21
    image, t = ds[0]
    assert isinstance(image, tv_tensors.Image) and image.shape == (3, 30, 40)
    assert t["boxes"].tolist() == [[0, 0, 10, 20]]  # 1-based inclusive -> 0-based edges; difficult left out
    assert t["labels"].tolist() == [VOC_CLASSES.index("dog") + 1] and t["difficult"].tolist() == [False]
    assert t["image_id"] == 0 and tuple(t["boxes"].canvas_size) == (30, 40)
    _, t = ds[1]
    assert t["boxes"].tolist() == [[19, 2, 40, 12]] and t["labels"].tolist() == [VOC_CLASSES.index("car") + 1]

    ev = VOCDetection(tmp_path / "VOCdevkit" / "VOC2007", split="trainval", keep_difficult=True)
    _, t = ev[0]
    assert t["boxes"].tolist() == [[0, 0, 10, 20], [4, 5, 30, 30]] and t["difficult"].tolist() == [False, True]
    assert t["labels"].tolist() == [12, 15]
    ann = ds.get_annotation(0)  # evaluation view: all objects, flagged, whatever keep_difficult
    assert ann["difficult"].tolist() == [False, True] and len(ann["boxes"]) == 2


def test_voc_errors(tmp_path):
    base = _voc_dir(tmp_path / "voc", VOC_OBJECTS)
    with pytest.raises(FileNotFoundError, match="val.txt"):
        VOCDetection(base, split="val")
    with pytest.raises(ValueError, match="unknown VOC split"):
        VOCDetection(base, split="everything")

    (base / "ImageSets/Main/train.txt").write_text("000001\n000003\n")
    with pytest.raises(FileNotFoundError, match="000003.xml"):
        VOCDetection(base, split="train")

    xml = base / "Annotations" / "000002.xml"
    xml.write_text(VOC_XML.format(id="000002", objects=VOC_OBJ.format(name="unicorn", d=0, x1=1, y1=1, x2=5, y2=5)))
    with pytest.raises(ValueError, match="000002.xml.*'unicorn'"):
        VOCDetection(base)

    xml.write_text('<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">]>\n'
                   + VOC_XML.format(id="000002", objects=""))
    with pytest.raises(ValueError, match="000002.xml.*DOCTYPE"):
        VOCDetection(base)

    (base / "Annotations" / "000002.xml").write_text("<annotation><object>")
    with pytest.raises(ValueError, match="000002.xml.*malformed XML"):
        VOCDetection(base)

    (base / "ImageSets/Main/trainval.txt").write_text("../../escape\n")
    with pytest.raises(ValueError, match="trainval.txt.*escape"):
        VOCDetection(base)


# ---------------------------------------------------------------------------------- transforms
def test_horizontal_flip_moves_boxes_and_masks_with_the_image(scenes):
    out, _ = scenes
    raw = CocoDetection(*split_paths(out, "train"), masks=True)
    flipped = CocoDetection(*split_paths(out, "train"), masks=True,
                            transform=build_detection_transforms(train=True, hflip=1.0))
    plain = CocoDetection(*split_paths(out, "train"), masks=True, transform=build_detection_transforms(train=False))
    i = next(k for k in range(len(raw)) if len(raw[k][1]["labels"]) >= 2)
    image, t = raw[i]
    fimage, ft = flipped[i]
    W = image.shape[-1]
    assert fimage.dtype == torch.float32
    assert torch.allclose(fimage, torch.flip(image, [-1]).float() / 255)
    assert torch.equal(ft["masks"], torch.flip(t["masks"], [-1]))
    x1, y1, x2, y2 = t["boxes"].unbind(1)
    assert torch.equal(ft["boxes"].as_subclass(torch.Tensor), torch.stack([W - x2, y1, W - x1, y2], 1))
    for box, mask in zip(ft["boxes"], ft["masks"]):
        assert box.tolist() == tight_box(mask)
    assert torch.equal(ft["labels"], t["labels"]) and torch.equal(ft["area"], t["area"])

    pimage, pt = plain[i]  # eval pipeline: dtype only, geometry untouched
    assert torch.allclose(pimage, image.float() / 255) and torch.equal(pt["boxes"], t["boxes"])
    assert torch.equal(pt["masks"], t["masks"])

    images, targets = detection_collate([flipped[k] for k in range(3)])
    assert isinstance(images, list) and isinstance(targets, list) and len(images) == len(targets) == 3


def test_sanitize_in_pipeline_filters_every_per_instance_field():
    t = make_target([[0, 0, 10, 10], [5, 5, 5.5, 9], [2, 3, 8, 9]], [1, 2, 3], (16, 20), 7,
                    iscrowd=[0, 1, 0], masks=np.ones((3, 16, 20), np.uint8), difficult=[False, True, True])
    image = tv_tensors.Image(torch.zeros(3, 16, 20, dtype=torch.uint8))
    _, out = build_detection_transforms(train=False)(image, t)
    assert out["labels"].tolist() == [1, 3] and out["iscrowd"].tolist() == [0, 0]
    assert out["difficult"].tolist() == [False, True] and out["area"].tolist() == [100.0, 36.0]
    assert out["masks"].shape == (2, 16, 20) and out["image_id"] == 7 and out["orig_size"].tolist() == [16, 20]

    torch.manual_seed(0)  # photometric + large-scale jitter keep everything aligned too
    tf = build_detection_transforms(train=True, photometric=True, scale_jitter=(0.5, 1.5), jitter_size=24)
    im, out = tf(image, t)
    assert im.shape == (3, 24, 24) and out["masks"].shape[1:] == (24, 24)
    assert len({len(out[k]) for k in ("boxes", "labels", "iscrowd", "area", "difficult", "masks")}) == 1


def test_sanitize_boxes_and_safe_join_units(tmp_path):
    s = sanitize_boxes([[-5, 2, 8, 9], [3, 3, 3, 7], [30, 1, 40, 5], [1, 1, 4, float("nan")], [2, 2, 5, 5]],
                       [1, 2, 3, 4, 5], width=20, height=10, source="x.json")
    assert s.keep.tolist() == [0, 4] and s.dropped == 3 and s.labels.tolist() == [1, 5]
    assert s.boxes.tolist() == [[0, 2, 8, 9], [2, 2, 5, 5]]
    empty = sanitize_boxes(np.zeros((0, 4)), [], 5, 5)
    assert empty.boxes.shape == (0, 4) and empty.dropped == 0
    with pytest.raises(ValueError, match="x.json"):
        sanitize_boxes([[0, 0, 1, 1]], [1, 2], 5, 5, "x.json")

    (tmp_path / "d").mkdir()
    assert safe_join(tmp_path, "d/a.png", "f.json") == (tmp_path / "d" / "a.png").resolve()
    for bad in ("", "..", "../a.png", "/abs.png", "C:\\x.png", "d/../../a.png"):
        with pytest.raises(ValueError, match="f.json"):
            safe_join(tmp_path, bad, "f.json")
