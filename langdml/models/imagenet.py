"""The packaged ImageNet classifier and ImageNet class names (from timm's maintained class info)."""

from __future__ import annotations

from functools import lru_cache

from torch import nn

from langdml.errors import ModelError
from langdml.models.backbones import create_backbone
from langdml.models.efficientnet_lite import ARCH
from langdml.models.transforms import TF_MEAN_STD


@lru_cache(maxsize=2)
def imagenet_class_names(style: str = "short") -> list[str]:
    """The 1000 ImageNet-1k class names in index order.

    ``style="short"`` gives the first synonym ("tabby"), ``"full"`` the whole WordNet description
    ("tabby, tabby cat").
    """
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    full = [info.index_to_description(i) for i in range(info.num_classes())]
    if style == "full":
        return full
    if style != "short":
        raise ValueError(f"style must be 'short' or 'full', got {style!r}")
    return [d.split(",")[0].strip() for d in full]


def load_imagenet_classifier(device: str = "cpu") -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet head (packaged weights), in eval mode."""
    model, _ = create_backbone(weights="packaged", with_classifier=True)
    return model.eval().to(device)


def parse_classifier_spec(spec: str) -> tuple[str, str]:
    """(timm architecture, weights) of a pseudo-label classifier: ``packaged`` or
    ``ARCH:WEIGHTS`` with WEIGHTS one of create_backbone's (hub, torchvision or a file path)."""
    if spec == "packaged":
        return ARCH, "packaged"
    arch, sep, weights = str(spec).partition(":")
    if not sep or not arch or not weights or weights in ("none", "packaged"):
        raise ModelError(
            f"pseudo-label classifier {spec!r}: expected packaged or ARCH:WEIGHTS with a "
            "pretrained WEIGHTS (hub, torchvision or a file path), e.g. resnet50:torchvision"
        )
    return arch, weights


def imagenet_classifier(spec: str = "packaged", device: str = "cpu") -> tuple[nn.Module, dict]:
    """An ImageNet-1k classifier in eval mode and its preprocessing (mean, std, interpolation).

    ``packaged`` resamples bicubic (the project's choice); other classifiers use the
    interpolation of their timm pretrained config (torchvision weights: bilinear)."""
    arch, weights = parse_classifier_spec(spec)
    if weights == "packaged":
        return load_imagenet_classifier(device), {
            "mean": TF_MEAN_STD[0],
            "std": TF_MEAN_STD[1],
            "interpolation": "bicubic",
        }
    model, info = create_backbone(arch, weights, with_classifier=True)
    if int(getattr(model, "num_classes", 0)) != 1000:
        raise ModelError(f"pseudo-label classifier {spec!r} has no 1000-class ImageNet head")
    interp = model.pretrained_cfg.get("interpolation", "bicubic")
    return model.eval().to(device), {"mean": info.mean, "std": info.std, "interpolation": interp}
