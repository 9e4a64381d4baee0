"""Cross-modal (image ↔ class-name text) retrieval on classes never seen in training.

Metrics: :func:`crossmodal_metrics` (image→text R@1/R@5/MAP, text→image R@1/R@10/MAP@R/mAP) and
:func:`chance_levels`. Ways to put images and names in one space: CLIP (:func:`xmodal_clip`),
learned alignment (:func:`xmodal_aligned`), language as proxies (:class:`TextProxyAnchorLoss`,
:class:`TextProxyNCALoss`, :func:`xmodal_text_proxies`) and the zero-shot ImageNet-classifier
baseline (:func:`xmodal_zeroshot`). CLI: ``langdml xmodal``.
"""

from langdml.xmodal.align import CrossModalModel, info_nce, train_alignment, train_text_proxies
from langdml.xmodal.methods import (
    METHODS,
    run_embeddings,
    run_method,
    xmodal_aligned,
    xmodal_clip,
    xmodal_for_run,
    xmodal_text_proxies,
    xmodal_zeroshot,
)
from langdml.xmodal.metrics import METRIC_KEYS, chance_levels, crossmodal_metrics
from langdml.xmodal.text_proxies import (
    TEXT_PROXY_LOSSES,
    TextProjection,
    TextProxyAnchorLoss,
    TextProxyNCALoss,
)

__all__ = [
    "METHODS",
    "METRIC_KEYS",
    "TEXT_PROXY_LOSSES",
    "CrossModalModel",
    "TextProjection",
    "TextProxyAnchorLoss",
    "TextProxyNCALoss",
    "chance_levels",
    "crossmodal_metrics",
    "info_nce",
    "run_embeddings",
    "run_method",
    "train_alignment",
    "train_text_proxies",
    "xmodal_aligned",
    "xmodal_clip",
    "xmodal_for_run",
    "xmodal_text_proxies",
    "xmodal_zeroshot",
]
