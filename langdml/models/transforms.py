"""Image preprocessing shared by feature extraction, fine-tuning and pseudo-labelling."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torchvision import transforms as T

from langdml.models.eval_view import RESAMPLE, EvalView

TF_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # tf_efficientnet_lite0's normalisation
# The project's augmentation until recipes needed the literature's: a milder crop than
# torchvision's (0.08, 1) default, bicubic resampling.
DEFAULT_CROP_SCALE = (0.35, 1.0)
DEFAULT_INTERPOLATION = "bicubic"
INTERPOLATIONS = tuple(RESAMPLE)  # the eval view's resampling filters, by name


def image_transform(
    image_size: int = 224,
    mean: Sequence[float] = TF_MEAN_STD[0],
    std: Sequence[float] = TF_MEAN_STD[1],
    train: bool = False,
    crop_pct: float | None = None,
    crop_scale: Sequence[float] = DEFAULT_CROP_SCALE,
    interpolation: str = DEFAULT_INTERPOLATION,
    augment: Sequence[dict] | None = None,
    timm_augment: dict | None = None,
    scale_size: int | None = None,
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL RGB → normalised tensor (3, S, S).

    Eval: resize the short side to ``image_size / crop_pct`` then center-crop (``crop_pct=None``
    resizes straight to S×S, right for emoji renderings that fill their canvas). Train: the
    standard DML augmentation, random resized crop (area fraction in ``crop_scale``) + horizontal
    flip. ``interpolation`` resamples every resize. ``crop_pct`` > 1 resizes below the crop, which
    torchvision's CenterCrop zero-pads (one source's pseudo-labelling does exactly that).
    ``augment`` (transform entries) or ``timm_augment`` (timm options) replace the training
    augmentation (:mod:`langdml.models.augment`).
    ``scale_size`` replaces ``round(image_size / crop_pct)`` as the short side before the crop
    (timm's pretrained preprocessing floors the quotient instead).
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    interp = T.InterpolationMode(interpolation)
    if train and augment is not None:
        from langdml.models.augment import augment_transform

        return augment_transform(augment, mean, std)
    if train and timm_augment is not None:
        from langdml.models.augment import timm_transform

        return timm_transform(timm_augment, image_size, mean, std, interpolation)
    if train:
        spatial = [
            T.RandomResizedCrop(image_size, scale=tuple(crop_scale), interpolation=interp),
            T.RandomHorizontalFlip(),
        ]
    else:
        view = EvalView(image_size, tuple(mean), tuple(std), crop_pct, interpolation, scale_size)
        return EvalTransform(view)
    return T.Compose([*spatial, T.ToTensor(), T.Normalize(tuple(mean), tuple(std))])


class EvalTransform:
    """The eval view (:class:`~langdml.models.eval_view.EvalView`, the one implementation) as a
    torch transform: PIL RGB → float32 tensor (3, S, S). A class, so DataLoader workers can
    pickle it."""

    def __init__(self, view: EvalView) -> None:
        self.view = view

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(self.view(image))

    def __repr__(self) -> str:
        return f"EvalTransform({self.view})"


def transform_batch(
    transform: Callable[[Image.Image], torch.Tensor], images: Sequence
) -> torch.Tensor:
    """Stack transformed images single-threaded: per-image tensor ops are too small to gain from
    intra-op threads, and on a busy CPU the thread hand-off cost 20x (measured 24 ms vs 1 ms)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.stack([transform(im) for im in images])
    finally:
        torch.set_num_threads(threads)
