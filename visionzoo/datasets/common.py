"""Pieces every dataset shares: the skipped-sample marker and safe image opening."""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

# Refuse images above this many pixels unless the config raises it (PIL's own default is ~89 Mpx and
# only warns below twice that); decompression bombs are refused, never decoded.
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000


@dataclass(frozen=True)
class SkippedSample:
    """Returned by a dataset's __getitem__ instead of a sample when a file cannot be read and the
    dataset is configured to skip bad files. The engine's collate drops it and counts it."""

    path: str
    reason: str


class ImageReadError(RuntimeError):
    """A file could not be decoded as an image; the message names the file."""


def open_image(path: str | Path, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, what: str = "image") -> Image.Image:
    """Open and fully decode an image file in its own mode, refusing decompression bombs.

    Raises FileNotFoundError naming a missing file and ImageReadError naming the file for unreadable,
    truncated or oversized ones; `what` ("image", "mask") says which in the messages.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageReadError(
                        f"{path}: {what} is {w}x{h} = {w * h:,} pixels, above the limit of {max_pixels:,} "
                        "(possible decompression bomb; raise data.max_image_pixels if it is genuine)"
                    )
                img.load()
                return img
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(f"{path}: {what} refused as a decompression bomb ({e})") from e
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{what} file not found: {path}") from e
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageReadError(f"{path}: cannot read {what} ({type(e).__name__}: {e})") from e


def open_image_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Open and fully decode an image as RGB, refusing decompression bombs (see :func:`open_image`)."""
    return open_image(path, max_pixels).convert("RGB")


def read_writer_meta(path: Path, what: str) -> dict | None:
    """A dataset writer's metadata JSON (None when absent). An unreadable one is an error telling how to
    start over, rather than a guess that could mix two datasets in one folder."""
    try:
        meta = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        meta = e
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: unreadable {what} metadata ({meta}); pass overwrite=True (--overwrite) "
                         "to rewrite the folder")
    return meta
