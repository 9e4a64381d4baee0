"""Base classes: input validation, fp32 casting and optional mining shared by every loss."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from langdml.errors import LangDMLError

from ._common import as_compute, check_batch, check_proxy_batch, fp32_region

IndicesTuple = tuple[Tensor, ...]


class MetricLoss(nn.Module):
    """loss(embeddings (B, d), labels (B,)) -> scalar float32 tensor (float64 for float64 input).

    ``indices_tuple`` (a, p, n) or (a1, p, a2, n), as produced by a miner, restricts the pairs or
    triplets used; when omitted and ``miner`` is set, the miner picks them on every call.
    """

    def __init__(self, miner: nn.Module | None = None) -> None:
        super().__init__()
        self.miner = miner

    def forward(
        self, embeddings: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None = None
    ) -> Tensor:
        check_batch(embeddings, labels, type(self).__name__)
        return self._checked_forward(embeddings, labels, indices_tuple)

    def _checked_forward(
        self, embeddings: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None
    ) -> Tensor:
        """forward after the inputs passed validation (each entry point checks them once)."""
        labels = labels.to(device=embeddings.device, dtype=torch.long)
        with fp32_region(embeddings):
            x = as_compute(embeddings)
            if x.shape[0] == 0:
                return (x * 0.0).sum()
            if indices_tuple is None and self.miner is not None:
                indices_tuple = self.miner(x, labels)
            return self.compute(x, labels, indices_tuple)

    def compute(self, x: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        raise NotImplementedError

    def proxy_parameters(self) -> list[nn.Parameter]:
        """Parameters that want their own learning rate (proxies); empty for pair losses."""
        return []


class ProxyLoss(MetricLoss):
    """A loss owning ``proxies``: nn.Parameter (num_classes * proxies_per_class, embedding_size).

    Proxy losses take no ``miner``. A mined ``indices_tuple`` passed in has no sample pairs to
    restrict here: ProxyNCALoss and ProxyAnchorLoss turn it into per-sample weights exactly as
    pytorch-metric-learning does (see their docstrings); ProxyGMLLoss raises LangDMLError.
    """

    def __init__(self, num_classes: int, embedding_size: int, proxies_per_class: int = 1) -> None:
        super().__init__(miner=None)
        for name, value in (
            ("num_classes", num_classes),
            ("embedding_size", embedding_size),
            ("proxies_per_class", proxies_per_class),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LangDMLError(
                    f"{type(self).__name__}: {name} must be an int >= 1, got {value!r}"
                )
        self.num_classes = num_classes
        self.embedding_size = embedding_size
        self.proxies_per_class = proxies_per_class
        self.proxies = nn.Parameter(torch.empty(num_classes * proxies_per_class, embedding_size))
        # Class of each proxy row, class-major: rows c*N .. c*N+N-1 belong to class c.
        self.register_buffer(
            "proxy_labels",
            torch.arange(num_classes).repeat_interleave(proxies_per_class),
            persistent=False,
        )

    def forward(
        self, embeddings: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None = None
    ) -> Tensor:
        check_proxy_batch(
            embeddings, labels, self.num_classes, self.embedding_size, type(self).__name__
        )
        return self._checked_forward(embeddings, labels, indices_tuple)

    def fp32_proxies(self, device: torch.device) -> Tensor:
        """The proxies on ``device``, in float32 (float64 proxies stay float64)."""
        return as_compute(self.proxies).to(device)

    def proxy_parameters(self) -> list[nn.Parameter]:
        return [self.proxies]
