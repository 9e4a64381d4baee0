"""The packaged ImageNet classifier and ImageNet class names (from timm's maintained class info)."""

from __future__ import annotations

from functools import lru_cache

from torch import nn

from langdml.models.backbones import create_backbone


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
