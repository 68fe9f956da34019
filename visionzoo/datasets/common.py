"""Pieces every dataset shares: the skipped-sample marker, safe image opening, and the one loader that
turns any image a user or a reader hands over into RGB pixels (the predictors, selective search and the
trackers all go through it, so they accept the same forms and refuse the rest with the same messages)."""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
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


def image_forms(paths: bool = True, floats: bool = True) -> str:
    """The image forms a caller of :func:`load_rgb` with these options accepts, for its error messages."""
    tensor = ("a tensor (3, H, W) [or (1, H, W)] of uint8 or of floats in [0, 1]" if floats
              else "a uint8 tensor (3, H, W) [or (1, H, W)]")
    return ", ".join((["a path"] if paths else []) + ["a PIL image", "a uint8 array (H, W) or (H, W, 3) "
                                                     "[or (3, H, W)]"]) + ", or " + tensor


def _refuse(what: str, forms: str, got: str, fix: str = "") -> ValueError:
    return ValueError(f"{what}: expected {forms}; got {got}" + (f". {fix}" if fix else ""))


def _channels_last(shape: tuple, prefer_channels_first: bool) -> bool | None:
    """Where the channel axis of a 3-D image is: True for (H, W, C), False for (C, H, W), None when neither
    end holds 1, 3 or 4 channels. When both could, the convention of the type decides (arrays HWC,
    tensors CHW)."""
    first, last = shape[0] in (1, 3, 4), shape[2] in (1, 3, 4)
    if first and last:
        return not prefer_channels_first
    return True if last else (False if first else None)


def _to_uint8_hwc(values: np.ndarray, got: str, channels_first: bool, what: str, forms: str,
                  floats: bool) -> np.ndarray:
    """A 2-D or 3-D array (HWC, or CHW when `channels_first`) of uint8 (or floats in [0, 1] when `floats`)
    as C-contiguous uint8 (H, W, 3); no copy for an array that already is one."""
    if values.ndim == 4:
        raise _refuse(what, forms, got, "That is a batch: pass a list of images (list(batch)) instead")
    if values.ndim not in (2, 3):
        raise _refuse(what, forms, got)
    if values.ndim == 3 and channels_first:
        values = np.moveaxis(values, 0, -1)
    if values.ndim == 3 and values.shape[2] not in (1, 3):
        fix = ("4 channels (RGBA or CMYK) are not taken as is: drop the alpha channel (image[..., :3]) or convert "
               "with PIL's image.convert('RGB')") if values.shape[2] == 4 else ""
        raise _refuse(what, forms, got, fix)
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise _refuse(what, forms, f"an empty image ({got})")
    convert = "Convert to uint8 (0..255) or to floats in [0, 1]" if floats else "Convert to uint8 (0..255)"
    if values.dtype == np.uint8:
        out = values
    elif values.dtype.kind == "f" and floats:
        if not np.isfinite(values).all():
            raise _refuse(what, forms, f"{got} holding NaN or infinite values")
        lo, hi = float(values.min()), float(values.max())
        if lo < 0 or hi > 1:
            raise _refuse(what, forms, f"{got} with values {lo:.3g}..{hi:.3g}",
                          "Float images must hold values in [0, 1]; pass uint8 for 0..255")
        out = np.round(values * 255).astype(np.uint8)
    else:
        raise _refuse(what, forms, got, convert)
    if out.ndim == 2:
        out = out[:, :, None]
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return np.ascontiguousarray(out)


def load_rgb(image, what: str = "image", *, paths: bool = True, floats: bool = True,
             max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """`image` as C-contiguous uint8 (H, W, 3) RGB pixels (no copy for an array that already is one).

    Takes a path (when `paths`; opened with :func:`open_image_rgb`, refused above `max_pixels`), a PIL
    image (any mode), a uint8 array (H, W) or (H, W, 3) (a (3, H, W) array is transposed), or a tensor
    (3, H, W) or (1, H, W) (an (H, W, 3) tensor is transposed). Arrays and tensors may hold floats in
    [0, 1] when `floats`. Anything else (4 channels, an empty image, a batch, another dtype) is a
    one-line ValueError, starting with `what`, that names the forms expected and the shape and dtype
    given; an object of another type is a TypeError."""
    forms = image_forms(paths, floats)
    if paths and isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if path.is_dir():
            raise ValueError(f"{path} is a folder, not an image file: pass its files, e.g. "
                             f"sorted(Path({str(path)!r}).glob('*.jpg'))")
        pil = open_image_rgb(path, max_pixels)
        if pil.width == 0 or pil.height == 0:
            raise _refuse(what, forms, f"an empty image ({path})")
        return np.asarray(pil, dtype=np.uint8)
    if isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise _refuse(what, forms, f"an empty PIL image of size {image.size}")
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        shape = tuple(t.shape)
        dtype_text = str(t.dtype).replace("torch.", "")
        if not (t.dtype == torch.uint8 or (floats and t.is_floating_point())):
            raise _refuse(what, forms, f"a tensor of dtype {dtype_text} and shape {shape}",
                          "Convert to uint8 (0..255) or to floats in [0, 1]" if floats else "Convert to uint8 (0..255)")
        channels_first = t.ndim == 3 and not _channels_last(shape, prefer_channels_first=True)
        values = t.numpy() if t.dtype in (torch.uint8, torch.float32, torch.float64) else t.float().numpy()
        return _to_uint8_hwc(values, f"a tensor of dtype {dtype_text} and shape {shape}", channels_first, what,
                             forms, floats)
    if isinstance(image, np.ndarray):
        channels_first = image.ndim == 3 and _channels_last(image.shape, prefer_channels_first=False) is False
        return _to_uint8_hwc(image, f"an array of dtype {image.dtype} and shape {image.shape}", channels_first,
                             what, forms, floats)
    raise TypeError(f"{what}: expected {forms}; got {type(image).__name__}")


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
