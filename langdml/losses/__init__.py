"""Deep metric learning losses, miners and regularizers.

Every loss is an nn.Module called as ``loss(embeddings (B, d), labels (B,)) -> scalar``; pair and
proxy losses use pytorch-metric-learning's argument names and defaults and match its values and
gradients with those defaults.
"""

from .arcface import ArcFaceLoss, CosFaceLoss
from .circle import CircleLoss
from .combined import CombinedLoss, build_loss
from .contrastive import ContrastiveLoss
from .direction import DirectionRegularizer
from .dr_losses import DRMultiSimilarityLoss, DRProxyNCALoss, DRTripletLoss
from .language import LanguageGuidanceLoss
from .margin import MarginLoss
from .miners import (
    AllTripletsMiner,
    BatchHardMiner,
    DistanceWeightedMiner,
    MultiSimilarityMiner,
    SemiHardMiner,
)
from .multi_similarity import MultiSimilarityLoss
from .normalized_softmax import NormalizedSoftmaxLoss
from .npair import NPairLoss
from .proxy_anchor import ProxyAnchorLoss
from .proxy_gml import ProxyGMLLoss
from .proxy_nca import ProxyNCALoss
from .proxy_nca_pp import ProxyNCAPlusPlusLoss
from .s2sd import S2SDLoss
from .soft_triple import SoftTripleLoss
from .triplet import TripletLoss
from .xbm import CrossBatchMemory

__all__ = [
    "ContrastiveLoss",
    "TripletLoss",
    "NPairLoss",
    "MultiSimilarityLoss",
    "ProxyNCALoss",
    "ProxyAnchorLoss",
    "ProxyGMLLoss",
    "MarginLoss",
    "CircleLoss",
    "ArcFaceLoss",
    "CosFaceLoss",
    "NormalizedSoftmaxLoss",
    "SoftTripleLoss",
    "ProxyNCAPlusPlusLoss",
    "CrossBatchMemory",
    "S2SDLoss",
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
