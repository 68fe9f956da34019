"""ImageFolder datasets: ``root/<class>/**/<image files>``, decoded safely with clear errors."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, Union

import torch
from PIL import Image

from visionzoo.datasets.common import DEFAULT_MAX_IMAGE_PIXELS, ImageReadError, SkippedSample, open_image_rgb

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
ON_CORRUPT = ("error", "skip")


@dataclass
class ImageFolderParams:
    """`data.params` of an ImageFolder data set (the reader's own options; the rest come from `data`)."""

    extensions: Union[str, list[str]] = field(default_factory=lambda: list(IMAGE_EXTENSIONS))  # file suffixes read
    allow_external_links: bool = False  # follow symbolic links that leave the root


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(os.path.join(root, ""))


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _dir_key(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


class ImageFolderDataset(torch.utils.data.Dataset):
    """Images in ``root/<class name>/`` (sub-folders of a class folder included), labelled by class.

    Args:
        root: the split folder, e.g. ``data/shapes/train``.
        transform: applied to the decoded RGB PIL image.
        on_corrupt: "error" raises ImageReadError naming the file when an image cannot be decoded (or is
            above ``max_image_pixels``); "skip" returns a SkippedSample(path, reason) in its place, which
            the engine's collate drops and counts.
        max_image_pixels: images with more pixels are refused, never decoded (decompression bombs).
        classes: the class order to use (e.g. the training set's, for val/test). Every sub-folder must be
            one of them; listed classes without a folder simply have no samples. None: the sorted
            sub-folder names.
        extensions: file suffixes (case-insensitive) read as images; other files, and hidden files and
            folders, are ignored.
        allow_external_links: follow symbolic links that lead outside ``root`` (refused by default, with an
            error naming the link, so that a stray link cannot pull in unrelated files). Links inside ``root``
            are followed; a folder reached twice in one class (a link loop such as ``circle/up -> ..``, or
            two links to one folder) is read once, and a link back to ``root`` is not followed. Files named
            like images that are not regular files (FIFOs, devices, sockets) are refused, never opened.

    Attributes: ``root`` (Path), ``classes``, ``class_to_idx``, ``samples`` (list of (path str, label)),
    ``targets`` (labels). Files are sorted, so the order is deterministic.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        transform: Callable | None = None,
        on_corrupt: str = "error",
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        classes: Sequence[str] | None = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        allow_external_links: bool = False,
    ):
        if on_corrupt not in ON_CORRUPT:
            raise ValueError(f"on_corrupt must be one of {', '.join(map(repr, ON_CORRUPT))}, got {on_corrupt!r}")
        if isinstance(max_image_pixels, bool) or not float(max_image_pixels) > 0:
            raise ValueError(f"max_image_pixels must be a positive number, got {max_image_pixels!r}")
        if isinstance(extensions, str):
            extensions = (extensions,)
        self.extensions = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
        if not self.extensions:
            raise ValueError("extensions must name at least one file suffix")
        self.root = Path(root)
        self.transform = transform
        self.on_corrupt = on_corrupt
        self.max_image_pixels = int(max_image_pixels)
        self.allow_external_links = bool(allow_external_links)

        if not self.root.exists():
            raise FileNotFoundError(f"image folder not found: {self.root}")
        if not self.root.is_dir():
            raise NotADirectoryError(f"not a folder: {self.root}")
        folders = sorted(e.name for e in os.scandir(self.root) if e.is_dir() and _visible(e.name))
        if not folders:
            raise ValueError(f"{self.root}: no class sub-folders found (expected {self.root}/<class>/<images>)")

        if classes is None:
            self.classes = folders
        else:
            self.classes = [str(c) for c in classes]
            dupes = sorted({c for c in self.classes if self.classes.count(c) > 1})
            if dupes:
                raise ValueError(f"classes lists {', '.join(map(repr, dupes))} more than once")
            unknown = [f for f in folders if f not in self.classes]
            if unknown:
                raise ValueError(f"{self.root}: class folder(s) {', '.join(str(self.root / f) for f in unknown)} "
                                 f"not among the expected classes ({', '.join(self.classes)})")
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

        self.samples: list[tuple[str, int]] = []
        for name in folders:
            files = self._scan(self.root / name)
            if not files:
                raise ValueError(f"{self.root / name}: class folder has no image files "
                                 f"(looked for {', '.join(self.extensions)})")
            label = self.class_to_idx[name]
            self.samples.extend((f, label) for f in files)
        self.targets = [label for _, label in self.samples]

    def _scan(self, folder: Path) -> list[str]:
        """Image files under ``folder`` (recursively, following links inside the root), hidden entries
        skipped, sorted. Each folder is read once (link loops end), links out of the root and special files
        named like images are refused."""
        root = os.path.realpath(self.root)
        visited = {_dir_key(root)}  # a link back to the root would relabel every class as this one
        found: list[str] = []

        def check_link(path: str) -> None:
            target = os.path.realpath(path)
            if not self.allow_external_links and not _inside(target, root):
                raise ValueError(f"{path}: symbolic link to {target}, outside the dataset folder {self.root}; "
                                 "set data.params.allow_external_links: true (allow_external_links=True) to "
                                 "follow links that leave it")

        def walk(d: str) -> None:
            key = _dir_key(d)
            if key in visited:
                return
            visited.add(key)
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
            for e in entries:
                if not _visible(e.name):
                    continue
                wanted = os.path.splitext(e.name)[1].lower() in self.extensions
                if e.is_symlink():
                    check_link(e.path)
                    try:
                        mode = os.stat(e.path).st_mode
                    except FileNotFoundError:  # a dangling link: reported when the sample is read
                        if wanted:
                            found.append(e.path)
                        continue
                    except OSError as err:
                        raise ValueError(f"{e.path}: unreadable symbolic link ({err.strerror})") from None
                elif e.is_dir(follow_symlinks=False):
                    walk(e.path)
                    continue
                elif not wanted:
                    continue
                elif e.is_file(follow_symlinks=False):  # from the directory listing: no stat per image
                    found.append(e.path)
                    continue
                else:
                    mode = e.stat(follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode):
                    walk(e.path)
                elif wanted:
                    if not stat.S_ISREG(mode):
                        raise ValueError(f"{e.path}: {_file_kind(mode)}, not an image file; refused (remove it "
                                         "or rename it)")
                    found.append(e.path)

        if os.path.islink(folder):
            check_link(str(folder))
        walk(str(folder))
        return sorted(found)

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, index: int) -> Image.Image:
        """The decoded RGB image of sample ``index``, without transform (raises ImageReadError if unreadable)."""
        return open_image_rgb(self.samples[index][0], self.max_image_pixels)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        try:
            image = open_image_rgb(path, self.max_image_pixels)
        except (ImageReadError, FileNotFoundError) as e:
            if self.on_corrupt == "skip":
                return SkippedSample(path, str(e))
            raise
        return (self.transform(image) if self.transform is not None else image), label

    def __repr__(self) -> str:
        return (f"ImageFolderDataset(root={str(self.root)!r}, samples={len(self.samples)}, "
                f"classes={len(self.classes)}, on_corrupt={self.on_corrupt!r})")
