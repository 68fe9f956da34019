"""MNIST and Fashion-MNIST from the four official IDX files, and CIFAR-10 from its official binary batches or
an ImageFolder copy, held in memory as uint8 tensors.

Why our own IDX reader: torchvision's MNIST class reads only the uncompressed files of its own download and
checks the md5s of the .gz files it knows, so a re-compressed but byte-identical file is refused. Why our own
CIFAR-10 reader: torchvision reads the pickled python batches, and we never unpickle a file; the binary
version (one label byte and 3,072 pixel bytes per record) needs no unpickling.

Splits: ``train`` and ``test`` are the official ones, except that a validation part is carved out of train:
``val`` is the last ``val_size`` images of a permutation of the training set fixed by ``split_seed``, and
``train`` is the rest (``trainval`` is all of it). Checkpoints are chosen on ``val``, never on ``test``.
"""
from __future__ import annotations

import gzip
import math
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image
from torchvision.datasets import MNIST as TvMNIST
from torchvision.datasets import FashionMNIST as TvFashion
from torchvision.datasets.utils import download_and_extract_archive, download_url

from visionzoo.datasets.common import ImageReadError, open_image
from visionzoo.datasets.folder import ImageFolderDataset

SPLITS = ("train", "val", "trainval", "test")


@dataclass
class DigitsParams:
    """`data.params` of MNIST, Fashion-MNIST and CIFAR-10 (val is carved out of the official train files)."""

    download: Optional[bool] = None  # fetch missing official files; None: data.download
    val_size: int = 5000  # training images held out as val
    split_seed: int = 0  # of the permutation that picks them


@dataclass
class DistortedMNISTParams(DigitsParams):
    """`data.params` of MNIST distorted as in the spatial-transformer paper."""

    variant: str = "RTS"  # R, RTS or TC
    seed: int = 0  # of the fixed distortions of val and test
    fresh: Optional[bool] = None  # new distortions at every read; None: for train and trainval only
IDX_DTYPES = {0x08: np.uint8}
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_BINARY = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
# The official binary archive (https://www.cs.toronto.edu/~kriz/cifar.html) and its published md5.
CIFAR10_BINARY_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_BINARY_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"


def data_cache_dir() -> Path:
    """Where archives are unpacked: ``$VISIONZOO_HOME/data`` (default ``~/.cache/visionzoo/data``)."""
    home = os.environ.get("VISIONZOO_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "visionzoo")
    return Path(home) / "data"


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (LeCun's format: magic 0x0000TTDD, DD big-endian int32 sizes, then the data), gz or not."""
    path = Path(path)
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise ImageReadError(f"{path}: cannot read IDX file ({type(e).__name__}: {e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ImageReadError(f"{path}: not an IDX file (expected a magic number 0x0000TTDD)")
    dtype, ndim = raw[2], raw[3]
    if dtype not in IDX_DTYPES or not 1 <= ndim <= 4:
        raise ImageReadError(f"{path}: IDX type 0x{dtype:02x} with {ndim} dimensions is not supported "
                             "(expected unsigned bytes, 1 to 4 dimensions)")
    header = 4 + 4 * ndim
    shape = tuple(int(v) for v in np.frombuffer(raw, ">i4", count=ndim, offset=4)) if len(raw) >= header else ()
    expected = header + int(np.prod(shape)) if shape else None
    if expected is None or len(raw) != expected:
        raise ImageReadError(f"{path}: IDX file is {len(raw):,} bytes, expected {expected or header:,} "
                             f"for shape {shape} (truncated or corrupt)")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _find_idx(root: Path, name: str) -> Path | None:
    for folder in (root, root / "raw", root / "MNIST" / "raw", root / "FashionMNIST" / "raw"):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _carve(n: int, split: str, val_size: int, split_seed: int) -> np.ndarray:
    """Indices of `split` among n training records: val = the last val_size of a seeded permutation."""
    if not 0 < val_size < n:
        raise ValueError(f"data.params.val_size must be between 1 and {n - 1}, got {val_size}")
    order = np.random.default_rng(split_seed).permutation(n)
    return np.sort(order[n - val_size:] if split == "val" else order[: n - val_size])


class InMemoryClassification(torch.utils.data.Dataset):
    """uint8 images (N, C, H, W) and labels in memory; items are (transform(image tensor), label)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: list[str], transform: Callable | None,
                 description: str):
        self.images, self.labels, self.classes = images, labels, list(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.transform = transform
        self.description = description
        self.targets = labels.tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

    def load_image(self, index: int) -> Image.Image:
        """The untransformed image, for reports."""
        array = self.images[index].permute(1, 2, 0).numpy()
        return Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description}, {len(self)} images)"


def _select(images: np.ndarray, labels: np.ndarray, split: str, val_size: int, split_seed: int):
    if split in ("train", "val"):
        keep = _carve(len(labels), split, val_size, split_seed)
        images, labels = images[keep], labels[keep]
    return torch.from_numpy(np.array(images, copy=True)), torch.from_numpy(labels.astype(np.int64))


def _check_split(split: str, what: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"{what}: unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return "test" if split == "test" else "train"


class MNIST(InMemoryClassification):
    """MNIST (``fashion=False``) or Fashion-MNIST from the four IDX files (gz or not) in ``root`` (or its
    ``raw/`` sub-folder, torchvision's layout). ``download=True`` fetches missing files from torchvision's
    mirrors, checked against their md5s."""

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None, *,
                 fashion: bool = False, download: bool = False, val_size: int = 5000, split_seed: int = 0):
        what = "fashion_mnist" if fashion else "mnist"
        official = _check_split(split, what)
        root = Path(root).expanduser()
        names = MNIST_FILES[official]
        paths = [_find_idx(root, n) for n in names]
        if any(p is None for p in paths) and download:
            download_mnist(root, fashion=fashion)
            paths = [_find_idx(root, n) for n in names]
        missing = [n for n, p in zip(names, paths) if p is None]
        if missing:
            all_names = ", ".join(f"{n}[.gz]" for pair in MNIST_FILES.values() for n in pair)
            raise FileNotFoundError(f"{what}: {', '.join(missing)}[.gz] not found in {root} (nor in its raw/ "
                                    f"folder); expected the four IDX files {all_names}, or set data.download: true")
        images, labels = read_idx(paths[0]), read_idx(paths[1])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ImageReadError(f"{paths[0]} and {paths[1]}: expected N x H x W images and N labels, got shapes "
                                 f"{images.shape} and {labels.shape}")
        if labels.max(initial=0) > 9:
            raise ImageReadError(f"{paths[1]}: labels must be 0-9, found {int(labels.max())}")
        images_t, labels_t = _select(images[:, None], labels, split, val_size, split_seed)
        super().__init__(images_t, labels_t, FASHION_MNIST_CLASSES if fashion else MNIST_CLASSES, transform,
                         f"{what} {split} from {root}")


def download_mnist(root: Path, fashion: bool = False) -> None:
    """The official files from torchvision's mirror list, each checked against torchvision's md5."""
    source = TvFashion if fashion else TvMNIST
    root.mkdir(parents=True, exist_ok=True)
    for filename, md5 in source.resources:
        if _find_idx(root, filename.removesuffix(".gz")) is not None:
            continue
        errors = []
        for mirror in source.mirrors:
            try:
                download_url(f"{mirror}{filename}", root=str(root), filename=filename, md5=md5)
                break
            except Exception as e:  # noqa: BLE001 (network errors come in many types; try the next mirror)
                errors.append(f"{mirror}: {e}")
        else:
            raise FileNotFoundError(f"could not download {filename} into {root}: " + "; ".join(errors))


def _read_cifar_binary(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    records = []
    for path in paths:
        raw = path.read_bytes()
        if len(raw) == 0 or len(raw) % 3073:
            raise ImageReadError(f"{path}: {len(raw):,} bytes is not a whole number of 3,073-byte CIFAR-10 records "
                                 "(1 label byte + 3,072 pixel bytes)")
        records.append(np.frombuffer(raw, np.uint8).reshape(-1, 3073))
    data = np.concatenate(records)
    labels = data[:, 0].astype(np.int64)
    if labels.max(initial=0) > 9:
        raise ImageReadError(f"{paths[0].parent}: CIFAR-10 labels must be 0-9, found {int(labels.max())}")
    return data[:, 1:].reshape(-1, 3, 32, 32), labels


def _read_cifar_folder(folder: Path, max_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    listing = ImageFolderDataset(folder, classes=CIFAR10_CLASSES)
    images = np.empty((len(listing.samples), 32, 32, 3), np.uint8)
    for i, (path, _) in enumerate(listing.samples):
        image = open_image(path, max_pixels).convert("RGB")
        if image.size != (32, 32):
            raise ImageReadError(f"{path}: CIFAR-10 images are 32x32, this one is {image.size[0]}x{image.size[1]}")
        images[i] = np.asarray(image)
    return images.transpose(0, 3, 1, 2), np.asarray(listing.targets, np.int64)


class CIFAR10(InMemoryClassification):
    """CIFAR-10 from the official binary batches (``data_batch_1..5.bin``, ``test_batch.bin`` in ``root`` or
    its ``cifar-10-batches-bin/`` folder) or from an ImageFolder copy (``root/{train,test}/<class>/*``, e.g. the
    JPEG re-encoding unpacked by ``python -m visionzoo.datasets.unpack``). ``download=True`` fetches the
    official binary archive (md5-checked) into root."""

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None, *,
                 download: bool = False, val_size: int = 5000, split_seed: int = 0,
                 max_image_pixels: int = 64_000_000):
        official = _check_split(split, "cifar10")
        root = Path(root).expanduser()
        binary = self._binary_folder(root)
        if binary is None and not (root / official).is_dir() and download:
            download_and_extract_archive(CIFAR10_BINARY_URL, download_root=str(root), md5=CIFAR10_BINARY_MD5)
            binary = self._binary_folder(root)
        if binary is not None:
            images, labels = _read_cifar_binary([binary / n for n in CIFAR10_BINARY[official]])
            source = f"binary batches in {binary}"
        elif (root / official).is_dir():
            images, labels = _read_cifar_folder(root / official, max_image_pixels)
            source = f"image folder {root / official}"
        else:
            raise FileNotFoundError(
                f"cifar10: neither the binary batches ({', '.join(CIFAR10_BINARY['train'] + CIFAR10_BINARY['test'])}) "
                f"nor an image folder {root / official}/<class>/ found in {root}; unpack an archive with "
                "`python -m visionzoo.datasets.unpack ARCHIVE`, or set data.download: true")
        images_t, labels_t = _select(images, labels, split, val_size, split_seed)
        super().__init__(images_t, labels_t, CIFAR10_CLASSES, transform, f"cifar10 {split} from {source}")

    @staticmethod
    def _binary_folder(root: Path) -> Path | None:
        for folder in (root, root / "cifar-10-batches-bin"):
            names = CIFAR10_BINARY["train"] + CIFAR10_BINARY["test"]
            if all((folder / n).is_file() for n in names):
                return folder
        return None


def unpack_archive(archive: str | os.PathLike, dest: str | os.PathLike | None = None) -> Path:
    """Unpack a .tar/.tar.gz into ``dest`` (default: the data cache folder named after the archive), once:
    a finished unpack leaves a marker file, so a second call returns at once. Members that would land outside
    ``dest`` (absolute paths, ``..``, links pointing out) are refused by tarfile's "data" filter."""
    archive = Path(archive).expanduser()
    if not archive.is_file():
        raise FileNotFoundError(f"archive not found: {archive}")
    stem = archive.name
    for suffix in (".tar.gz", ".tgz", ".tar"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    dest = Path(dest).expanduser() if dest else data_cache_dir() / stem
    marker = dest / ".unpacked"
    if marker.is_file() and marker.read_text().strip() == str(archive.stat().st_size):
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ImageReadError(f"{archive}: cannot unpack ({type(e).__name__}: {e})") from e
    marker.write_text(str(archive.stat().st_size))
    return dest


# ---- distorted MNIST of the spatial-transformer paper --------------------------------------------------------
# Jaderberg et al. 2015, §4.1: R = rotation in +-90 degrees (28x28); RTS = rotation in +-45 degrees, scale in
# 0.7-1.2 and placement at a random spot of a 42x42 canvas; TC = translated cluttered (60x60 canvas with 8x8
# clutter patches cut from other random digits).
DISTORTIONS = {
    "R": {"canvas": 28, "max_rotation": 90.0, "scale": (1.0, 1.0), "clutter": 0},
    "RTS": {"canvas": 42, "max_rotation": 45.0, "scale": (0.7, 1.2), "clutter": 0},
    "TC": {"canvas": 60, "max_rotation": 0.0, "scale": (1.0, 1.0), "clutter": 6},
}


def distortion_params(variant: str, rng: np.random.Generator, clutter_pool: int) -> dict:
    """The random numbers of one distorted digit: rotation (degrees), scale, shift (pixels, x and y) so that the
    scaled 28x28 frame stays inside the canvas (the paper's "random location"), and for TC the clutter patches
    (source digit, 8x8 window in it, place on the canvas)."""
    spec = DISTORTIONS[variant]
    side = spec["canvas"]
    angle = float(rng.uniform(-spec["max_rotation"], spec["max_rotation"]))
    scale = float(rng.uniform(*spec["scale"]))
    room = max(0.0, (side - 28 * scale) / 2)
    shift = rng.uniform(-room, room, size=2)
    clutter = [(int(rng.integers(clutter_pool)), *(int(v) for v in rng.integers(0, 28 - 8, size=2)),
                *(int(v) for v in rng.integers(0, side - 8, size=2))) for _ in range(spec["clutter"])]
    return {"angle": angle, "scale": scale, "shift": shift, "clutter": clutter}


def distort_digits(digits: torch.Tensor, variant: str, params: list[dict]) -> torch.Tensor:
    """(N, 1, 28, 28) uint8 digits -> (N, 1, S, S) uint8 distorted canvases, one params dict per digit (see
    distortion_params): the digit is centred on the canvas, rotated about the centre, scaled and shifted, with
    bilinear sampling (OpenCV's warpAffine: about 10 us a digit, so training can draw fresh distortions on the
    fly); TC patches are pasted afterwards, untransformed."""
    import cv2  # local: slow to import, and only the distorted variants need it

    side = DISTORTIONS[variant]["canvas"]
    off = (side - 28) // 2
    out = np.zeros((len(digits), 1, side, side), dtype=np.uint8)
    canvas = np.zeros((side, side), dtype=np.uint8)
    centre = np.full(2, (side - 1) / 2)
    for i, (digit, p) in enumerate(zip(digits.numpy(), params)):
        canvas[off:off + 28, off:off + 28] = digit[0]
        angle = math.radians(p["angle"])
        # the map from an output pixel to the input position it samples: p_in = R(-angle) (p_out - c - t) / s + c
        a = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]]) / p["scale"]
        matrix = np.hstack([a, (centre - a @ (centre + np.asarray(p["shift"], dtype=np.float64)))[:, None]])
        out[i, 0] = cv2.warpAffine(canvas, matrix, (side, side), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return torch.from_numpy(out)


def paste_clutter(canvases: torch.Tensor, params: list[dict], pool: torch.Tensor) -> torch.Tensor:
    """TC: 8x8 windows of other digits pasted (pixel-wise maximum) at random places of each canvas."""
    for canvas, p in zip(canvases, params):
        for source, sy, sx, py, px in p["clutter"]:
            window = pool[source, :, sy:sy + 8, sx:sx + 8]
            canvas[:, py:py + 8, px:px + 8] = torch.maximum(canvas[:, py:py + 8, px:px + 8], window)
    return canvases


class DistortedMNIST(InMemoryClassification):
    """MNIST with the spatial-transformer paper's distortions (``variant`` R, RTS or TC).

    Evaluation splits (val, test) are one fixed data set, deterministic by ``seed``: image i is distorted with a
    generator seeded from (seed, split, i). Training (``fresh=True``, the default for train and trainval) draws a
    new distortion of each digit every time it is read, from torch's default generator, which the trainer seeds
    per (run seed, epoch, sample): an endless stream of distortions as in the paper, the same for every worker
    count and on a resume. ``fresh=False`` fixes the training set too."""

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None, *,
                 variant: str = "RTS", seed: int = 0, fresh: bool | None = None, download: bool = False,
                 val_size: int = 5000, split_seed: int = 0):
        if variant not in DISTORTIONS:
            raise ValueError(f"mnist_distorted: variant must be one of {', '.join(DISTORTIONS)}, got {variant!r}")
        base = MNIST(root, split, None, download=download, val_size=val_size, split_seed=split_seed)
        self.variant = variant
        self.fresh = split in ("train", "trainval") if fresh is None else bool(fresh)
        self.digits = base.images
        images = base.images
        if not self.fresh:
            split_code = SPLITS.index(split)
            params = [distortion_params(variant, np.random.default_rng([seed, split_code, i]), len(base))
                      for i in range(len(base))]
            images = self._distort(base.images, params)
        super().__init__(images, base.labels, base.classes, transform,
                         f"mnist_distorted {variant} ({'fresh each read' if self.fresh else f'seed {seed}'}) "
                         f"{split} from {root}")

    def _distort(self, digits: torch.Tensor, params: list[dict]) -> torch.Tensor:
        images = distort_digits(digits, self.variant, params)
        if DISTORTIONS[self.variant]["clutter"]:
            images = paste_clutter(images, params, self.digits)
        return images

    def __getitem__(self, index: int):
        if not self.fresh:
            return super().__getitem__(index)
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        image = self._distort(self.digits[index:index + 1], [distortion_params(self.variant, rng, len(self.digits))])[0]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

    def load_image(self, index: int) -> Image.Image:
        if not self.fresh:
            return super().load_image(index)
        rng = np.random.default_rng(index)
        image = self._distort(self.digits[index:index + 1], [distortion_params(self.variant, rng, len(self.digits))])
        return Image.fromarray(image[0, 0].numpy())
