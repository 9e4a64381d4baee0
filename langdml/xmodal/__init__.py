"""Cross-modal (image ↔ class-name text) retrieval on classes never seen in training.

Metrics: :func:`crossmodal_metrics` (image→text R@1/R@5/MAP, text→image R@1/R@10/MAP@R/mAP) and
:func:`chance_levels`. Ways to put images and names in one space: CLIP (:func:`xmodal_clip`),
learned alignment (:func:`xmodal_aligned`), language as proxies (:class:`TextProxyAnchorLoss`,
:class:`TextProxyNCALoss`, :func:`xmodal_text_proxies`) and the zero-shot ImageNet-classifier
baseline (:func:`xmodal_zeroshot`). CLI: ``langdml xmodal``.
"""

from langdml._lazy import lazy_getattr

# Imported on first use, so `langdml --help` does not pay for torch.
_EXPORTS = {
    **dict.fromkeys(
        ("CrossModalModel", "info_nce", "train_alignment", "train_text_proxies"),
        "langdml.xmodal.align",
    ),
    **dict.fromkeys(
        (
            "run_method",
            "xmodal_aligned",
            "xmodal_clip",
            "xmodal_for_run",
            "xmodal_text_proxies",
            "xmodal_zeroshot",
        ),
        "langdml.xmodal.methods",
    ),
    **dict.fromkeys(("RunEmbeddings", "run_embeddings"), "langdml.xmodal.inputs"),
    **dict.fromkeys(
        ("METRIC_KEYS", "chance_levels", "crossmodal_metrics"), "langdml.xmodal.metrics"
    ),
    **dict.fromkeys(("METHODS", "XmodalConfig", "xmodal_config"), "langdml.xmodal.config"),
    **dict.fromkeys(
        ("TEXT_PROXY_LOSSES", "TextProjection", "TextProxyAnchorLoss", "TextProxyNCALoss"),
        "langdml.losses.text_proxies",
    ),
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
