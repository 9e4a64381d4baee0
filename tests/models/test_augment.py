"""Augmentation from the config (data.augment, data.timm_augment): the default pipeline written
as entries gives the default's exact tensors, timm's options reach create_transform, bad entries
are one line at config load, and a fine-tuning run trains with them."""

import json

import pytest
import torch
from PIL import Image
from runkit import imagefolder_cfg
from torchvision import transforms as T

from langdml.config import load_config
from langdml.errors import ConfigError
from langdml.experiment import image_normalisation, run_transform
from langdml.models import image_transform
from langdml.models.augment import augment_transform, timm_transform

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _image(size=64) -> Image.Image:
    g = torch.Generator().manual_seed(0)
    pixels = (torch.rand(size, size, 3, generator=g) * 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels)


def _draws(transform, seeds=range(6)) -> list[torch.Tensor]:
    out = []
    for s in seeds:
        torch.manual_seed(s)
        out.append(transform(_image()))
    return out


def test_default_written_as_entries_gives_the_default_tensors():
    default = image_transform(32, MEAN, STD, train=True, crop_scale=(0.35, 1.0))
    entries = [
        {"name": "RandomResizedCrop", "size": 32, "scale": [0.35, 1.0], "interpolation": "bicubic"},
        {"name": "RandomHorizontalFlip"},
    ]
    ours = augment_transform(entries, MEAN, STD)
    for a, b in zip(_draws(default), _draws(ours)):
        assert torch.equal(a, b)


def test_run_transform_uses_the_configured_entries():
    base = {"model.trainable_blocks": "all", "model.image_size": 32}
    cfg = load_config(None, {**base, "data.augment": [{"name": "Resize", "size": [32, 32]}]})
    mean, std = image_normalisation(cfg)
    want = T.Compose([T.Resize([32, 32]), T.ToTensor(), T.Normalize(mean, std)])(_image())
    assert torch.equal(run_transform(cfg, True)(_image()), want)
    # evaluation keeps its own transform; without the key training keeps the default
    plain = load_config(None, base)
    assert torch.equal(run_transform(cfg, False)(_image()), run_transform(plain, False)(_image()))
    default = image_transform(32, mean, std, train=True)
    for a, b in zip(_draws(run_transform(plain, True)), _draws(default)):
        assert torch.equal(a, b)


def test_tensor_transforms_follow_an_explicit_to_tensor():
    entries = [
        {"name": "Resize", "size": [32, 32]},
        {"name": "ToTensor"},
        {"name": "RandomErasing", "p": 1.0, "value": 0},
    ]
    out = augment_transform(entries, (0, 0, 0), (1, 1, 1))(_image())
    assert out.shape == (3, 32, 32) and (out == 0).any()


def test_timm_options_reach_create_transform():
    # no random crop area, no flip, no jitter: timm's training transform is a plain resize
    options = {"scale": [1, 1], "ratio": [1, 1], "hflip": 0.0, "color_jitter": 0.0}
    ours = timm_transform(options, 32, MEAN, STD, "bicubic")(_image())
    want = T.Compose([T.Resize((32, 32), T.InterpolationMode.BICUBIC), T.ToTensor()])(_image())
    want = T.Normalize(MEAN, STD)(want)
    assert torch.allclose(ours, want, atol=1e-6)
    cfg = load_config(
        None,
        {"model.trainable_blocks": "all", "model.image_size": 32, "data.timm_augment": options},
    )
    assert run_transform(cfg, True)(_image()).shape == (3, 32, 32)


FT = {"model.trainable_blocks": "all", "model.image_size": 32}


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"data.augment": [{"name": "Resize", "size": 32}]}, "augments the images of full"),
        (
            {**FT, "data.augment": [{"name": "RandomResizdCrop"}]},
            "did you mean 'RandomResizedCrop'",
        ),
        (
            {**FT, "data.augment": [{"name": "RandomResizedCrop", "sise": 32}]},
            r"unexpected keyword argument 'sise'; its arguments: \(size,",
        ),
        ({**FT, "data.augment": [{"name": "Resize", "size": [24, 24]}]}, "gives 3x24x24 images"),
        ({**FT, "data.augment": [{"name": "Normalize"}]}, "from the backbone"),
        ({**FT, "data.augment": [{"size": 32}]}, r"augment\[0\]: expected \{name: TRANSFORM"),
        (
            {**FT, "data.augment": [{"name": "Resize", "size": 32, "interpolation": "cubic"}]},
            "interpolation 'cubic' is not one of",
        ),
        (
            {**FT, "data.augment": [{"name": "RandomApply", "transforms": [{"name": "Blur"}]}]},
            r"augment\[0.transforms\[0\]\] Blur",
        ),
        ({**FT, "data.timm_augment": {"auto_augmnt": "x"}}, "did you mean 'auto_augment'"),
        ({**FT, "data.timm_augment": {"mean": [0, 0, 0]}}, "timm_augment.mean is set by the run"),
        (
            {**FT, "data.augment": [{"name": "Resize", "size": 32}], "data.timm_augment": {}},
            "not both",
        ),
    ],
)
def test_bad_augmentation_is_one_line_at_load(over, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(None, over)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_fine_tuning_trains_with_configured_augmentation(emoji_subset_folder, tmp_path):
    from langdml.train import train

    settings = {
        "model.backbone": "test_efficientnet",
        "model.weights": "none",
        "model.trainable_blocks": "all",
        "model.image_size": 32,
        "model.embedding_dim": 8,
        "data.augment": [
            {"name": "RandomResizedCrop", "size": 32, "scale": [0.5, 1.0]},
            {"name": "RandomApply", "transforms": [{"name": "ColorJitter", "brightness": 0.4}]},
            {"name": "RandomHorizontalFlip"},
        ],
        "train.epochs": 1,
        "train.batch_size": 8,
        "train.iterations_per_epoch": 2,
        "train.progress": False,
        "eval.clustering": False,
    }
    cfg = imagefolder_cfg(emoji_subset_folder, tmp_path / "cache", tmp_path / "run", settings)
    result = train(cfg)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["config"]["data"]["augment"][1]["transforms"][0]["name"] == "ColorJitter"
    assert 0 <= result.metrics["recall@1"] <= 1
