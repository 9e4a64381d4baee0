"""Backbones (timm), the packaged offline EfficientNet-Lite0, embedding heads, the feature cache.

Exports resolve on first use, so a module that needs only a torch-free part (the eval view of
:mod:`langdml.models.eval_view`, the preprocessing record) does not import timm and torchvision.
"""

from langdml._lazy import lazy_getattr

_EXPORTS = {
    "BackboneInfo": "langdml.models.backbones",
    "create_backbone": "langdml.models.backbones",
    "freeze_batchnorm": "langdml.models.backbones",
    "EmbeddingHead": "langdml.models.head",
    "EmbeddingModel": "langdml.models.head",
    "imagenet_class_names": "langdml.models.imagenet",
    "load_imagenet_classifier": "langdml.models.imagenet",
    "image_transform": "langdml.models.transforms",
    "FeatureSet": "langdml.models.features",
    "FeatureSpec": "langdml.models.features",
    "extract_features": "langdml.models.features",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
