"""Embedding heads and the backbone + head model used for fine-tuning."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from langdml.errors import ModelError


class EmbeddingHead(nn.Module):
    """Features (B, D) → embeddings (B, d): linear or 2-layer MLP, L2-normalised by default."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        kind: str = "linear",
        normalize: bool = True,
        hidden_dim: int | None = None,
    ) -> None:
        super().__init__()
        if kind == "linear":
            self.net: nn.Module = nn.Linear(in_dim, out_dim)
        elif kind == "mlp":
            hidden = hidden_dim or in_dim
            self.net = nn.Sequential(
                nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
            )
        elif kind == "identity":
            if in_dim != out_dim:
                raise ModelError(f"identity head needs out_dim == in_dim ({in_dim}), got {out_dim}")
            self.net = nn.Identity()
        else:
            raise ModelError(f"unknown head kind {kind!r}; expected linear, mlp or identity")
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x)
        return F.normalize(z, dim=-1) if self.normalize else z


class EmbeddingModel(nn.Module):
    """Backbone → head; ``backbone=None`` means the inputs are already (cached) features.

    ``aux_heads`` (S2SD's auxiliary embedding heads) only run with ``with_aux=True``, which returns
    (embedding, [auxiliary embeddings], features), or with ``concat_aux=True``, which returns
    them as one (B, d + Σ d_k + f) tensor (S2SDLoss's input; without auxiliary heads it is the
    embedding alone, so a training loop calls every model and every loss the same way);
    evaluation uses the embedding alone."""

    def __init__(
        self,
        head: EmbeddingHead,
        backbone: nn.Module | None = None,
        aux_heads: list[EmbeddingHead] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.aux_heads = nn.ModuleList(aux_heads) if aux_heads else None

    def forward(self, x: torch.Tensor, with_aux: bool = False, concat_aux: bool = False):
        if self.backbone is not None:
            x = self.backbone(x)
        if concat_aux:
            if self.aux_heads is None:
                return self.head(x)
            return torch.cat([self.head(x), *[h(x) for h in self.aux_heads], x], dim=1)
        if not with_aux:
            return self.head(x)
        if self.aux_heads is None:
            raise ModelError("with_aux=True needs auxiliary heads (loss.s2sd.dims)")
        return self.head(x), [h(x) for h in self.aux_heads], x
