"""CombinedLoss: a base loss plus weighted regularizer terms (built by :func:`build_loss`)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from .text_proxies import TextProjection


class CombinedLoss(nn.Module):
    """L = base(embeddings, labels) + Σ_k weight_k · regularizer_k(embeddings, labels[, proxies]).

    After each call ``last_terms`` holds the detached value of every term ("base", one key per
    regularizer, "total") as floats for logging (a weight-0 regularizer is still evaluated and
    logged, without gradient). ``proxy_parameters()`` returns the base loss's
    proxies (empty for pair losses) so a trainer can give them their own learning rate.
    """

    def __init__(
        self,
        base: nn.Module,
        regularizers: list[tuple[str, float, nn.Module]] | None = None,
    ) -> None:
        super().__init__()
        self.base = base
        regularizers = regularizers or []
        self.regularizer_names = [name for name, _, _ in regularizers]
        self.weights = [float(w) for _, w, _ in regularizers]
        self.regularizers = nn.ModuleList([module for _, _, module in regularizers])
        self._last: dict[str, Tensor] = {}

    @property
    def proxies(self) -> nn.Parameter | None:
        return getattr(self.base, "proxies", None)

    @property
    def proxy_labels(self) -> Tensor | None:
        return getattr(self.base, "proxy_labels", None)

    def proxy_parameters(self) -> list[nn.Parameter]:
        getter = getattr(self.base, "proxy_parameters", None)
        return list(getter()) if getter is not None else []

    @staticmethod
    def base_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The base loss's part of a CombinedLoss ``state_dict()``."""
        return {k[len("base.") :]: v for k, v in state.items() if k.startswith("base.")}

    def text_projection(self) -> TextProjection | None:
        """The base loss's text → proxy projection (text-proxy bases), else None."""
        getter = getattr(self.base, "text_projection", None)
        return getter() if getter is not None else None

    @property
    def last_terms(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._last.items()}

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        total = self.base(embeddings, labels)
        terms = {"base": total.detach()}
        proxies = self.proxies
        proxy_labels = getattr(self.base, "proxy_labels", None)
        for name, weight, reg in zip(
            self.regularizer_names, self.weights, self.regularizers, strict=True
        ):
            if weight == 0.0:  # still logged (a control arm), but no graph is kept for it
                with torch.no_grad():
                    terms[name] = reg(
                        embeddings, labels, proxies=proxies, proxy_labels=proxy_labels
                    )
                continue
            value = reg(embeddings, labels, proxies=proxies, proxy_labels=proxy_labels)
            terms[name] = value.detach()
            total = total + weight * value
        terms["total"] = total.detach()
        self._last = terms
        return total
