"""Tracking data: GOT-10k / OTB / LaSOT sequence readers on real files, their errors, and the synthetic
moving-shapes sequence writer read back through them."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionzoo.datasets.sequences import (
    OTB_FRAME_RANGES,
    Sequence,
    SequenceDataset,
    detect_layout,
    read_got10k_sequence,
    read_lasot_sequence,
    read_otb_sequence,
    read_sequence,
)
from visionzoo.datasets.write_shapes_sequences import (
    main as write_main,
)
from visionzoo.datasets.write_shapes_sequences import (
    make_sequence,
    sequence_seed,
    write_sequence,
)

ROOT = Path(__file__).resolve().parent.parent
REAL_GOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "GOT-10k_Val_000001"


# ------------------------------------------------------------------------------------------- helpers
_JPEG_CACHE: dict[tuple[int, int], bytes] = {}


def jpeg_bytes(w: int = 8, h: int = 6) -> bytes:
    """A small real JPEG (decoded only where a test loads frames)."""
    if (w, h) not in _JPEG_CACHE:
        buf = io.BytesIO()
        Image.new("RGB", (w, h), (200, 30, 60)).save(buf, format="JPEG", quality=90)
        _JPEG_CACHE[(w, h)] = buf.getvalue()
    return _JPEG_CACHE[(w, h)]


def write_frames(folder: Path, n: int, digits: int, first: int = 1) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    data = jpeg_bytes()
    for i in range(first, first + n):
        (folder / f"{i:0{digits}d}.jpg").write_bytes(data)


def boxes_text(boxes, sep: str = ",") -> str:
    return "".join(sep.join(str(v) for v in b) + "\n" for b in boxes)


def make_got(d: Path, n: int = 5, boxes=None, absence=None, cover=None, meta: bool = True) -> Path:
    write_frames(d, n, 8)
    boxes = [[10 + i, 20, 30, 40] for i in range(n)] if boxes is None else boxes
    (d / "groundtruth.txt").write_text(boxes_text(boxes))
    (d / "absence.label").write_text("".join(f"{v}\n" for v in (absence or [0] * n)))
    (d / "cover.label").write_text("".join(f"{v}\n" for v in (cover or [8] * n)))
    (d / "cut_by_image.label").write_text("0\n" * n)
    if meta:
        (d / "meta_info.ini").write_text("[METAINFO]\nurl: https://example.com/v\nobject_class: cat\n")
    return d


def make_otb(d: Path, n_images: int, boxes, sep: str = ",", gt_name: str = "groundtruth_rect.txt") -> Path:
    write_frames(d / "img", n_images, 4)
    (d / gt_name).write_text(boxes_text(boxes, sep))
    return d


def make_lasot(d: Path, boxes, occ, oov) -> Path:
    write_frames(d / "img", len(boxes), 8)
    (d / "groundtruth.txt").write_text(boxes_text(boxes))
    (d / "full_occlusion.txt").write_text(",".join(map(str, occ)) + "\n")
    (d / "out_of_view.txt").write_text(",".join(map(str, oov)) + "\n")
    (d / "nlp.txt").write_text("white airplane landing on the ground\n")
    return d


# ------------------------------------------------------------------------------------------- GOT-10k
@pytest.mark.skipif(not REAL_GOT.is_dir(), reason="real GOT-10k sequence not available")
def test_real_got10k_validation_sequence():
    seq = read_got10k_sequence(REAL_GOT)
    assert isinstance(seq, Sequence) and seq.name == "GOT-10k_Val_000001"
    assert len(seq) == 60 and seq.boxes.shape == (60, 4) and seq.boxes.dtype == np.float64
    np.testing.assert_array_equal(seq.boxes[0], [178, 220, 456, 315])
    assert seq.frames[0].name == "00000001.jpg" and seq.frames[-1].name == "00000060.jpg"
    assert seq.absent.shape == (60,) and seq.absent.dtype == bool
    assert seq.cover is not None and seq.cover.shape == (60,) and seq.cover.min() >= 0 and seq.cover.max() <= 8
    assert seq.meta["layout"] == "got10k"
    assert seq.meta["url"].startswith("https://") and seq.meta["object_class"] == "fireboat"
    assert seq.meta["cut_by_image"].shape == (60,)
    frame = seq.load_frame(0)
    assert frame.shape == (720, 1280, 3) and frame.dtype == np.uint8
    assert read_sequence(REAL_GOT).name == seq.name and detect_layout(REAL_GOT) == "got10k"


def test_got10k_synthetic_labels_and_zero_size_absent(tmp_path):
    boxes = [[1, 2, 3, 4], [0, 0, 0, 0], [5, 6, 7, 8]]
    d = make_got(tmp_path / "GOT-10k_Val_000002", 3, boxes, absence=[0, 1, 0], cover=[8, 0, 3])
    seq = read_got10k_sequence(d)
    assert seq.absent.tolist() == [False, True, False] and seq.cover.tolist() == [8, 0, 3]
    assert np.isnan(seq.boxes[1]).all() and seq.boxes[2].tolist() == [5, 6, 7, 8]
    assert seq.meta["url"] == "https://example.com/v"
    assert seq.load_frame(2).shape == (6, 8, 3)


def test_got10k_test_split_one_line_groundtruth_and_missing_meta(tmp_path):
    d = tmp_path / "GOT-10k_Test_000001"
    write_frames(d, 4, 8)
    (d / "groundtruth.txt").write_text("10.0000,20.0000,30.0000,40.0000\n")
    seq = read_got10k_sequence(d)
    assert len(seq) == 4 and seq.boxes[0].tolist() == [10, 20, 30, 40]
    assert np.isnan(seq.boxes[1:]).all() and not seq.absent.any() and seq.cover is None
    assert seq.meta["groundtruth_lines"] == 1


# ----------------------------------------------------------------------------------------------- OTB
@pytest.mark.parametrize("sep", [",", "\t", " ", "  ", ", ", "\t,"], ids=["comma", "tab", "space", "spaces",
                                                                         "comma-space", "tab-comma"])
def test_otb_separators_and_one_based_coordinates(tmp_path, sep):
    d = make_otb(tmp_path / "Basketball", 3, [[1, 1, 10, 20], [5, 6, 7, 8], [100, 200, 30, 40]], sep=sep)
    seq = read_otb_sequence(d)
    np.testing.assert_array_equal(seq.boxes, [[0, 0, 10, 20], [4, 5, 7, 8], [99, 199, 30, 40]])
    assert seq.cover is None and not seq.absent.any() and seq.meta["layout"] == "otb"
    assert [p.name for p in seq.frames] == ["0001.jpg", "0002.jpg", "0003.jpg"]


def test_otb_mixed_separators_in_one_file(tmp_path):
    d = tmp_path / "Deer"
    write_frames(d / "img", 3, 4)
    (d / "groundtruth_rect.txt").write_text("1,2,3,4\n5\t6\t7\t8\r\n9 10,11\t12\n\n")
    seq = read_otb_sequence(d)
    np.testing.assert_array_equal(seq.boxes, [[0, 1, 3, 4], [4, 5, 7, 8], [8, 9, 11, 12]])


def test_otb_nan_or_zero_size_box_is_absent(tmp_path):
    d = make_otb(tmp_path / "Box", 3, [[1, 1, 4, 4], ["NaN"] * 4, [3, 3, 0, 0]])
    seq = read_otb_sequence(d)
    assert seq.absent.tolist() == [False, True, True] and np.isnan(seq.boxes[1:]).all()


def test_otb_later_start_from_the_toolkit_table(tmp_path):
    assert OTB_FRAME_RANGES["david"] == (300, 770)
    n = 770 - 300 + 1
    d = make_otb(tmp_path / "David", 770, [[i + 1, 1, 10, 10] for i in range(n)])
    seq = read_otb_sequence(d)
    assert len(seq) == n and seq.frames[0].name == "0300.jpg" and seq.frames[-1].name == "0770.jpg"
    assert seq.boxes[0, 0] == 0 and seq.meta["frame_range"] == (300, 770)
    assert seq.meta["frame_range_source"] == "OTB_FRAME_RANGES"
    # an already-trimmed copy (as many images as boxes) is read whole
    t = make_otb(tmp_path / "trimmed" / "David", n, [[1, 1, 10, 10]] * n)
    assert read_otb_sequence(t).frames[0].name == "0001.jpg"


def test_otb_start_and_end_frame_arguments(tmp_path):
    d = make_otb(tmp_path / "Custom", 10, [[1, 1, 5, 5]] * 4)
    with pytest.raises(ValueError, match=r"groundtruth_rect\.txt: 4 ground-truth line\(s\) but 10 frame\(s\)"):
        read_otb_sequence(d)
    seq = read_otb_sequence(d, start_frame=7)
    assert [p.name for p in seq.frames] == ["0007.jpg", "0008.jpg", "0009.jpg", "0010.jpg"]
    seq = read_otb_sequence(d, start_frame=3, end_frame=6)
    assert [p.name for p in seq.frames] == ["0003.jpg", "0004.jpg", "0005.jpg", "0006.jpg"]
    assert seq.meta["frame_range"] == (3, 6) and seq.meta["frame_range_source"] == "arguments"
    with pytest.raises(ValueError, match=r"4 ground-truth line\(s\) but 5 frame\(s\).*frames 2\.\.6"):
        read_otb_sequence(d, start_frame=2, end_frame=6)
    with pytest.raises(ValueError, match=r"outside the images 1\.\.10"):
        read_otb_sequence(d, start_frame=8, end_frame=11)


def test_otb_multi_target_sequences(tmp_path):
    d = tmp_path / "Jogging"
    write_frames(d / "img", 3, 4)
    (d / "groundtruth_rect.1.txt").write_text(boxes_text([[1, 1, 5, 5]] * 3))
    (d / "groundtruth_rect.2.txt").write_text(boxes_text([[11, 11, 6, 6]] * 3, "\t"))
    s2 = read_otb_sequence(d, target=2)
    assert s2.name == "Jogging.2" and s2.boxes[0].tolist() == [10, 10, 6, 6] and s2.meta["target"] == 2
    by_name = read_sequence(tmp_path / "Jogging.1")
    assert by_name.name == "Jogging.1" and by_name.boxes[0].tolist() == [0, 0, 5, 5]
    with pytest.raises(ValueError, match=r"Jogging: several targets .*groundtruth_rect\.1\.txt"):
        read_otb_sequence(d)
    with pytest.raises(FileNotFoundError, match=r"groundtruth_rect\.3\.txt"):
        read_otb_sequence(d, target=3)
    ds = SequenceDataset(tmp_path)
    assert ds.names == ["Jogging.1", "Jogging.2"]
    # one non-empty target file (Human4's .1 file is empty): read without a target, named after the folder
    h = tmp_path / "other" / "Human4"
    write_frames(h / "img", 2, 4)
    (h / "groundtruth_rect.1.txt").write_text("")
    (h / "groundtruth_rect.2.txt").write_text(boxes_text([[3, 3, 4, 4]] * 2))
    s = read_sequence(h)
    assert s.name == "Human4" and s.meta["target"] == 2


# --------------------------------------------------------------------------------------------- LaSOT
def test_lasot_absent_frames(tmp_path):
    boxes = [[10, 10, 20, 20], [0, 0, 0, 0], [0, 0, 0, 0], [12, 12, 20, 20], [13, 13, 5, 5]]
    d = make_lasot(tmp_path / "airplane" / "airplane-1", boxes, occ=[0, 1, 0, 0, 1], oov=[0, 0, 1, 0, 0])
    seq = read_lasot_sequence(d)
    assert seq.name == "airplane-1" and len(seq) == 5 and seq.meta["object_class"] == "airplane"
    assert seq.absent.tolist() == [False, True, True, False, True]
    assert np.isnan(seq.boxes[1:3]).all()
    assert seq.boxes[0].tolist() == [10, 10, 20, 20]  # LaSOT boxes are already 0-based
    assert seq.boxes[4].tolist() == [13, 13, 5, 5]  # a real box in an occluded frame is kept
    assert seq.cover is None and seq.meta["nlp"].startswith("white airplane")
    assert seq.meta["full_occlusion"].tolist() == [False, True, False, False, True]


def test_lasot_zero_size_box_in_visible_frame_is_an_error(tmp_path):
    boxes = [[10, 10, 20, 20], [1, 1, 20, 20], [0, 0, 0, 0]]
    d = make_lasot(tmp_path / "cat" / "cat-3", boxes, occ=[0, 0, 0], oov=[0, 0, 0])
    with pytest.raises(ValueError, match=r"groundtruth\.txt, line 3: zero-size box"):
        read_lasot_sequence(d)


# ---------------------------------------------------------------------------------------------- auto
def test_auto_layout_detection(tmp_path):
    got = make_got(tmp_path / "g" / "GOT-10k_Train_000001", 3)
    otb = make_otb(tmp_path / "o" / "Car4", 3, [[1, 1, 2, 2]] * 3)
    lasot = make_lasot(tmp_path / "l" / "bird-2", [[1, 1, 2, 2]] * 3, [0, 0, 0], [0, 0, 0])
    assert [detect_layout(p) for p in (got, otb, lasot)] == ["got10k", "otb", "lasot"]
    assert read_sequence(got).meta["layout"] == "got10k"
    assert read_sequence(otb).boxes[0].tolist() == [0, 0, 2, 2]
    assert read_sequence(lasot).boxes[0].tolist() == [1, 1, 2, 2]
    assert read_sequence(otb, layout="otb").name == "Car4"
    (tmp_path / "empty").mkdir()
    assert detect_layout(tmp_path / "empty") is None
    with pytest.raises(ValueError, match=r"empty: not a tracking sequence folder"):
        read_sequence(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_sequence(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown sequence layout 'vot'"):
        read_sequence(got, layout="vot")


# ------------------------------------------------------------------------------------------- dataset
def test_sequence_dataset_with_and_without_list_txt(tmp_path):
    split = tmp_path / "val"
    for name in ("GOT-10k_Val_000010", "GOT-10k_Val_000002", "GOT-10k_Val_000001"):
        make_got(split / name, 3)
    (split / ".hidden").mkdir()
    (split / "notes").mkdir()  # not a sequence: skipped when scanning
    ds = SequenceDataset(tmp_path, "val")
    assert ds.names == ["GOT-10k_Val_000001", "GOT-10k_Val_000002", "GOT-10k_Val_000010"]
    assert len(ds) == 3 and isinstance(ds[0], Sequence) and ds["GOT-10k_Val_000002"].name == "GOT-10k_Val_000002"
    (split / "list.txt").write_text("GOT-10k_Val_000010\nGOT-10k_Val_000001\n")
    ds = SequenceDataset(tmp_path, split="val")
    assert ds.names == ["GOT-10k_Val_000010", "GOT-10k_Val_000001"]  # list.txt order and subset
    assert SequenceDataset(split, names=["GOT-10k_Val_000001"]).names == ["GOT-10k_Val_000001"]
    with pytest.raises(ValueError, match="no sequence"):
        SequenceDataset(split, names=["nope"])
    (split / "list.txt").write_text("GOT-10k_Val_000010\nGOT-10k_Val_000099\n")
    with pytest.raises(FileNotFoundError, match=r"list\.txt, line 2: sequence folder not found"):
        SequenceDataset(split)
    with pytest.raises(FileNotFoundError, match="train"):
        SequenceDataset(tmp_path, "train")


def test_sequence_dataset_lasot_nesting(tmp_path):
    for cls, k in (("zebra", 1), ("airplane", 10), ("airplane", 2)):
        make_lasot(tmp_path / cls / f"{cls}-{k}", [[1, 1, 2, 2]] * 2, [0, 0], [0, 0])
    ds = SequenceDataset(tmp_path, layout="lasot")
    assert ds.names == ["airplane-2", "airplane-10", "zebra-1"]
    assert all(s.meta["layout"] == "lasot" for s in ds)


# ---------------------------------------------------------------------------------------- bad inputs
def test_bad_groundtruth_line_count_names_both_counts(tmp_path):
    d = make_got(tmp_path / "s", 5, [[1, 2, 3, 4]] * 4, absence=[0] * 5, cover=[8] * 5)
    with pytest.raises(ValueError, match=r"s/groundtruth\.txt: 4 ground-truth line\(s\) but 5 frame\(s\)"):
        read_got10k_sequence(d)


@pytest.mark.parametrize("line, message", [
    ("1,2,3", r"line 3: expected 4 numbers x,y,w,h, got 3 field\(s\) in '1,2,3'"),
    ("1,2,3,4,5", r"line 3: expected 4 numbers x,y,w,h, got 5 field\(s\)"),
    ("1,abc,3,4", r"line 3: not a number in '1,abc,3,4'"),
    ("1,,3,4", r"line 3: expected 4 numbers|line 3: not a number"),
    ("1,2,-3,4", r"line 3: negative width or height in '1,2,-3,4'"),
    ("1,2,3,-0.5", r"line 3: negative width or height"),
    ("nan,2,3,4", r"line 3: some but not all values are NaN"),
    ("1,2,inf,4", r"line 3: infinite value"),
])
def test_bad_groundtruth_lines(tmp_path, line, message):
    boxes = ["1,2,3,4", "1,2,3,4", line, "1,2,3,4"]
    d = make_got(tmp_path / "seq", 4)
    (d / "groundtruth.txt").write_text("\n".join(boxes) + "\n")
    with pytest.raises(ValueError, match=r"groundtruth\.txt, " + message):
        read_got10k_sequence(d)


def test_bad_otb_line_names_file_and_line(tmp_path):
    d = tmp_path / "Bolt"
    write_frames(d / "img", 3, 4)
    (d / "groundtruth_rect.txt").write_text("1 2 3 4\n1\t2\tx\t4\n1 2 3 4\n")
    with pytest.raises(ValueError, match=r"Bolt/groundtruth_rect\.txt, line 2: not a number in '1\\t2\\tx\\t4'"):
        read_otb_sequence(d)
    (d / "groundtruth_rect.txt").write_text("1 2 3 4\n\n1 2 3 4\n")
    with pytest.raises(ValueError, match=r"groundtruth_rect\.txt, line 2: blank line"):
        read_otb_sequence(d)


def test_bad_label_files(tmp_path):
    d = make_got(tmp_path / "seq", 4, absence=[0, 0, 0], cover=[8] * 4)
    with pytest.raises(ValueError, match=r"seq/absence\.label: 3 absence value\(s\) for 4 frames"):
        read_got10k_sequence(d)
    d = make_got(tmp_path / "seq2", 4, absence=[0, 2, 0, 0], cover=[8] * 4)
    with pytest.raises(ValueError, match=r"absence\.label, line 2: absence value 2 \(frame 2\) is outside 0\.\.1"):
        read_got10k_sequence(d)
    d = make_got(tmp_path / "seq3", 4, absence=[0] * 4, cover=[8, 8, 8, 9])
    with pytest.raises(ValueError, match=r"cover\.label, line 4: cover value 9 \(frame 4\) is outside 0\.\.8"):
        read_got10k_sequence(d)
    d = make_got(tmp_path / "seq4", 4, absence=[0] * 4, cover=[8, "x", 8, 8])
    with pytest.raises(ValueError, match=r"cover\.label, line 2: cover value 'x' \(frame 2\) is not an integer"):
        read_got10k_sequence(d)
    d = make_got(tmp_path / "seq5", 4, absence=[0] * 4, cover=[8] * 5)
    with pytest.raises(ValueError, match=r"cover\.label: 5 cover value\(s\) for 4 frames"):
        read_got10k_sequence(d)
    d = make_lasot(tmp_path / "cat" / "cat-1", [[1, 1, 2, 2]] * 3, occ=[0, 0], oov=[0, 0, 0])
    with pytest.raises(ValueError, match=r"full_occlusion\.txt: 2 full_occlusion value\(s\) for 3 frames"):
        read_lasot_sequence(d)
    (d / "full_occlusion.txt").write_text("0,1,3\n")
    with pytest.raises(ValueError, match=r"full_occlusion\.txt, line 1: full_occlusion value 3 \(frame 3\)"):
        read_lasot_sequence(d)


def test_zero_size_box_where_visible_is_an_error(tmp_path):
    d = make_got(tmp_path / "seq", 3, [[1, 2, 3, 4], [1, 2, 0, 4], [1, 2, 3, 4]])
    with pytest.raises(ValueError, match=r"groundtruth\.txt, line 2: zero-size box"):
        read_got10k_sequence(d)


def test_folder_without_frames_and_missing_files(tmp_path):
    d = tmp_path / "GOT-10k_Val_000003"
    d.mkdir()
    (d / "groundtruth.txt").write_text("1,2,3,4\n")
    with pytest.raises(ValueError, match=r"GOT-10k_Val_000003: no frames"):
        read_got10k_sequence(d)
    o = tmp_path / "Crossing"
    (o / "img").mkdir(parents=True)
    (o / "groundtruth_rect.txt").write_text("1,2,3,4\n")
    with pytest.raises(ValueError, match=r"Crossing/img: no frames"):
        read_otb_sequence(o)
    lasot = tmp_path / "dog" / "dog-1"
    (lasot / "img").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"dog-1/img: no frames"):
        read_lasot_sequence(lasot)
    g = tmp_path / "nogt"
    write_frames(g, 3, 8)
    with pytest.raises(FileNotFoundError, match=r"nogt/groundtruth\.txt"):
        read_got10k_sequence(g)
    o2 = tmp_path / "Coke"
    write_frames(o2 / "img", 3, 4)
    with pytest.raises(FileNotFoundError, match=r"Coke/groundtruth_rect\.txt"):
        read_otb_sequence(o2)
    write_frames(lasot / "img", 2, 8)
    with pytest.raises(FileNotFoundError, match=r"dog-1/groundtruth\.txt"):
        read_lasot_sequence(lasot)
    with pytest.raises(FileNotFoundError, match="missing_seq"):
        read_got10k_sequence(tmp_path / "missing_seq")


def test_gap_in_frame_numbers_is_an_error(tmp_path):
    d = make_got(tmp_path / "seq", 4)
    (d / "00000003.jpg").unlink()
    with pytest.raises(ValueError, match=r"seq: frame files are not numbered consecutively.*00000004\.jpg"):
        read_got10k_sequence(d)


def test_unreadable_frame_names_the_file(tmp_path):
    d = make_got(tmp_path / "seq", 2)
    (d / "00000002.jpg").write_bytes(b"not a jpeg")
    seq = read_got10k_sequence(d)
    with pytest.raises(Exception, match=r"00000002\.jpg"):
        seq.load_frame(1)


# -------------------------------------------------------------------------------------------- writer
SMALL = ["--train", "2", "--val", "1", "--test", "0", "--frames", "12", "--size", "96x72", "--no-progress"]


def test_writer_round_trip(tmp_path):
    out = tmp_path / "shapes_seq"
    assert write_main([str(out), *SMALL]) == 0
    meta = json.loads((out / "sequences_meta.json").read_text())
    assert meta["complete"] and meta["generator_version"] >= 1
    assert meta["counts"] == {"train": 2, "val": 1, "test": 0} and meta["size"] == [96, 72]
    assert meta["stats"]["train"]["sequences"] == 2 and meta["stats"]["train"]["frames"] == 24
    assert sum(meta["stats"]["train"]["scenarios"]["motion"].values()) == 2
    train, val = SequenceDataset(out, "train"), SequenceDataset(out, "val")
    assert train.names == ["Shapes_Train_000001", "Shapes_Train_000002"] and val.names == ["Shapes_Val_000001"]
    assert len(SequenceDataset(out, "test")) == 0
    for seq in [*train, *val]:
        assert len(seq) == 12 and seq.boxes.shape == (12, 4) and seq.cover.shape == (12,)
        assert seq.meta["object_class"] in ("circle", "square", "triangle", "star", "hexagon")
        assert {"motion_class", "scale_change", "rotation", "occlusion", "distractors", "leave_frame"} <= set(seq.meta)
        ok = ~np.isnan(seq.boxes).any(axis=1)
        x, y, w, h = seq.boxes[ok].T
        assert (x >= 0).all() and (y >= 0).all() and (w > 0).all() and (h > 0).all()
        assert (x + w <= 96 + 1e-6).all() and (y + h <= 72 + 1e-6).all()
        assert ((seq.cover == 0) == seq.absent).all()
        assert not seq.absent[0] and seq.cover[0] == 8  # trackers initialise on a fully visible target
        assert seq.load_frame(0).shape == (72, 96, 3)
    # same parameters: nothing rewritten; other parameters: refused
    gt = out / "train" / "Shapes_Train_000001" / "groundtruth.txt"
    stamp = gt.stat().st_mtime_ns
    assert write_main([str(out), *SMALL]) == 0 and gt.stat().st_mtime_ns == stamp
    assert write_main([str(out), *SMALL[:-1], "--seed", "1", "--no-progress"]) == 1


def test_writer_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert write_main([str(a), *SMALL]) == 0 and write_main([str(b), *SMALL]) == 0
    for rel in ("train/list.txt", "train/Shapes_Train_000002/groundtruth.txt", "val/Shapes_Val_000001/cover.label",
                "train/Shapes_Train_000001/meta_info.ini", "train/Shapes_Train_000001/00000007.jpg"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    c = tmp_path / "c"
    assert write_main([str(c), *SMALL, "--seed", "3"]) == 0
    assert ((a / "train/Shapes_Train_000001/groundtruth.txt").read_bytes()
            != (c / "train/Shapes_Train_000001/groundtruth.txt").read_bytes())


def test_forced_leave_frame_gives_absent_frames(tmp_path):
    d = tmp_path / "leave"
    write_sequence(d, sequence_seed(0, "train", 5), 12, (96, 72), scenarios={"leave_frame": True})
    seq = read_got10k_sequence(d)
    assert seq.meta["leave_frame"] == "1" and len(seq) == 12
    assert seq.absent.any() and not seq.absent[0]
    out = seq.absent & np.isnan(seq.boxes).any(axis=1)
    assert out.any()  # fully outside the image: 0,0,0,0 written, read back as NaN
    assert seq.meta["cut_by_image"][out].all() and (seq.cover[seq.absent] == 0).all()


def test_forced_full_occlusion_and_distractors(tmp_path):
    sc = {"occlusion": "full", "distractors": 2, "leave_frame": False, "kind": "star", "rotation": True,
          "scale_change": "growing", "motion": "accelerating"}
    seq = make_sequence(sequence_seed(0, "train", 7), 30, (128, 96), scenarios=sc)
    assert seq.scenarios == sc and seq.info["object_class"] == "star" and seq.info["distractors"] == 2
    hidden = seq.absent & (seq.boxes[:, 2] > 0)  # occluded in the frame: box kept, absent, cover 0
    assert hidden.any() and (seq.cover[hidden] == 0).all()
    assert seq.cover[0] == 8 and not seq.cut_by_image[0]
    sizes = seq.boxes[~seq.absent & ~seq.cut_by_image, 2]
    assert sizes[-1] > sizes[0]  # growing
    with pytest.raises(ValueError, match="unknown scenario key"):
        make_sequence(1, 12, (96, 72), scenarios={"wobble": True})
    with pytest.raises(ValueError, match="occlusion='some'"):
        make_sequence(1, 12, (96, 72), scenarios={"occlusion": "some"})


def test_writer_command_line_subprocess(tmp_path):
    out = tmp_path / "cli"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "visionzoo.datasets.write_shapes_sequences", str(out), "--train", "1",
                        "--val", "0", "--test", "0", "--frames", "6", "--size", "64", "--no-progress"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "wrote shapes sequences" in r.stdout
    seq = read_got10k_sequence(out / "train" / "Shapes_Train_000001")
    assert len(seq) == 6 and seq.load_frame(5).shape == (64, 64, 3)
    assert (out / "train" / "list.txt").read_text() == "Shapes_Train_000001\n"
    r = subprocess.run([sys.executable, "-m", "visionzoo.datasets.write_shapes_sequences", str(out), "--size", "8x8"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "error:" in r.stderr
