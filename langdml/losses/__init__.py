"""Deep metric learning losses, miners and regularizers.

Every loss is an nn.Module called as ``loss(embeddings (B, d), labels (B,)) -> scalar``; pair and
proxy losses use pytorch-metric-learning's argument names and defaults and match its values and
gradients with those defaults.
"""

from .combined import CombinedLoss, build_loss
from .contrastive import ContrastiveLoss
from .direction import DirectionRegularizer
from .dr_losses import DRMultiSimilarityLoss, DRProxyNCALoss, DRTripletLoss
from .language import LanguageGuidanceLoss
from .miners import (
    AllTripletsMiner,
    BatchHardMiner,
    DistanceWeightedMiner,
    MultiSimilarityMiner,
    SemiHardMiner,
)
from .multi_similarity import MultiSimilarityLoss
from .npair import NPairLoss
from .proxy_anchor import ProxyAnchorLoss
from .proxy_gml import ProxyGMLLoss
from .proxy_nca import ProxyNCALoss
from .triplet import TripletLoss

__all__ = [
    "ContrastiveLoss",
    "TripletLoss",
    "NPairLoss",
    "MultiSimilarityLoss",
    "ProxyNCALoss",
    "ProxyAnchorLoss",
    "ProxyGMLLoss",
    "LanguageGuidanceLoss",
    "DirectionRegularizer",
    "DRTripletLoss",
    "DRProxyNCALoss",
    "DRMultiSimilarityLoss",
    "AllTripletsMiner",
    "SemiHardMiner",
    "BatchHardMiner",
    "DistanceWeightedMiner",
    "MultiSimilarityMiner",
    "CombinedLoss",
    "build_loss",
]
