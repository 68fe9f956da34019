"""MNIST / CIFAR-10 readers, the distorted MNIST of the spatial-transformer paper, LeNet-5 and the CIFAR ResNets,
and the shipped lenet5.mnist file reproducing its card. Tests that need ../shared/data skip when it is absent."""
from __future__ import annotations

import gzip
import io
import json
import struct
import tarfile

import numpy as np
import pytest
import torch

import visionzoo
from tests.helpers import ROOT, run_script
from visionzoo.datasets.common import ImageReadError
from visionzoo.datasets.digits import (
    CIFAR10,
    CIFAR10_CLASSES,
    DISTORTIONS,
    MNIST,
    DistortedMNIST,
    distort_digits,
    read_idx,
    unpack_archive,
)
from visionzoo.models.resnet_cifar import ZeroPadShortcut
from visionzoo.profile import count_parameters
from visionzoo.weights import REPO_WEIGHTS_DIR

SHARED = ROOT.parent / "shared" / "data"
MNIST_RAW = SHARED / "mnist" / "raw"
CIFAR_ARCHIVE = SHARED / "cifar10-jpeg.tar.gz"


def need(path):
    if not path.exists():
        pytest.skip(f"needs {path} (the shared real-data folder beside the repository)")
    return path


@pytest.fixture(scope="session")
def cifar_jpeg(tmp_path_factory):
    """The JPEG CIFAR-10 archive unpacked once per test session (never into the repository)."""
    return unpack_archive(need(CIFAR_ARCHIVE), tmp_path_factory.mktemp("cifar10-jpeg"))


# ---- models -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, params", [
    ("resnet20_cifar", 269_722), ("resnet32_cifar", 464_154), ("resnet44_cifar", 658_586),
    ("resnet56_cifar", 853_018), ("resnet110_cifar", 1_727_962), ("lenet5", 61_706)])
def test_parameter_counts_match_the_papers(name, params):
    # He et al. 2016, Table 6: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M; LeNet-5 with full C3 connectivity
    assert count_parameters(visionzoo.create_model(name)) == params


def test_cifar_resnet_layout_and_option_a_shortcut():
    model = visionzoo.create_model("resnet20_cifar")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 19 and len([m for m in model.modules() if isinstance(m, torch.nn.Linear)]) == 1  # 6n+2
    assert [c.out_channels for c in convs[::6]] == [16, 16, 32, 64]
    shortcut = model.layer2[0].shortcut
    assert isinstance(shortcut, ZeroPadShortcut) and not list(shortcut.parameters())
    x = torch.randn(2, 16, 32, 32)
    y = shortcut(x)
    assert y.shape == (2, 32, 16, 16)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2]) and not y[:, 16:].any()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_lenet5_pads_28_to_32_and_refuses_other_sizes():
    model = visionzoo.create_model("lenet5").eval()
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(model(x), model(torch.nn.functional.pad(x, (2, 2, 2, 2))))
    assert model.features(x).shape == (3, 84)
    with pytest.raises(ValueError, match="28x28 or 32x32"):
        model(torch.randn(1, 1, 30, 30))
    with pytest.raises(ValueError, match="activation"):
        visionzoo.create_model("lenet5", activation="sigmoid")


def test_cifar_resnet_depth_must_be_6n_plus_2():
    from visionzoo.models.resnet_cifar import CifarResNet

    with pytest.raises(ValueError, match="6n \\+ 2"):
        CifarResNet(21)


# ---- IDX and CIFAR binary readers on files written here --------------------------------------------------------
def idx_bytes(array: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape) + \
        array.astype(np.uint8).tobytes()


def write_mnist(folder, n_train=20, n_test=10, gz=True):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        arrays[split] = (images, labels)
        for kind, array in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            name = folder / f"{split}-{kind}"
            if gz:
                with gzip.open(f"{name}.gz", "wb") as f:
                    f.write(idx_bytes(array))
            else:
                name.write_bytes(idx_bytes(array))
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_reader_reads_idx_files_and_carves_a_validation_split(tmp_path, gz):
    arrays = write_mnist(tmp_path / "raw", gz=gz)
    train = MNIST(tmp_path, "train", val_size=5)  # finds the raw/ sub-folder
    val = MNIST(tmp_path / "raw", "val", val_size=5)
    test = MNIST(tmp_path / "raw", "test")
    assert (len(train), len(val), len(test)) == (15, 5, 10)
    everything = torch.cat([train.images, val.images])
    assert sorted(map(bytes, everything.numpy())) == sorted(map(bytes, arrays["train"][0][:, None]))
    assert torch.equal(test.images[:, 0], torch.from_numpy(arrays["t10k"][0]))
    assert test.labels.tolist() == list(arrays["t10k"][1])
    image, label = test[3]
    assert image.dtype == torch.uint8 and image.shape == (1, 28, 28) and label == 3
    assert MNIST(tmp_path, "val", val_size=5).images.equal(val.images)  # the carve is fixed by split_seed


def test_mnist_reader_names_missing_and_corrupt_files(tmp_path):
    write_mnist(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.*train-images-idx3-ubyte"):
        MNIST(tmp_path, "test")
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ImageReadError, match="train-images-idx3-ubyte.*truncated"):
        MNIST(tmp_path, "train", val_size=5)
    path.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(ImageReadError, match="not an IDX file"):
        read_idx(path)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        MNIST(tmp_path, "dev")


def test_cifar10_binary_batches(tmp_path):
    rng = np.random.default_rng(1)
    expected = {}
    for name, n in [(f"data_batch_{i}.bin", 4) for i in range(1, 6)] + [("test_batch.bin", 6)]:
        records = rng.integers(0, 256, (n, 3073), dtype=np.uint8)
        records[:, 0] %= 10
        expected[name] = records
        (tmp_path / name).write_bytes(records.tobytes())
    test = CIFAR10(tmp_path, "test")
    assert len(test) == 6 and test.classes == CIFAR10_CLASSES
    record = expected["test_batch.bin"][2]
    assert test.labels[2] == record[0]
    assert torch.equal(test.images[2], torch.from_numpy(record[1:].reshape(3, 32, 32)))  # R, G, B planes
    assert len(CIFAR10(tmp_path, "trainval")) == 20 and len(CIFAR10(tmp_path, "val", val_size=3)) == 3
    (tmp_path / "test_batch.bin").write_bytes(expected["test_batch.bin"].tobytes()[:-1])
    with pytest.raises(ImageReadError, match="test_batch.bin.*3,073-byte"):
        CIFAR10(tmp_path, "test")


def test_cifar10_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_batch_1.bin.*visionzoo.datasets.unpack"):
        CIFAR10(tmp_path, "train")


def test_unpack_refuses_members_leaving_the_folder_and_runs_once(tmp_path):
    good = tmp_path / "good.tar.gz"
    with tarfile.open(good, "w:gz") as tar:
        info = tarfile.TarInfo("a/b.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    dest = unpack_archive(good, tmp_path / "out")
    assert (dest / "a" / "b.txt").read_text() == "hi"
    (dest / "a" / "b.txt").unlink()
    assert unpack_archive(good, tmp_path / "out") == dest and not (dest / "a" / "b.txt").exists()  # done once
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"no"))
    with pytest.raises(ImageReadError, match="evil.tar: cannot unpack"):
        unpack_archive(evil, tmp_path / "out2")
    assert not (tmp_path / "escaped.txt").exists()


# ---- distorted MNIST ----------------------------------------------------------------------------------------
def test_distortion_geometry_shift_and_rotation():
    digit = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    digit[0, 0, 10:14, 6:9] = 200
    params = {"angle": 0.0, "scale": 1.0, "shift": np.array([3.0, -2.0]), "clutter": []}
    shifted = distort_digits(digit, "RTS", [params])[0, 0]
    canvas = torch.zeros(42, 42, dtype=torch.uint8)
    canvas[7:35, 7:35] = digit[0, 0]
    assert torch.equal(shifted, torch.roll(canvas, shifts=(-2, 3), dims=(0, 1)))  # x right by 3, y up by 2
    rotated = distort_digits(digit, "R", [{**params, "angle": 90.0, "shift": np.zeros(2)}])[0, 0]
    assert any(torch.equal(rotated, torch.rot90(digit[0, 0], k)) for k in (1, -1))
    half = distort_digits(digit.float().clamp(0, 255).to(torch.uint8), "RTS",
                          [{**params, "scale": 0.5, "shift": np.zeros(2)}])[0, 0]
    assert abs(half.float().sum() / digit.float().sum() - 0.25) < 0.05  # area scales with scale**2


def test_distorted_mnist_is_deterministic_and_has_the_papers_canvases(tmp_path):
    write_mnist(tmp_path, n_train=30, n_test=12)
    for variant, spec in DISTORTIONS.items():
        a = DistortedMNIST(tmp_path, "test", variant=variant, seed=3)
        b = DistortedMNIST(tmp_path, "test", variant=variant, seed=3)
        c = DistortedMNIST(tmp_path, "test", variant=variant, seed=4)
        assert a.images.shape == (12, 1, spec["canvas"], spec["canvas"])
        assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
        assert a.labels.tolist() == MNIST(tmp_path, "test").labels.tolist()
    with pytest.raises(ValueError, match="variant must be one of R, RTS, TC"):
        DistortedMNIST(tmp_path, "test", variant="P")


# ---- the real files -------------------------------------------------------------------------------------------
def test_real_mnist_counts_and_known_labels():
    need(MNIST_RAW)
    train, val, test = (MNIST(MNIST_RAW, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (55_000, 5_000, 10_000)
    assert test.labels[:5].tolist() == [7, 2, 1, 0, 4]  # the first test digits of MNIST
    trainval = MNIST(MNIST_RAW, "trainval")
    assert trainval.labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert np.bincount(trainval.labels.numpy()).tolist()[1] == 6742  # the published count of ones
    assert abs(trainval.images.float().mean().item() / 255 - 0.1307) < 1e-3


def test_real_cifar10_jpeg_copy(cifar_jpeg):
    test = CIFAR10(cifar_jpeg, "test")
    val = CIFAR10(cifar_jpeg, "val")
    assert len(test) == 10_000 and len(val) == 5_000 and test.classes == CIFAR10_CLASSES
    assert np.bincount(test.labels.numpy()).tolist() == [1000] * 10
    assert test.images.shape == (10_000, 3, 32, 32) and test.images.dtype == torch.uint8


# ---- recipes and shipped weights ------------------------------------------------------------------------------
@pytest.mark.slow
def test_lenet5_recipe_trains_on_real_mnist(tmp_path):
    need(MNIST_RAW)
    proc = run_script("train.py", ROOT / "configs/classification/lenet5_mnist.yaml", "--run-dir", tmp_path / "run",
                      "--no-progress", "train.epochs=1", "train.max_steps_per_epoch=30", "data.num_workers=0",
                      f"data.root={MNIST_RAW}")
    assert proc.returncode == 0, proc.stderr
    val = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
           if '"val"' in line][-1]
    assert val["top1"] > 0.5  # 30 steps already learn digits


@pytest.mark.slow
def test_resnet20_cifar_recipe_trains_on_the_jpeg_copy(tmp_path, cifar_jpeg):
    proc = run_script("train.py", ROOT / "configs/classification/resnet20_cifar10.yaml", "--run-dir",
                      tmp_path / "run", "--no-progress", "train.epochs=1", "train.max_steps_per_epoch=2",
                      "data.num_workers=0", f"data.root={cifar_jpeg}", "data.params.val_size=500")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    start = next(r for r in records if r.get("event") == "start")
    assert start["train_samples"] == 49_500  # train minus the 500 validation images carved from it
    assert [r["top1"] for r in records if r["type"] == "val"] and (tmp_path / "run" / "last.pt").is_file()


@pytest.mark.slow
def test_shipped_lenet5_mnist_reproduces_its_card(tmp_path):
    need(MNIST_RAW)
    weights = REPO_WEIGHTS_DIR / "lenet5.mnist.safetensors"
    card = json.loads(weights.with_suffix(".json").read_text())
    assert card["metrics"]["split"] == "test" and card["metrics"]["top1"] >= 0.99
    assert "anchor" in card and "MNIST" in card["dataset"] and "licence" in card
    proc = run_script("evaluate.py", weights, "--data", MNIST_RAW, "--split", "test", "--report", tmp_path / "r",
                      "--no-progress")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["num_samples"] == 10_000
    assert metrics["scalars"]["top1"] == pytest.approx(card["metrics"]["top1"], abs=1e-4)


# ---- McNemar's test -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("b01, b10", [(0, 0), (3, 3), (10, 2), (1, 30), (120, 85), (0, 7)])
def test_mcnemar_exact_matches_scipy_binomial_test(b01, b10):
    from visionzoo.tasks.classification.significance import mcnemar_exact

    scipy_stats = pytest.importorskip("scipy.stats")
    expected = 1.0 if b01 + b10 == 0 else scipy_stats.binomtest(b01, b01 + b10, 0.5).pvalue
    assert mcnemar_exact(b01, b10) == pytest.approx(expected, rel=1e-9)


def test_discordant_pairs_and_mismatched_sets():
    from visionzoo.tasks.classification.significance import discordant

    a = torch.tensor([True, True, False, False, True])
    b = torch.tensor([True, False, True, True, True])
    assert discordant(a, b) == (1, 2)
    with pytest.raises(ValueError, match="different images"):
        discordant(a, b[:4])


def test_significance_command_pairs_a_classifier_with_itself_and_refuses_unpaired_lists():
    weights = REPO_WEIGHTS_DIR / "lenet5.mnist.safetensors"
    data = need(MNIST_RAW)
    env = {"PYTHONPATH": str(ROOT)}  # run as a file, as `python -m` would from a checkout
    r = run_script("visionzoo/cli/significance.py", "--a", weights, "--b", weights, "--data", data,
                   "--split", "test", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["pooled"] == {"images": 10_000, "a_right_b_wrong": 0, "a_wrong_b_right": 0, "p_value": 1.0}
    r = run_script("visionzoo/cli/significance.py", "--a", weights, weights, "--b", weights, env=env)
    assert r.returncode == 1 and "same number of targets" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet20_cifar.cifar10", "mnist_cnn.stn_mnist_rts"])
def test_shipped_real_data_classifiers_reproduce_their_cards(tmp_path, request, name):
    card = json.loads((REPO_WEIGHTS_DIR / f"{name}.json").read_text())
    assert {"dataset", "splits", "anchor", "licence"} <= set(card) and card["trained"]["curve"]
    data = request.getfixturevalue("cifar_jpeg") if name.startswith("resnet20") else need(MNIST_RAW)
    proc = run_script("evaluate.py", REPO_WEIGHTS_DIR / f"{name}.safetensors", "--data", data, "--split", "test",
                      "--report", tmp_path / "r", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["num_samples"] == 10_000
    # the card was measured on the fp32 checkpoint; the fp16 file may flip a handful of the 10,000 images
    assert metrics["scalars"]["top1"] == pytest.approx(card["metrics"]["top1"], abs=6e-4)
