"""External region proposals (visionzoo.proposals): selective search with its disk cache, proposals files,
the dataset integration and the CLI. Real PNG files on disk, 64-128 px images."""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import save_file
from torchvision import tv_tensors

from visionzoo import proposals
from visionzoo.datasets.coco import CocoDetection
from visionzoo.datasets.common import open_image_rgb
from visionzoo.datasets.detection import build_detection_transforms, to_image
from visionzoo.datasets.write_shapes_scenes import make_scene, split_paths, write_coco_scenes
from visionzoo.proposals import (
    MissingProposalsError,
    ProposalsFile,
    SelectiveSearch,
    rects_to_boxes,
    write_proposals_file,
)

SUFFIXES = (".npz", ".safetensors", ".json")


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scenes")
    write_coco_scenes(root, image_size=64, counts={"train": 4, "val": 2, "test": 0}, progress=False)
    return root


@pytest.fixture
def png(tmp_path) -> Path:
    """A 128 x 96 (W x H) shapes scene: not square, so swapped axes show."""
    image, _, _ = make_scene(1234, 128, 4)
    path = tmp_path / "images" / "scene.png"
    path.parent.mkdir()
    image.crop((0, 0, 128, 96)).save(path)
    return path


@pytest.fixture
def ss_calls(monkeypatch) -> list:
    """Count (and record) the runs of OpenCV's selective search in this process."""
    calls: list = []
    real = proposals._run_selective_search

    def counting(bgr, *args, **kwargs):
        rects = real(bgr, *args, **kwargs)
        calls.append((bgr.shape, args, rects))
        return rects

    monkeypatch.setattr(proposals, "_run_selective_search", counting)
    return calls


def fake_opencv(monkeypatch, rects) -> list:
    """Replace OpenCV by a function returning ``rects``; returns the recorded calls' arguments."""
    calls: list = []

    def fake(bgr, mode, base_k=None, inc_k=None, sigma=None):
        calls.append((mode, base_k, inc_k, sigma))
        return np.asarray(rects, dtype=np.int32).reshape(-1, 4)

    monkeypatch.setattr(proposals, "_run_selective_search", fake)
    return calls


class MakesMarker:
    """Unpickling this creates ``path``: the stand-in for a malicious pickle."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


# ------------------------------------------------------------------------------------ selective search
def test_boxes_are_xyxy_inside_the_image_in_opencv_order(png, ss_calls):
    image = open_image_rgb(png)
    boxes = SelectiveSearch("fast", num_threads=1).get(1, str(png), image)
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes) > 5
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 128).all() and (boxes[:, 3] <= 96).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert len(np.unique(boxes, axis=0)) == len(boxes)
    (shape, _, rects), = ss_calls
    assert shape == (96, 128, 3)
    x, y, w, h = rects[0].tolist()  # OpenCV's best first stays first, as (x, y, x + w, y + h)
    assert boxes[0].tolist() == [x, y, x + w, y + h]
    np.testing.assert_array_equal(boxes, rects_to_boxes(rects, max_proposals=2000))


def test_conversion_drops_repeats_and_small_boxes_keeping_order(monkeypatch, tmp_path):
    rects = [[1, 2, 3, 4], [1, 2, 3, 4], [0, 0, 10, 5], [5, 5, 0, 3], [2, 2, 1, 1], [0, 0, 10, 5]]
    fake_opencv(monkeypatch, rects)
    image = Image.new("RGB", (16, 12))
    assert SelectiveSearch().get(0, "", image).tolist() == [[1, 2, 4, 6], [0, 0, 10, 5], [2, 2, 3, 3]]
    assert SelectiveSearch(min_box_size=2).get(0, "", image).tolist() == [[1, 2, 4, 6], [0, 0, 10, 5]]
    assert SelectiveSearch(max_proposals=1).get(0, "", image).tolist() == [[1, 2, 4, 6]]


def test_image_without_proposals_gives_empty_array_and_is_cached(monkeypatch, tmp_path):
    calls = fake_opencv(monkeypatch, [])
    ss = SelectiveSearch(cache_dir=tmp_path / "cache")
    for _ in range(2):
        boxes = ss.get(0, "", Image.new("RGB", (8, 8)))
        assert boxes.shape == (0, 4) and boxes.dtype == np.float32
    assert len(calls) == 1


def test_parameters_reach_opencv_only_when_given(monkeypatch):
    calls = fake_opencv(monkeypatch, [[0, 0, 4, 4]])
    image = Image.new("RGB", (8, 8))
    SelectiveSearch("quality").get(0, "", image)
    SelectiveSearch("fast", base_k=100, inc_k=50, sigma=0.5).get(0, "", image)
    SelectiveSearch("single", base_k=300).get(0, "", image)
    assert calls == [("quality", None, None, None), ("fast", 100, 50, 0.5), ("single", 300, None, None)]


def test_every_mode_runs_on_opencv(scenes):
    image = open_image_rgb(split_paths(scenes, "train")[0] / "train_00000.png")
    for ss in (SelectiveSearch("single", base_k=100, sigma=0.5, num_threads=1),
               SelectiveSearch("quality", num_threads=1), SelectiveSearch("fast", base_k=100, num_threads=1)):
        boxes = ss.get(1, "", image)
        assert len(boxes) > 0 and (boxes[:, 2:] <= 64).all(), ss


@pytest.mark.skipif(proposals._libc_srand() is None, reason="libc srand not reachable on this platform")
def test_seeded_ranking_is_reproducible(png):
    image = open_image_rgb(png)
    ss = SelectiveSearch("fast", num_threads=1, seed=0)
    np.testing.assert_array_equal(ss.get(0, "", image), ss.get(0, "", image))


@pytest.mark.parametrize("kwargs, name", [
    ({"mode": "slow"}, "mode"),
    ({"base_k": 0}, "base_k"),
    ({"base_k": 1.5}, "base_k"),
    ({"inc_k": -1}, "inc_k"),
    ({"mode": "single", "inc_k": 10}, "inc_k"),
    ({"sigma": 0}, "sigma"),
    ({"sigma": float("nan")}, "sigma"),
    ({"min_box_size": -1}, "min_box_size"),
    ({"max_proposals": 0}, "max_proposals"),
    ({"max_proposals": True}, "max_proposals"),
    ({"num_threads": -1}, "num_threads"),
    ({"seed": -1}, "seed"),
])
def test_invalid_parameters_are_named(kwargs, name):
    with pytest.raises(ValueError) as e:
        SelectiveSearch(**kwargs)
    assert name in str(e.value) and repr(kwargs[name]) in str(e.value)


def test_invalid_images_and_cache_dir(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="cache_dir"):
        SelectiveSearch(cache_dir=tmp_path / "file")
    with pytest.raises(ValueError, match="uint8"):
        SelectiveSearch().cache_key(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        SelectiveSearch().cache_key(np.zeros((8, 8, 4), np.uint8))


# ----------------------------------------------------------------------------------------------- cache
def test_second_call_hits_the_cache_whatever_the_path_or_image_type(png, tmp_path, ss_calls):
    cache = tmp_path / "cache"
    ss = SelectiveSearch("fast", cache_dir=cache, num_threads=1)
    image = open_image_rgb(png)
    first = ss.get(1, str(png), image)
    np.testing.assert_array_equal(ss.get(1, str(png), image), first)
    assert len(ss_calls) == 1
    key = ss.cache_key(image)
    assert ss.cache_file(image) == cache / key[:2] / f"{key}.npy"
    assert sorted(p for p in cache.rglob("*") if p.is_file()) == [cache / key[:2] / f"{key}.npy"]  # no temp files
    np.testing.assert_array_equal(np.load(cache / key[:2] / f"{key}.npy"), first)

    moved = tmp_path / "elsewhere" / "renamed.png"  # the same pixels under another name
    moved.parent.mkdir()
    shutil.copy(png, moved)
    same = SelectiveSearch("fast", cache_dir=cache)  # another instance, same parameters
    for result in (same.get(99, str(moved)), same.get(1, "", to_image(image)), same.get(1, "", np.asarray(image))):
        np.testing.assert_array_equal(result, first)
    assert len(ss_calls) == 1


def test_cache_key_changes_with_pixels_and_parameters_not_path(png):
    image = open_image_rgb(png)
    key = SelectiveSearch().cache_key(image)
    assert len(key) == 64 and key == SelectiveSearch(num_threads=1, cache_dir="/elsewhere").cache_key(image)
    pixels = np.asarray(image).copy()
    pixels[5, 7, 1] ^= 1
    assert SelectiveSearch().cache_key(pixels) != key
    assert SelectiveSearch().cache_key(np.asarray(image).reshape(128, 96, 3)) != key  # same bytes, other shape
    others = [SelectiveSearch(**kw).cache_key(image) for kw in (
        {"mode": "quality"}, {"base_k": 100}, {"inc_k": 100}, {"sigma": 0.5}, {"min_box_size": 4},
        {"max_proposals": 10}, {"seed": 1}, {"seed": None})]
    assert len(set(others + [key])) == len(others) + 1


def _npy(arr) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


@pytest.mark.parametrize("payload", ["garbage", "truncated", "wrong shape", "wrong dtype", "pickled object"])
def test_corrupt_cache_file_is_recomputed_and_overwritten(png, tmp_path, ss_calls, payload):
    ss = SelectiveSearch("fast", cache_dir=tmp_path / "cache", num_threads=1)
    image = open_image_rgb(png)
    first = ss.get(1, str(png), image)
    file = ss.cache_file(image)
    marker = tmp_path / "pwned"
    file.write_bytes({"garbage": b"not a numpy file", "truncated": file.read_bytes()[:150],
                      "wrong shape": _npy(np.zeros(3, np.float32)), "wrong dtype": _npy(first.astype(np.int64)),
                      "pickled object": _npy(np.array([MakesMarker(marker)], dtype=object))}[payload])
    with pytest.warns(UserWarning, match="corrupt selective search cache file"):
        again = ss.get(1, str(png), image)
    assert len(ss_calls) == 2 and not marker.exists()
    np.testing.assert_array_equal(again, first)
    np.testing.assert_array_equal(np.load(file, allow_pickle=False), first)


# ------------------------------------------------------------------------------------------ precompute
def test_precompute_with_bar_then_everything_is_cached(scenes, tmp_path, ss_calls, capsys):
    ds = CocoDetection(*split_paths(scenes, "train"))
    ss = SelectiveSearch("fast", cache_dir=tmp_path / "cache", num_threads=1)
    assert ss.precompute(ds, progress=True) == {"computed": 4, "cached": 0}
    err = capsys.readouterr().err
    assert "4/4" in err and "img/s" in err and "<" in err  # count, rate and elapsed<remaining
    assert ss.precompute(ds, progress=True) == {"computed": 0, "cached": 4}
    assert "4 cached" in capsys.readouterr().err
    items = [(iid, ds.image_path(i)) for i, iid in enumerate(ds.ids)]
    assert ss.precompute(items, progress=False) == {"computed": 0, "cached": 4}
    ds.proposals = ss
    for i in range(len(ds)):
        assert len(ds[i][1]["proposals"]) > 0
    assert len(ss_calls) == 4  # computed once per image, read from the cache since
    with pytest.raises(ValueError, match="cache_dir"):
        SelectiveSearch().precompute(ds)


# ---------------------------------------------------------------------------------------- integration
def test_dataset_adds_top_k_proposals_flipped_with_the_image(scenes, tmp_path):
    ds = CocoDetection(*split_paths(scenes, "train"))
    ss = SelectiveSearch("fast", cache_dir=tmp_path / "cache", num_threads=1)
    ds.proposals, ds.proposal_top_k = ss, 5
    _, target = ds[0]
    p = target["proposals"]
    assert isinstance(p, tv_tensors.BoundingBoxes) and tuple(p.canvas_size) == (64, 64)
    assert 0 < len(p) <= 5
    np.testing.assert_array_equal(p.numpy(), ss.get(ds.ids[0], "", ds.load_image(0))[:5])

    ds.transform = build_detection_transforms(train=True, hflip=1.0)
    _, flipped = ds[0]
    q = flipped["proposals"]
    assert isinstance(q, torch.Tensor) and q.shape == p.shape  # (SanitizeKeepingProposals returns a plain tensor)
    torch.testing.assert_close(q[:, 0], 64 - p[:, 2])
    torch.testing.assert_close(q[:, 2], 64 - p[:, 0])
    torch.testing.assert_close(q[:, 1::2], p[:, 1::2])


# ------------------------------------------------------------------------------------- proposals files
IDS = [7, 3, 11]
BOXES = [np.array([[0, 0, 10, 10], [1, 2, 5, 6], [3, 3, 4, 9]], np.float32), np.zeros((0, 4), np.float32),
         np.array([[2.5, 0, 8, 8], [0, 1, 2, 3]], np.float32)]
SCORES = [np.array([0.1, 0.9, 0.5], np.float32), np.zeros(0, np.float32), np.array([2.0, -1.0], np.float32)]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_proposals_file_round_trip_sorted_by_score(tmp_path, suffix):
    path = write_proposals_file(tmp_path / f"p{suffix}", IDS, BOXES, SCORES)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # written atomically, no temp file left
    pf = ProposalsFile(path)
    assert pf.ids == IDS and len(pf) == 3 and 7 in pf and 8 not in pf
    boxes, scores = pf.boxes_and_scores(7)
    assert scores.tolist() == pytest.approx([0.9, 0.5, 0.1])
    np.testing.assert_array_equal(boxes, BOXES[0][[1, 2, 0]])
    assert pf.get(7).dtype == np.float32 and pf.get(3).shape == (0, 4)
    np.testing.assert_array_equal(pf.get(11, "x.png", Image.new("RGB", (16, 16))), BOXES[2])


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("mode", ["XYWH_ABS", 1])  # 1: detectron2's BoxMode.XYWH_ABS
def test_xywh_boxes_are_served_as_xyxy(tmp_path, suffix, mode):
    path = write_proposals_file(tmp_path / f"p{suffix}", [5], [[[1, 2, 3, 4], [0, 0, 1, 1]]], [[0.0, 1.0]],
                                bbox_mode=mode)
    pf = ProposalsFile(path)
    assert pf.bbox_mode == "XYWH_ABS"
    assert pf.get(5).tolist() == [[0, 0, 1, 1], [1, 2, 4, 6]]


def test_detectron2_keys_and_hand_written_files(tmp_path):
    js = tmp_path / "d2.json"
    js.write_text(json.dumps({"ids": ["000005", "2007_000027"], "bbox_mode": 0,
                              "boxes": [[[0, 0, 10, 10], [1, 1, 5, 5]], [[2, 2, 4, 4]]],
                              "objectness_logits": [[-1.0, 3.0], [0.5]]}))
    pf = ProposalsFile(js)
    assert pf.ids == [5, 2007000027]  # int() of string ids, as DetectionDataset does
    assert pf.get(5).tolist() == [[1, 1, 5, 5], [0, 0, 10, 10]]
    npz = tmp_path / "flat.npz"
    np.savez(npz, ids=np.array([1, 2]), boxes=np.array([[0, 0, 2, 2], [0, 0, 3, 3], [1, 1, 2, 2]], np.float32),
             objectness_logits=np.array([0.0, 1.0, 0.0], np.float32), counts=np.array([2, 1]))
    assert ProposalsFile(npz).get(1).tolist() == [[0, 0, 3, 3], [0, 0, 2, 2]]
    st = tmp_path / "flat.safetensors"
    save_file({"ids": np.array([4]), "boxes": np.array([[1, 1, 2, 3]], np.float32),
               "scores": np.array([0.5], np.float32), "counts": np.array([1])}, str(st),
              metadata={"bbox_mode": "XYWH_ABS"})
    assert ProposalsFile(st).get(4).tolist() == [[1, 1, 3, 4]]


def _json(obj):
    return lambda path: path.write_text(json.dumps(obj))


def _npz(**arrays):
    return lambda path: np.savez(path, **arrays)


FLAT = {"ids": np.array([1]), "boxes": np.zeros((1, 4), np.float32), "scores": np.zeros(1, np.float32),
        "counts": np.array([1])}
BOX = [[0, 0, 1, 1]]


@pytest.mark.parametrize("suffix, write, fragments", [
    (".json", _json({"ids": [1, 2], "boxes": [BOX], "scores": [[1.0]]}), ["mismatched lengths", "2 ids"]),
    (".json", _json({"ids": [1], "boxes": [[[0, 0, 1, 1], [0, 0, 2, 2]]], "scores": [[1.0]]}),
     ["mismatched lengths", "image id 1", "2 boxes"]),
    (".json", _json({"ids": [1], "boxes": [[[0, 0, 1]]], "scores": [[1.0]]}), ["(P, 4)", "(1, 3)", "image id 1"]),
    (".npz", _npz(**{**FLAT, "boxes": np.zeros((1, 5), np.float32)}), ["(P, 4)", "(1, 5)"]),
    (".npz", _npz(**{**FLAT, "boxes": np.array([[0, 0, np.nan, 1]], np.float32)}),
     ["non-finite box coordinates", "image id 1"]),
    (".npz", _npz(**{**FLAT, "scores": np.array([np.inf], np.float32)}), ["non-finite scores", "image id 1"]),
    (".json", _json({"ids": [3], "boxes": [[[5, 0, 1, 1]]], "scores": [[1.0]]}),
     ["negative width or height", "image id 3", "[5.0, 0.0, 1.0, 1.0]"]),
    (".json", _json({"ids": [3], "boxes": [[[0, 0, 1, -1]]], "scores": [[1.0]], "bbox_mode": "XYWH_ABS"}),
     ["negative width or height", "XYWH_ABS"]),
    (".json", _json({"ids": [4, 4], "boxes": [BOX, BOX], "scores": [[1.0], [1.0]]}), ["duplicate image ids: 4"]),
    (".npz", _npz(**{**FLAT, "counts": np.array([2])}), ["mismatched lengths", "counts sum to 2", "1 boxes"]),
    (".npz", _npz(**{**FLAT, "counts": np.array([1, 0])}), ["mismatched lengths", "1 ids but 2 counts"]),
    (".npz", _npz(**{k: v for k, v in FLAT.items() if k != "counts"}), ["missing key", "'counts'"]),
    (".json", _json({"ids": [1], "boxes": [BOX]}), ["missing key 'scores'", "objectness_logits"]),
    (".json", _json({"ids": [1.5], "boxes": [BOX], "scores": [[1.0]]}), ["integer image ids"]),
    (".json", _json({"ids": ["a"], "boxes": [BOX], "scores": [[1.0]]}), ["ids[0] = 'a'", "integer"]),
    (".json", _json({"ids": [1], "boxes": [BOX], "scores": [[1.0]], "bbox_mode": "XYXY_REL"}),
     ["unsupported bbox_mode 'XYXY_REL'"]),
    (".json", _json([1, 2]), ["expected a JSON object"]),
    (".json", lambda p: p.write_text("{not json"), ["not valid JSON"]),
    (".npz", lambda p: np.savez(p, ids=np.array([1, 2]), counts=np.array([2, 1]), scores=np.zeros(3),
                                boxes=np.array([np.zeros((2, 4)), np.zeros((1, 4))], dtype=object)),
     ["without unpickling", "flat layout"]),
    (".npz", lambda p: p.write_bytes(b"garbage"), ["not a readable .npz"]),
    (".safetensors", lambda p: p.write_bytes(b"garbage"), ["not a readable safetensors file"]),
    (".txt", lambda p: p.write_text("1 0 0 1 1"), ["unsupported proposals file type '.txt'", ".npz"]),
])
def test_bad_proposals_files_are_explained(tmp_path, suffix, write, fragments):
    path = tmp_path / f"bad{suffix}"
    write(path)
    with pytest.raises(ValueError) as e:
        ProposalsFile(path)
    message = str(e.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message


def test_missing_file_and_missing_image_id(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        ProposalsFile(tmp_path / "nope.npz")
    path = write_proposals_file(tmp_path / "p.npz", IDS, BOXES, SCORES)
    pf = ProposalsFile(path)
    for error in (KeyError, ValueError, MissingProposalsError):
        with pytest.raises(error) as e:
            pf.get(999, "x.png")
        assert str(path) in str(e.value) and "image id 999" in str(e.value) and "7, 3, 11" in str(e.value)


def test_writer_checks_its_input_and_writes_nothing_on_error(tmp_path):
    with pytest.raises(ValueError, match="negative width or height"):
        write_proposals_file(tmp_path / "p.npz", [1], [[[3, 0, 1, 1]]], [[1.0]])
    with pytest.raises(ValueError, match="mismatched lengths"):
        write_proposals_file(tmp_path / "p.json", [1, 2], [BOX], [[1.0]])
    with pytest.raises(ValueError, match="not written as pickles"):
        write_proposals_file(tmp_path / "p.pkl", [1], [BOX], [[1.0]])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".pkl", ".pickle", ".pth", ".pt", ".npz", ".json", ".safetensors"])
def test_pickles_are_refused_and_never_run(tmp_path, suffix):
    live = tmp_path / "payload_is_live"
    call, args = MakesMarker(live).__reduce__()  # what unpickling would call, called here directly
    call(*args).close()
    assert live.exists()  # the payload really would run if unpickled
    marker = tmp_path / "pwned"
    path = tmp_path / f"proposals{suffix}"
    path.write_bytes(pickle.dumps({"ids": [1], "boxes": [np.zeros((1, 4))], "objectness_logits": [np.zeros(1)],
                                   "hook": MakesMarker(marker)}))
    with pytest.raises(ValueError) as e:
        ProposalsFile(path)
    assert not marker.exists()
    message = str(e.value)
    assert str(path) in message
    if suffix in proposals.PICKLE_SUFFIXES:
        assert "unpickl" in message and "trust" in message
        snippet = [line for line in message.splitlines() if line.startswith("    ")]
        assert len(snippet) == 2 and "write_proposals_file" in snippet[1] and '"proposals.npz"' in snippet[1]
        assert not any("pickle" in line for line in snippet)  # the advice itself never unpickles


# ----------------------------------------------------------------------------------------------- CLI
def test_cli_writes_a_proposals_file_with_the_dataset_ids(scenes, tmp_path, capsys):
    out, cache = tmp_path / "proposals_val.npz", tmp_path / "cache"
    assert proposals.main([str(scenes), "--split", "val", "--out", str(out), "--workers", "1",
                           "--cache-dir", str(cache), "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out
    ds = CocoDetection(*split_paths(scenes, "val"))
    pf = ProposalsFile(out)
    assert pf.ids == ds.ids
    serial = SelectiveSearch("fast", num_threads=1)  # this process, no cache: the pool's results are the same
    for i, iid in enumerate(ds.ids):
        boxes, scores = pf.boxes_and_scores(iid)
        np.testing.assert_array_equal(boxes, serial.get(iid, "", ds.load_image(i)))
        assert scores.tolist() == [-float(r) for r in range(len(boxes))]

    ds.proposals, ds.proposal_top_k = pf, 5
    np.testing.assert_array_equal(ds[1][1]["proposals"].numpy(), pf.get(ds.ids[1])[:5])

    # --image-dir / --ann-file override the layout; the cache makes the second run free
    images, ann = split_paths(scenes, "val")
    out_json = tmp_path / "p.json"
    assert proposals.main([str(tmp_path / "unused"), "--image-dir", str(images), "--ann-file", str(ann),
                           "--out", str(out_json), "--cache-dir", str(cache), "--no-progress"]) == 0
    assert "0 computed, 2 cached" in capsys.readouterr().out
    assert ProposalsFile(out_json).ids == ds.ids

    assert proposals.main([str(scenes), "--split", "val", "--out", str(tmp_path / "p.pkl")]) == 1
    assert "not written as pickles" in capsys.readouterr().err
