"""Writing shapes to disk (layout, metadata, idempotence, CLI) and reading ImageFolders back, bad
inputs included."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from visionzoo.datasets.common import ImageReadError, SkippedSample
from visionzoo.datasets.folder import ImageFolderDataset
from visionzoo.datasets.shapes import SHAPE_CLASSES, ShapesClassification
from visionzoo.datasets.write_shapes import main, write_image_folder

COUNTS = {"train": 30, "val": 10, "test": 10}
SIZE = 32


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    counts = write_image_folder(root, image_size=SIZE, counts=COUNTS, seed=0, progress=False)
    assert counts == COUNTS
    return root


def snapshot(root):
    return {p: p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def make_folder(root, layout: dict):
    """layout: {"class/file.png": "img" | bytes}."""
    for rel, content in layout.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if content == "img":
            Image.new("RGB", (8, 8), (200, 10, 10)).save(p)
        else:
            p.write_bytes(content)
    return root


# ------------------------------------------------------------------------------------------- writer
def test_writer_layout_and_metadata(written):
    meta = json.loads((written / "shapes_meta.json").read_text())
    assert meta["image_size"] == SIZE and meta["counts"] == COUNTS and meta["seed"] == 0
    assert meta["format"] == "png" and meta["classes"] == list(SHAPE_CLASSES) and meta["complete"]
    for split, n in COUNTS.items():
        files = sorted((written / split).glob("*/*"))
        assert len(files) == n
        assert {f.parent.name for f in files} <= set(SHAPE_CLASSES)
        assert sorted(f.name for f in files) == [f"{split}_{i:05d}.png" for i in range(n)]
        assert sum(meta["class_counts"][split].values()) == n
    img = Image.open(next((written / "train").glob("*/*.png")))
    assert img.size == (SIZE, SIZE) and img.mode == "RGB"


def test_writer_is_idempotent_and_refills_missing_files(written, capsys):
    before = snapshot(written)
    assert write_image_folder(written, image_size=SIZE, counts=COUNTS, seed=0, progress=False) == COUNTS
    assert snapshot(written) == before  # nothing rewritten
    victim = sorted((written / "val").glob("*/*.png"))[3]
    data = victim.read_bytes()
    victim.unlink()
    write_image_folder(written, image_size=SIZE, counts=COUNTS, seed=0, progress=False)
    assert victim.read_bytes() == data  # the same deterministic image comes back
    rc = main([str(written), "--size", str(SIZE), "--train", "30", "--val", "10", "--test", "10",
               "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and "nothing to do" in out and len(out.strip().splitlines()) == 1


def test_writer_refuses_other_parameters_unless_overwrite(tmp_path, capsys):
    root = tmp_path / "s"
    write_image_folder(root, image_size=16, counts={"train": 5, "val": 0, "test": 2}, progress=False)
    assert not (root / "val").exists()  # an empty split gets no folder
    with pytest.raises(ValueError, match=r"different parameters.*seed: 0 on disk vs 1 asked.*overwrite"):
        write_image_folder(root, image_size=16, counts={"train": 5, "val": 0, "test": 2}, seed=1,
                           progress=False)
    rc = main([str(root), "--size", "16", "--train", "5", "--val", "0", "--test", "2", "--seed", "1",
               "--no-progress"])
    assert rc == 1 and "different parameters" in capsys.readouterr().err
    rc = main([str(root), "--size", "16", "--train", "4", "--val", "0", "--test", "0", "--seed", "1",
               "--format", "jpg", "--overwrite", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and out.startswith("wrote 4 of 4") and len(out.strip().splitlines()) == 1
    assert len(list(root.rglob("*.jpg"))) == 4 and not list(root.rglob("*.png"))
    assert json.loads((root / "shapes_meta.json").read_text())["format"] == "jpg"
    ds = ImageFolderDataset(root / "train")
    assert len(ds) == 4 and ds[0][0].size == (16, 16)


def test_writer_refuses_a_foreign_folder(tmp_path):
    make_folder(tmp_path, {"train/cats/a.png": "img"})
    with pytest.raises(ValueError, match="no shapes_meta.json"):
        write_image_folder(tmp_path, image_size=16, counts={"train": 2, "val": 0, "test": 0}, progress=False)
    with pytest.raises(ValueError, match="'bogus'"):
        write_image_folder(tmp_path / "x", counts={"bogus": 3}, progress=False)
    with pytest.raises(ValueError, match="'gif'"):
        write_image_folder(tmp_path / "x", fmt="gif", progress=False)


def test_written_files_read_back_with_the_right_labels(written):
    ds = ImageFolderDataset(written / "train")
    assert ds.classes == sorted(SHAPE_CLASSES) and len(ds) == COUNTS["train"]
    ref = ShapesClassification("train", num_samples=COUNTS["train"], image_size=SIZE, seed=0)
    for path, label in ds.samples:
        index = int(re.search(r"train_(\d+)\.png$", path).group(1))
        image, ref_label = ref[index]
        assert ds.classes[label] == SHAPE_CLASSES[ref_label]
        assert np.array_equal(np.asarray(ds[ds.samples.index((path, label))][0]), np.asarray(image))
    # val/test can reuse a fixed class order (here the generator's)
    val = ImageFolderDataset(written / "val", classes=list(SHAPE_CLASSES), transform=np.asarray)
    ref_val = ShapesClassification("val", num_samples=COUNTS["val"], image_size=SIZE)
    by_name = {re.search(r"val_(\d+)", p).group(1): lab for p, lab in val.samples}
    assert [by_name[f"{i:05d}"] for i in range(COUNTS["val"])] == ref_val.targets
    arr, _ = val[0]
    assert isinstance(arr, np.ndarray) and arr.shape == (SIZE, SIZE, 3)
    assert isinstance(val.load_image(0), Image.Image)
    assert val.targets == [lab for _, lab in val.samples]


# ------------------------------------------------------------------------------------- folder reader
def test_folder_scan_order_filters_and_class_mapping(tmp_path):
    make_folder(tmp_path, {"b/2.png": "img", "b/1.JPG": "img", "b/notes.txt": b"x", "b/.hidden.png": "img",
                           "a/x.png": "img", "a/sub/y.png": "img", ".cache/z.png": "img"})
    ds = ImageFolderDataset(tmp_path)
    assert ds.classes == ["a", "b"] and ds.class_to_idx == {"a": 0, "b": 1}
    assert [(p.replace(str(tmp_path), ""), lab) for p, lab in ds.samples] == [
        ("/a/sub/y.png", 0), ("/a/x.png", 0), ("/b/1.JPG", 1), ("/b/2.png", 1)]
    fixed = ImageFolderDataset(tmp_path, classes=["b", "extra", "a"])
    assert fixed.classes == ["b", "extra", "a"] and fixed.targets == [2, 2, 0, 0]
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "a")) + ".*no image files"):
        ImageFolderDataset(tmp_path, extensions=("jpg",))  # a has no .jpg (extension case ignored)


def test_bad_roots_and_class_folders(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        ImageFolderDataset(missing)
    (tmp_path / "empty_root").mkdir()
    make_folder(tmp_path, {"empty_root/loose.png": "img"})
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "empty_root")) + ".*no class sub-folders"):
        ImageFolderDataset(tmp_path / "empty_root")
    make_folder(tmp_path, {"r/cat/a.png": "img", "r/dog/readme.txt": b"no images"})
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "r" / "dog")) + ".*no image files"):
        ImageFolderDataset(tmp_path / "r")
    (tmp_path / "r" / "dog" / "readme.txt").unlink()
    make_folder(tmp_path, {"r/dog/b.png": "img"})
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "r" / "dog")) + ".*not among"):
        ImageFolderDataset(tmp_path / "r", classes=["cat", "bird"])
    with pytest.raises(ValueError, match="'ignore'"):
        ImageFolderDataset(tmp_path / "r", on_corrupt="ignore")


@pytest.fixture
def broken(tmp_path):
    good = tmp_path / "c" / "good.png"
    good.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(good)
    data = good.read_bytes()
    (tmp_path / "c" / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "c" / "random.jpg").write_bytes(np.random.default_rng(1).bytes(500))
    return tmp_path


@pytest.mark.parametrize("name", ["truncated.png", "random.jpg"])
def test_corrupt_files_raise_or_are_skipped(broken, name):
    ds = ImageFolderDataset(broken)
    i = [p for p, _ in ds.samples].index(str(broken / "c" / name))
    with pytest.raises(ImageReadError, match=re.escape(str(broken / "c" / name))):
        ds[i]
    skip = ImageFolderDataset(broken, on_corrupt="skip")
    marker = skip[i]
    assert isinstance(marker, SkippedSample) and marker.path == str(broken / "c" / name) and marker.reason
    good = [p for p, _ in ds.samples].index(str(broken / "c" / "good.png"))
    assert skip[good][0].size == (40, 40)


def test_oversized_image_is_refused_with_the_limit(broken):
    ds = ImageFolderDataset(broken, max_image_pixels=1000)
    good = [p for p, _ in ds.samples].index(str(broken / "c" / "good.png"))
    with pytest.raises(ImageReadError, match=r"good\.png.*1,600 pixels.*limit of 1,000"):
        ds[good]
    assert isinstance(ImageFolderDataset(broken, max_image_pixels=1000, on_corrupt="skip")[good], SkippedSample)
    assert ImageFolderDataset(broken, max_image_pixels=1600)[good][0].size == (40, 40)


def test_vanished_file_raises_or_is_skipped(tmp_path):
    make_folder(tmp_path, {"a/x.png": "img", "a/y.png": "img"})
    ds = ImageFolderDataset(tmp_path)
    (tmp_path / "a" / "y.png").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "a" / "y.png"))):
        ds[1]
    ds.on_corrupt = "skip"
    assert ds[1].path == str(tmp_path / "a" / "y.png")
