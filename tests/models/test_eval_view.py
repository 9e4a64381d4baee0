"""The torch-free eval view gives torchvision's eval preprocessing to the bit."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from langdml.models.eval_view import EvalView
from langdml.models.transforms import image_transform

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _torchvision(size, crop_pct, interpolation, scale_size=None):
    """torchvision's own chain, the reference."""
    mode = T.InterpolationMode(interpolation)
    if crop_pct:
        short = scale_size or int(round(size / crop_pct))
        spatial = [T.Resize(short, interpolation=mode), T.CenterCrop(size)]
    else:
        spatial = [T.Resize((size, size), interpolation=mode)]
    return T.Compose([*spatial, T.ToTensor(), T.Normalize(MEAN, STD)])


def _image(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "nearest"])
@pytest.mark.parametrize(
    ("size", "crop_pct", "scale_size"),
    [(32, None, None), (32, 0.875, None), (31, 0.9, 34), (40, 1.15, None), (24, 1.0, None)],
)
@pytest.mark.parametrize(("w", "h"), [(57, 41), (41, 57), (32, 32), (24, 30), (13, 90)])
def test_matches_torchvision_bitwise(interpolation, size, crop_pct, scale_size, w, h):
    image = _image(w, h, seed=w * h + size)
    want = _torchvision(size, crop_pct, interpolation, scale_size)(image)
    view = EvalView(size, MEAN, STD, crop_pct, interpolation, scale_size)
    got = view(image)
    assert got.dtype == np.float32 and got.shape == (3, size, size)
    assert torch.equal(torch.from_numpy(got), want)
    # and the project's eval transform is that view
    ours = image_transform(
        size, MEAN, STD, crop_pct=crop_pct, interpolation=interpolation, scale_size=scale_size
    )
    assert torch.equal(ours(image), want)


def test_batch_and_pickle():
    view = EvalView(16, MEAN, STD, 0.875, "bicubic")
    images = [_image(20, 30, 1), _image(30, 20, 2)]
    assert view.batch(images).shape == (2, 3, 16, 16)
    assert view.batch([]).shape == (0, 3, 16, 16)
    tf = pickle.loads(pickle.dumps(image_transform(16, MEAN, STD, crop_pct=0.875)))
    assert torch.equal(tf(images[0]), torch.from_numpy(view(images[0])))


def test_unknown_interpolation_is_one_line():
    with pytest.raises(ValueError, match="interpolation must be one of .* got 'lanczos'"):
        EvalView(16, MEAN, STD, interpolation="lanczos")
