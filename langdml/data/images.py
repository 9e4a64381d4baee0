"""The one image opener and the one image-file rule of langdml.

Every image a dataset, ``embed``/``index --images DIR``, ``search --image``, the run report or a
CLIP tower sees goes through :func:`open_rgb` (a file) or :func:`to_rgb` (an image already decoded,
e.g. a Hugging Face row), and every folder of images is listed by :func:`walk_images`.

Decoding (PIL mode → 8-bit RGB):

- 16-bit grayscale (``I;16*``) is scaled by 255/65535, never clipped (``convert("RGB")`` would clip
  it to white); ``I`` (32-bit integers) is read as 16-bit when its values lie in [0, 65535] (the
  mode PIL gives some 16-bit files), otherwise stretched from its minimum to its maximum; ``F``
  (32-bit float) is read as [0, 1] when its values lie there, otherwise stretched the same way
  (NaN becomes 0).
- transparency (an alpha channel, premultiplied ones ``La``/``RGBa`` too, or a palette's or
  grayscale image's transparent colour) is composited onto :data:`BACKGROUND`, white, the
  background of the packaged emoji renders; ``RGBX``'s fourth band is padding, not alpha.
- ``CMYK``, ``YCbCr``, ``HSV``, ``LAB``, palette and 1-bit images are converted by PIL's own
  colour conversions (``LAB`` through PIL's CIELab profile).
- animations (GIF, APNG, WebP) give their first frame.
- an image over PIL's decompression-bomb warning size is decoded with one ``langdml:`` warning line
  naming the file; one over twice that size (PIL's error limit) is one DataError line.

Image files: a name ending in :data:`IMAGE_EXTENSIONS` (any case) that is not hidden (a leading
dot, which also covers macOS AppleDouble ``._x.png`` files) and is a regular file (or a link to
one: a FIFO, socket or device named ``x.png`` is skipped, so reading never blocks). Folders that are
hidden (``.git``, ``.Trash-1000``), ``__MACOSX`` or ``$RECYCLE.BIN`` are not walked.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from langdml.errors import DataError

IMAGE_EXTENSIONS: tuple[str, ...] = tuple(".jpg .jpeg .png .bmp .webp .gif .tif .tiff".split())
BACKGROUND: tuple[int, int, int] = (255, 255, 255)
SKIPPED_FOLDERS: frozenset[str] = frozenset(
    {"__MACOSX", "$RECYCLE.BIN", "System Volume Information"}
)

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


def is_image_name(name: str) -> bool:
    """Whether a file name is one the image rule reads (extension, not hidden)."""
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def is_skipped_folder(name: str) -> bool:
    """Hidden folders (``.Trash-1000``, ``.git``) and OS litter folders are never walked."""
    return name.startswith(".") or name in SKIPPED_FOLDERS


def is_regular_file(path: str | os.PathLike) -> bool:
    """A regular file, or a link to one (never a FIFO, socket or device)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _stretch(arr: np.ndarray) -> np.ndarray:
    arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(arr.min(initial=0.0)), float(arr.max(initial=0.0))
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return np.round((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _gray_to_l(img: Image.Image) -> Image.Image:
    """A 16/32-bit grayscale image as 8-bit ``L``, scaled (see the module docstring)."""
    arr = np.asarray(img)
    if img.mode.startswith("I;16"):
        out = np.round(arr.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    elif img.mode == "I" and arr.size and arr.min() >= 0 and arr.max() <= 65535:
        out = np.round(arr.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    elif img.mode == "F" and arr.size and np.nanmin(arr) >= 0.0 and np.nanmax(arr) <= 1.0:
        out = np.round(np.nan_to_num(arr.astype(np.float64)) * 255.0).astype(np.uint8)
    else:
        out = _stretch(arr)
    return Image.fromarray(out, mode="L")


def _composite(img: Image.Image) -> Image.Image:
    if img.mode == "La":  # premultiplied: PIL converts it to LA only
        img = img.convert("LA")
    rgba = img.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
    return Image.alpha_composite(canvas, rgba).convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any decoded PIL image → 8-bit RGB by the rules of the module docstring (a new image)."""
    mode = img.mode
    if mode == "RGB":
        return img.copy() if "transparency" not in img.info else _composite(img)
    if mode.startswith("I") or mode == "F":
        return _gray_to_l(img).convert("RGB")
    if mode in _ALPHA_MODES or (mode in ("P", "L", "1") and "transparency" in img.info):
        return _composite(img)
    if mode == "LAB":
        from PIL import ImageCms

        lab, srgb = ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB")
        return ImageCms.profileToProfile(img, lab, srgb, outputMode="RGB")
    return img.convert("RGB")


def _bomb_line(path: Any, img: Image.Image) -> str:
    w, h = img.size
    return (
        f"image {path} has {w}x{h} = {w * h} pixels, more than PIL's decompression-bomb warning "
        f"size ({Image.MAX_IMAGE_PIXELS}); decoding it anyway (check the file, or resize it)"
    )


def open_rgb(item: Any) -> Image.Image:
    """A file path (or an already decoded PIL image) → 8-bit RGB PIL image; a missing, irregular
    or unreadable file is one DataError line naming it."""
    if isinstance(item, Image.Image):
        return to_rgb(item)
    path = os.fspath(item)
    if not is_regular_file(path):
        what = "does not exist" if not os.path.lexists(path) else "is not a regular file"
        raise DataError(f"image {path} {what}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if getattr(img, "n_frames", 1) > 1:
                    img.seek(0)
                img.load()
                out = to_rgb(img)
    except Image.DecompressionBombError:
        raise DataError(
            f"image {path} is larger than PIL's decompression-bomb limit "
            f"({2 * Image.MAX_IMAGE_PIXELS} pixels); resize it or remove it from the dataset"
        ) from None
    except UnidentifiedImageError:
        raise DataError(
            f"cannot read image {path}: it is not an image PIL can read (unknown or damaged)"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:  # SyntaxError: some broken headers
        raise DataError(f"cannot read image {path}: {exc}") from None
    for w in caught:
        if issubclass(w.category, Image.DecompressionBombWarning):
            warnings.warn(_bomb_line(path, out), stacklevel=1)  # a langdml line in the CLI
        else:
            warnings.warn(f"image {path}: {w.message}", stacklevel=1)
    return out


def walk_images(
    folder: str | os.PathLike,
    on_dir: Callable[[str, list[str]], bool] | None = None,
) -> list[str]:
    """Image files below ``folder`` (paths joined onto ``folder``, unsorted: callers sort), by the
    image-file rule.

    Links to folders are followed; ``on_dir(dirpath, dirnames)`` may prune or check ``dirnames``
    in place before they are walked (the dataset loaders refuse links leaving their root and walk
    each real folder once there) and returns whether to take ``dirpath``'s own files.
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not is_skipped_folder(d)]
        if on_dir is not None and not on_dir(dirpath, dirnames):
            continue
        for f in filenames:
            full = os.path.join(dirpath, f)
            if is_image_name(f) and is_regular_file(full):
                found.append(full)
    return found
