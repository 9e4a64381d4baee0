"""ProxyGML (Zhu et al., NeurIPS 2020, "Fewer is More: A Deep Graph Metric Learning Perspective
Using Fewer Proxies")."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from langdml.errors import LangDMLError

from ._class_weights import check_non_negative, check_positive
from ._common import cross_entropy, normalize
from .base import IndicesTuple, ProxyLoss


class ProxyGMLLoss(ProxyLoss):
    """CE_i( softmax_{c valid}(s · Σ_{j∈K_i, class(j)=c} S_ij), y_i ) + λ · CE_j over proxies.

    Our reading of the paper's equations (checked against its public code):
    - S = Z Pᵀ: cosine similarities of the B samples to all C·N proxies (N per class, rows
      class-major); embeddings and proxies are L2-normalised.
    - Sub-graph: sample i keeps K_i = its own class's N proxies (forced in) plus its most similar
      other proxies, k = max(N, ceil(r·C·N)) proxies in total; other edges are cut (set to 0).
    - Reverse label propagation: class score z_ic = Σ of the kept edges to class c's proxies (a
      sum, not a max/mean); the softmax runs only over classes with at least one kept proxy
      (the code masks zero scores, which coincides except for exact zeros); loss = mean CE.
    - Proxy regulariser: each proxy j classifies itself by Σ_{k∈class c} cos(p_j, p_k) (all
      proxies, itself included); mean CE against its own class, weighted by λ = weight_lambda.
    ``scale`` multiplies the class scores before the softmax (1 in the paper).
    Differs from the public code in two places: it keeps k = ceil(r·C·N) proxies (own class
    ranked first, so when k < N some own-class proxies are cut too), where we keep
    max(N, ceil(r·C·N)) so that all N stay; and it initialises the proxies kaiming-uniform
    (a = √5, on a (dim, C·N) tensor), where ours start kaiming-normal (fan_out).
    Valid ranges: r in (0, 1], weight_lambda ≥ 0, scale > 0.
    A mined ``indices_tuple`` is refused (LangDMLError): ProxyGML has no per-pair or PML
    counterpart to define what it would do.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        proxies_per_class: int = 12,
        r: float = 0.05,
        weight_lambda: float = 0.3,
        scale: float = 1.0,
    ) -> None:
        super().__init__(num_classes, embedding_size, proxies_per_class)
        if not 0.0 < r <= 1.0:
            raise LangDMLError(f"ProxyGMLLoss: r must be in (0, 1], got {r}")
        self.r = float(r)
        check_non_negative("ProxyGMLLoss", weight_lambda=weight_lambda)
        check_positive("ProxyGMLLoss", scale=scale)
        self.weight_lambda = float(weight_lambda)
        self.scale = float(scale)
        torch.nn.init.kaiming_normal_(self.proxies, mode="fan_out")

    @property
    def num_kept(self) -> int:
        total = self.num_classes * self.proxies_per_class
        return min(total, max(self.proxies_per_class, math.ceil(self.r * total)))

    def forward(
        self, embeddings: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None = None
    ) -> Tensor:
        if indices_tuple is not None:
            raise LangDMLError(
                "ProxyGMLLoss does not support mined tuples (indices_tuple); remove the miner"
            )
        return super().forward(embeddings, labels)

    def compute(self, x: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        c, n = self.num_classes, self.proxies_per_class
        proxies = normalize(self.fp32_proxies(x.device).to(x.dtype))
        proxy_labels = self.proxy_labels.to(x.device)
        sim = normalize(x) @ proxies.T
        own = proxy_labels[None, :] == labels[:, None]
        # Cosines lie in [-1, 1], so +3 ranks every own-class proxy above all others.
        top = (sim.detach() + 3.0 * own).topk(self.num_kept, dim=1).indices
        kept = torch.zeros_like(own).scatter_(1, top, True)
        scores = torch.where(kept, sim, torch.zeros_like(sim)).view(-1, c, n).sum(dim=2)
        valid = kept.view(-1, c, n).any(dim=2)
        logits = (self.scale * scores).masked_fill(~valid, float("-inf"))
        loss = cross_entropy(logits, labels)
        if self.weight_lambda > 0:
            proxy_scores = (proxies @ proxies.T).view(c * n, c, n).sum(dim=2)
            loss = loss + self.weight_lambda * cross_entropy(proxy_scores, proxy_labels)
        return loss
