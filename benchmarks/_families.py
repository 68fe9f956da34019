"""One training config per family and small real data for it, written by visionzoo's own shapes writers, shared
by train_overhead.py and data_loading.py (so both read files from disk through the task's own datasets)."""
from __future__ import annotations

from pathlib import Path

from visionzoo.datasets.write_shapes import write_image_folder
from visionzoo.datasets.write_shapes_scenes import write_coco_scenes
from visionzoo.datasets.write_shapes_segmentation import write_shapes_segmentation
from visionzoo.datasets.write_shapes_sequences import write_shapes_sequences

ROOT = Path(__file__).resolve().parent.parent

# The configs each family is measured with by default (shipped training recipes). Others of the same families
# (mask_rcnn_r18_shapes, sint_r18_shapes, ...) work too: train_overhead.py --config PATH.
CONFIGS = {
    "classification": ["configs/classification/resnet18_shapes.yaml"],
    "detection": ["configs/detection/faster_rcnn_r18_shapes.yaml"],
    "segmentation": ["configs/segmentation/fcn8s_r18_shapes.yaml"],
    "tracking": ["configs/tracking/siamfc_alexnet_shapes.yaml"],
    "generative": ["configs/generative/dcgan_shapes.yaml", "configs/generative/vae_conv_shapes.yaml"],
}
FAMILIES = list(CONFIGS)
ITEM = {"tracking": "pair"}  # what one training item is, where not an image


def write_family_data(family: str, root: Path, items: int) -> list[str]:
    """Write a training split of about `items` items for `family` under `root` (no val/test splits) and return
    the config overrides that point a config of that family at it."""
    root = Path(root)
    counts = {"train": items, "val": 0, "test": 0}
    if family == "classification":  # ImageFolder of 64-px PNGs (the quick-start config's size)
        write_image_folder(root / "shapes", image_size=64, counts=counts, progress=False)
        return [f"data.root={root / 'shapes'}"]
    if family == "generative":  # ImageFolder of 32-px PNGs, read as image_folder instead of rendered in memory
        write_image_folder(root / "shapes32", image_size=32, counts=counts, progress=False)
        return ["data.dataset=image_folder", f"data.root={root / 'shapes32'}", "data.params.train_samples=null"]
    if family == "detection":  # COCO JSON scenes, 128 px, with instance masks
        write_coco_scenes(root / "scenes", image_size=128, counts=counts, progress=False)
        return [f"data.root={root / 'scenes'}"]
    if family == "segmentation":  # Pascal VOC layout, 128 px
        write_shapes_segmentation(root / "seg", image_size=128, counts=counts, progress=False)
        return [f"data.root={root / 'seg'}"]
    if family == "tracking":  # GOT-10k layout: a few 256x192 sequences; `items` pairs are drawn from them
        write_shapes_sequences(root / "seq", counts={"train": 4, "val": 0, "test": 0}, frames=40, progress=False)
        return [f"data.root={root / 'seq'}", f"data.params.pairs_per_epoch={items}"]
    raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")


def existing_data_overrides(family: str, root: Path, items: int) -> list[str]:
    """Overrides pointing a config of `family` at data already on disk in that config's layout."""
    if family not in CONFIGS:
        raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    overrides = [f"data.root={Path(root).resolve()}"]
    if family == "generative":  # the generative configs render shapes in memory; files are an ImageFolder
        overrides += ["data.dataset=image_folder", "data.params.train_samples=null"]
    if family == "tracking":  # pairs are drawn, not enumerated: draw as many as the benchmark reads
        overrides.append(f"data.params.pairs_per_epoch={items}")
    return overrides
