"""Deep metric learning losses, miners and regularizers.

Every loss is an nn.Module called as ``loss(embeddings (B, d), labels (B,)) -> scalar``; pair and
proxy losses use pytorch-metric-learning's argument names and defaults and match its values and
gradients with those defaults.

The package loads lazily (``from langdml.losses import X`` imports X's module on first use), so
the config and the CLI can read :mod:`langdml.losses.registry` (every loss, miner and
regularizer name) and :mod:`langdml.losses.spec` (the ``loss:`` schema) without importing torch.
"""

from langdml._lazy import lazy_getattr

_EXPORTS = {
    "ArcFaceLoss": "langdml.losses.arcface",
    "CosFaceLoss": "langdml.losses.arcface",
    "CircleLoss": "langdml.losses.circle",
    "CombinedLoss": "langdml.losses.combined",
    "build_loss": "langdml.losses.build",
    "build_base": "langdml.losses.build",
    "build_miner": "langdml.losses.build",
    "LossConfig": "langdml.losses.spec",
    "LOSSES": "langdml.losses.registry",
    "MINERS": "langdml.losses.registry",
    "REGULARIZERS": "langdml.losses.registry",
    "ContrastiveLoss": "langdml.losses.contrastive",
    "DirectionRegularizer": "langdml.losses.direction",
    "DRMultiSimilarityLoss": "langdml.losses.dr_losses",
    "DRProxyNCALoss": "langdml.losses.dr_losses",
    "DRTripletLoss": "langdml.losses.dr_losses",
    "LanguageGuidanceLoss": "langdml.losses.language",
    "MarginLoss": "langdml.losses.margin",
    "AllTripletsMiner": "langdml.losses.miners",
    "BatchHardMiner": "langdml.losses.miners",
    "DistanceWeightedMiner": "langdml.losses.miners",
    "MultiSimilarityMiner": "langdml.losses.miners",
    "SemiHardMiner": "langdml.losses.miners",
    "TripletMarginMiner": "langdml.losses.miners",
    "MultiSimilarityLoss": "langdml.losses.multi_similarity",
    "NormalizedSoftmaxLoss": "langdml.losses.normalized_softmax",
    "NPairLoss": "langdml.losses.npair",
    "ProxyAnchorLoss": "langdml.losses.proxy_anchor",
    "ProxyGMLLoss": "langdml.losses.proxy_gml",
    "ProxyNCALoss": "langdml.losses.proxy_nca",
    "ProxyNCAPlusPlusLoss": "langdml.losses.proxy_nca_pp",
    "S2SDLoss": "langdml.losses.s2sd",
    "SoftTripleLoss": "langdml.losses.soft_triple",
    "TripletLoss": "langdml.losses.triplet",
    "CrossBatchMemory": "langdml.losses.xbm",
    "TextProxyAnchorLoss": "langdml.losses.text_proxies",
    "TextProxyNCALoss": "langdml.losses.text_proxies",
    "TEXT_PROXY_LOSSES": "langdml.losses.text_proxies",
    "BASE_LOSSES": "langdml.losses.build",
}

__all__ = list(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
