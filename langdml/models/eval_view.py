"""The eval view of an image, without torch: resize, center-crop, scale to [0, 1], normalise.

This is the one implementation of the evaluation preprocessing: the torch eval transform of
:func:`langdml.models.transforms.image_transform` wraps it, and ``langdml search`` calls it
directly so a query needs neither torchvision nor timm. It follows torchvision's rules for PIL
images exactly (``Resize`` of the short side keeps the long side's truncated proportion;
``CenterCrop`` rounds the offsets and zero-pads an image smaller than the crop; ``ToTensor``
divides by 255 and ``Normalize`` subtracts then divides, in float32), so both give the same
numbers to the bit (checked by the tests against torchvision itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


@dataclass(frozen=True)
class EvalView:
    """RGB PIL image → float32 (3, S, S). ``crop_pct`` None resizes straight to S x S; else the
    short side goes to ``scale_size`` (default ``round(S / crop_pct)``) and the center S x S
    is kept."""

    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float | None = None
    interpolation: str = "bicubic"
    scale_size: int | None = None

    def __post_init__(self) -> None:
        if self.interpolation not in RESAMPLE:
            raise ValueError(
                f"interpolation must be one of {tuple(RESAMPLE)}, got {self.interpolation!r}"
            )

    def spatial(self, image: Image.Image) -> Image.Image:
        """The resized (and cropped) RGB image."""
        size, resample = self.image_size, RESAMPLE[self.interpolation]
        if not self.crop_pct:
            return image.resize((size, size), resample)
        short = self.scale_size or int(round(size / self.crop_pct))
        w, h = image.size
        if w <= h:
            new = (short, int(short * h / w))
        else:
            new = (int(short * w / h), short)
        if new != (w, h):
            image = image.resize(new, resample)
        return _center_crop(image, size)

    def __call__(self, image: Image.Image) -> np.ndarray:
        x = np.asarray(self.spatial(image), dtype=np.uint8)
        x = x.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
        mean = np.asarray(self.mean, np.float32).reshape(-1, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(-1, 1, 1)
        return np.ascontiguousarray((x - mean) / std)

    def batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(N, 3, S, S) float32 of RGB PIL images."""
        if not images:
            return np.zeros((0, 3, self.image_size, self.image_size), np.float32)
        return np.stack([self(im) for im in images])


def _center_crop(image: Image.Image, size: int) -> Image.Image:
    w, h = image.size
    if w < size or h < size:  # zero-pad to at least the crop, split as torchvision splits it
        left, top = max(size - w, 0) // 2, max(size - h, 0) // 2
        padded = Image.new(image.mode, (max(w, size), max(h, size)))
        padded.paste(image, (left, top))
        image, (w, h) = padded, padded.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return image.crop((left, top, left + size, top + size))
