"""Language as proxies: proxy losses whose proxies are a learned projection of class-name text.

A free-parameter proxy loss learns one vector P_c per training class, so a class never seen in
training has no proxy. Here P_c = g(e_c), with e_c the (unit) text embedding of class c's name and
g a learned projection (linear ``W e`` or a two-layer MLP) into the image embedding space. The loss
value is exactly that of ``langdml.losses.ProxyAnchorLoss`` / ``ProxyNCALoss`` with those
proxies (the same code computes it); gradients flow through the proxies into g. After training,
``project(e_new)`` gives any class a proxy from its name alone, which is the query for
text→image retrieval on unseen classes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from langdml.errors import LangDMLError

from ._common import as_compute, check_proxy_batch
from .proxy_anchor import ProxyAnchorLoss
from .proxy_nca import ProxyNCALoss
from .registry import LOSSES, TEXT_PROXY_BASES

PROJECTIONS = ("linear", "mlp")


def class_rows(text: Any, who: str, dim: int | None = None) -> Tensor:
    """A float32 (n, d) tensor of text embeddings; (n, k, d) pseudo-label embeddings become the
    renormalised mean over k. Raises LangDMLError naming the shape if it is anything else, or if
    ``dim`` is given and differs from d."""
    t = torch.as_tensor(text)
    if not t.is_floating_point() or t.ndim not in (2, 3) or t.shape[-1] < 1:
        raise LangDMLError(
            f"{who}: text embeddings must be a float (n, d) or (n, k, d) tensor, got "
            f"{t.dtype} of shape {tuple(t.shape)}"
        )
    if not bool(torch.isfinite(t).all()):
        raise LangDMLError(f"{who}: text embeddings contain NaN or Inf")
    t = t.detach().float()
    if t.ndim == 3:
        t = nn.functional.normalize(t.mean(dim=1), dim=-1)
    if dim is not None and t.shape[-1] != dim:
        raise LangDMLError(
            f"{who}: text embeddings have dimension {t.shape[-1]}, expected {dim} (the text "
            "model the projection was trained with); embed the names with the same text model"
        )
    return t


class TextProjection(nn.Module):
    """Text embedding (n, d_text) → proxy (n, d).

    ``linear``: P = e Wᵀ (no bias: a bias would add the same vector to every class's proxy).
    ``mlp``: P = W₂ ReLU(W₁ e + b₁) + b₂ with ``hidden_dim`` (default max(d_text, d)) units.
    """

    def __init__(
        self,
        text_dim: int,
        embedding_size: int,
        kind: str = "linear",
        hidden_dim: int | None = None,
    ) -> None:
        super().__init__()
        if kind == "linear":
            self.net: nn.Module = nn.Linear(text_dim, embedding_size, bias=False)
        elif kind == "mlp":
            hidden = int(hidden_dim or max(text_dim, embedding_size))
            self.net = nn.Sequential(
                nn.Linear(text_dim, hidden), nn.ReLU(), nn.Linear(hidden, embedding_size)
            )
        else:
            raise LangDMLError(
                f"unknown text projection {kind!r}; expected one of {', '.join(PROJECTIONS)}"
            )
        self.kind, self.text_dim, self.embedding_size = kind, int(text_dim), int(embedding_size)

    def forward(self, text: Tensor) -> Tensor:
        return self.net(text)


class _ExternalProxies:
    """Mixin for a proxy loss whose proxies are handed in per call instead of owned.

    The parent constructor creates (and initialises) a free ``proxies`` parameter; it is removed
    so it never reaches an optimiser or a state dict. ``fp32_proxies`` — the one accessor the
    loss math uses — returns the tensor set by the owning TextProxy loss for the current call.
    """

    _external: Tensor | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        del self.proxies
        self._external = None

    def fp32_proxies(self, device: torch.device) -> Tensor:
        if self._external is None:
            raise RuntimeError("text-projected proxies used outside their owner's forward")
        return as_compute(self._external).to(device)

    def proxy_parameters(self) -> list[nn.Parameter]:
        return []


class _ProjectedProxyAnchor(_ExternalProxies, ProxyAnchorLoss):
    pass


class _ProjectedProxyNCA(_ExternalProxies, ProxyNCALoss):
    pass


class _TextProxyLoss(nn.Module):
    """Shared machinery of :class:`TextProxyAnchorLoss` and :class:`TextProxyNCALoss`."""

    _inner: type[nn.Module]

    def __init__(
        self,
        class_text_embeddings: Tensor,
        embedding_size: int,
        num_classes: int | None = None,
        projection: str = "linear",
        hidden_dim: int | None = None,
        **base_kwargs: Any,
    ) -> None:
        super().__init__()
        who = type(self).__name__
        text = class_rows(class_text_embeddings, who)
        if num_classes is not None and num_classes != text.shape[0]:
            raise LangDMLError(
                f"{who}: class_text_embeddings has {text.shape[0]} rows, expected one per class "
                f"(num_classes={num_classes})"
            )
        if not isinstance(embedding_size, int) or isinstance(embedding_size, bool):
            raise LangDMLError(f"{who}: embedding_size must be an int >= 1, got {embedding_size!r}")
        self.num_classes = int(text.shape[0])
        self.embedding_size = embedding_size
        self.text_dim = int(text.shape[1])
        self.register_buffer("class_text_embeddings", text)
        self.projection = TextProjection(self.text_dim, embedding_size, projection, hidden_dim)
        try:
            self.base = self._inner(
                num_classes=self.num_classes, embedding_size=embedding_size, **base_kwargs
            )
        except TypeError as exc:
            raise LangDMLError(f"{who}: bad loss arguments {sorted(base_kwargs)} ({exc})") from None

    def project(self, text_embeddings: Tensor) -> Tensor:
        """(n, d_text) (or (n, k, d_text)) name embeddings → (n, d) proxies, with gradients.

        Rows are not normalised; the losses (and cosine retrieval) normalise them.
        """
        text = class_rows(text_embeddings, f"{type(self).__name__}.project", dim=self.text_dim)
        weight = next(self.projection.parameters())
        return self.projection(text.to(weight.device))

    @classmethod
    def from_state_dict(
        cls, state: dict[str, Tensor], embedding_size: int, **kwargs: Any
    ) -> _TextProxyLoss:
        """The loss a ``state_dict()`` of this class was saved from (its training classes' text
        embeddings are part of the state); ``kwargs`` are the constructor's other arguments."""
        if "class_text_embeddings" not in state:
            raise LangDMLError(
                f"{cls.__name__}: the saved state holds no class_text_embeddings "
                f"(keys {sorted(state)[:4]})"
            )
        loss = cls(state["class_text_embeddings"], embedding_size, **kwargs)
        loss.load_state_dict(state)
        return loss

    def text_projection(self) -> TextProjection:
        """The learned text → proxy projection g (the explicit accessor for cross-modal use)."""
        return self.projection

    @property
    def proxies(self) -> Tensor:
        """The current (C, d) proxies of the training classes, g(e_c)."""
        return self.projection(self.class_text_embeddings)

    @property
    def proxy_labels(self) -> Tensor:
        return self.base.proxy_labels

    def proxy_parameters(self) -> list[nn.Parameter]:
        """The projection's parameters: they play the proxies' role and take the proxy lr."""
        return list(self.projection.parameters())

    def forward(
        self, embeddings: Tensor, labels: Tensor, indices_tuple: tuple[Tensor, ...] | None = None
    ) -> Tensor:
        check_proxy_batch(
            embeddings, labels, self.num_classes, self.embedding_size, type(self).__name__
        )
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            proxies = self.proxies
        self.base._external = proxies
        try:
            return self.base(embeddings, labels, indices_tuple)
        finally:
            self.base._external = None

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, text_dim={self.text_dim}, "
            f"embedding_size={self.embedding_size}, projection={self.projection.kind!r}"
        )


class TextProxyAnchorLoss(_TextProxyLoss):
    """Proxy Anchor (Kim et al. 2020) with proxies P_c = g(e_c) projected from class-name text:

    (1/|P⁺|) Σ_{c∈P⁺} log(1 + Σ_{y_i=c} e^{-α(s(z_i,P_c) - δ)})
    + (1/C) Σ_c log(1 + Σ_{y_i≠c} e^{α(s(z_i,P_c) + δ)}),  s = cosine.

    ``TextProxyAnchorLoss(class_text_embeddings (C, d_text), embedding_size, num_classes=None,
    projection="linear"|"mlp", margin=0.1, alpha=32)``; called as ``loss(embeddings, labels)``.
    """

    _inner = _ProjectedProxyAnchor


class TextProxyNCALoss(_TextProxyLoss):
    """ProxyNCA with proxies P_c = g(e_c) projected from class-name text:

    mean_i −log( e^{−s‖z_i − P̂_{y_i}‖²} / Σ_c e^{−s‖z_i − P̂_c‖²} ), P̂ = P/‖P‖, s = softmax_scale
    (``variant="paper"`` drops c = y_i from the denominator, as ProxyNCALoss).
    """

    _inner = _ProjectedProxyNCA


# The registry's text-proxy rows, name → class.
TEXT_PROXY_LOSSES: dict[str, type[_TextProxyLoss]] = {
    name: globals()[LOSSES[name].target.partition(":")[2]] for name in TEXT_PROXY_BASES
}
