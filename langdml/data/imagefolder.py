"""One folder per class."""

from __future__ import annotations

import os
from pathlib import Path

from langdml.data._files import (
    class_dirs,
    existing_path,
    folder_dataset,
    require_dir,
)
from langdml.data.images import is_image_name
from langdml.data.records import ImageDataset
from langdml.errors import DataError


def load_imagefolder(
    path: str | os.PathLike | None, cache_dir: str | Path | None = None
) -> ImageDataset:
    """One folder per class: ``PATH/<class name>/<image>``.

    The class name is the folder name, unchanged (the text stage's default cleaner later drops a
    ``NNN.`` prefix and underscores). Classes are ordered by :func:`natural_key` of the folder
    name (digit runs compare as numbers, so ``2.x`` precedes ``10.x``; zero-padded names sort as
    usual), which is the class order the class-disjoint split uses. Images are files with
    extensions of :data:`~langdml.data.images.IMAGE_EXTENSIONS` anywhere below the class folder,
    nested folders included (as torchvision's ImageFolder does), by the one image-file rule of
    :mod:`langdml.data.images` (hidden files, AppleDouble ``._*`` files, trash folders and
    non-regular files are skipped); files directly in ``PATH`` are ignored. Class folders
    without images are skipped.
    """
    kind = "imagefolder"
    root = require_dir(existing_path(path, kind), kind)
    folders = class_dirs(root)
    if not folders:
        loose = [p.name for p in root.iterdir() if is_image_name(p.name)]
        detail = f" ({len(loose)} images lie directly in it)" if loose else ""
        raise DataError(
            f"{kind}: {root} has no class folders{detail}; expected PATH/<class name>/<image>"
        )
    return folder_dataset(
        f"imagefolder:{root.name}",
        kind,
        root,
        folders,
        lambda n: n,
        hint="expected PATH/<class name>/<image>",
    )
