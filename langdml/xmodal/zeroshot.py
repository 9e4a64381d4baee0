"""A zero-shot image→text-space baseline that needs no training.

The packaged ImageNet classifier (EfficientNet-Lite0) gives each image a distribution p over the
1000 ImageNet classes; the image is placed in the text space as the probability-weighted mean of
the ImageNet class-name embeddings, renormalised:

    t(x) = normalize( Σ_c p_c(x) · e(name_c) ),   p = softmax(logits(x) / T)

with the same text model (and prompts) that embeds the dataset's class names, so t(x) and the
test class-name embeddings can be compared by cosine. Logits are the classifier's linear layer
applied to the cached pooled trunk features (the same numbers as the full classifier, without a
second pass over the images).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from langdml.errors import LangDMLError


def imagenet_logits(
    features: torch.Tensor, device: str = "cpu", batch_size: int = 8192
) -> torch.Tensor:
    """(N, 1280) pooled EfficientNet-Lite0 features → (N, 1000) ImageNet logits of the packaged
    classifier (its final linear layer: pooling and dropout come before it, dropout is off)."""
    from langdml.models import load_imagenet_classifier

    fc = load_imagenet_classifier(device=device).get_classifier()
    if features.ndim != 2 or features.shape[1] != fc.in_features:
        raise LangDMLError(
            f"ImageNet zero-shot baseline: features of shape {tuple(features.shape)} are not "
            f"pooled EfficientNet-Lite0 features (N, {fc.in_features}); extract them with "
            "backbone tf_efficientnet_lite0 and weights packaged"
        )
    with torch.no_grad():
        return torch.cat(
            [
                fc(features[i : i + batch_size].to(device).float()).cpu()
                for i in range(0, len(features), batch_size)
            ]
        )


def imagenet_name_embeddings(
    text_model: str = "minilm",
    prompts: str | Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
) -> torch.Tensor:
    """(1000, d) unit text embeddings of the ImageNet class names (short form, e.g. "tabby"),
    cached like any class-name embedding. Two names repeat ("crane", "maillot"): both rows get
    the same embedding."""
    from langdml.models import imagenet_class_names
    from langdml.text import precompute_text_embeddings

    return precompute_text_embeddings(
        imagenet_class_names("short"),
        model=text_model,
        prompts=prompts,
        cache_dir=cache_dir,
        device=device,
        allow_duplicates=True,
    ).embeddings.float()


def probabilities_to_text(probs: torch.Tensor, name_embeddings: torch.Tensor) -> torch.Tensor:
    """normalize(P E): (N, K) class probabilities × (K, d) name embeddings → (N, d) unit rows."""
    if probs.shape[1] != name_embeddings.shape[0]:
        raise LangDMLError(
            f"{probs.shape[1]} class probabilities per image but {name_embeddings.shape[0]} "
            "name embeddings; expected one name per class"
        )
    return F.normalize(probs.float() @ name_embeddings.float(), dim=-1)


def zeroshot_text_space(
    features: torch.Tensor,
    text_model: str = "minilm",
    prompts: str | Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    temperature: float = 1.0,
) -> torch.Tensor:
    """Images (as pooled EfficientNet-Lite0 features) → (N, d) unit rows in the text space."""
    if temperature <= 0:
        raise LangDMLError(f"zero-shot temperature must be > 0, got {temperature}")
    probs = torch.softmax(imagenet_logits(features, device=device) / temperature, dim=1)
    names = imagenet_name_embeddings(text_model, prompts, cache_dir, device)
    return probabilities_to_text(probs, names)
