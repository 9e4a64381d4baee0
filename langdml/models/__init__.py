"""Backbones (timm), the packaged offline EfficientNet-Lite0, embedding heads, the feature cache."""

from langdml.models.backbones import BackboneInfo, create_backbone, freeze_batchnorm
from langdml.models.head import EmbeddingHead, EmbeddingModel
from langdml.models.imagenet import imagenet_class_names, load_imagenet_classifier
from langdml.models.transforms import image_transform

__all__ = [
    "BackboneInfo",
    "EmbeddingHead",
    "EmbeddingModel",
    "create_backbone",
    "freeze_batchnorm",
    "image_transform",
    "imagenet_class_names",
    "load_imagenet_classifier",
]

from langdml.models.features import FeatureSet, FeatureSpec, extract_features  # noqa: E402

__all__ += ["FeatureSet", "FeatureSpec", "extract_features"]
