"""ProxyNCA++ (Teh, DeVries & Taylor, "ProxyNCA++: Revisiting and Revitalizing Proxy Neighborhood
Component Analysis", ECCV 2020)."""

from __future__ import annotations

import math

import torch

from langdml.errors import LangDMLError

from .proxy_nca import ProxyNCALoss


class ProxyNCAPlusPlusLoss(ProxyNCALoss):
    """ProxyNCA++ (Teh et al., ECCV 2020), the loss of its Eq. 4 with the temperature of §3.2:

        L = mean_i -log( e^{-‖x̂_i - p̂_{y_i}‖² / T} / Σ_{a∈A} e^{-‖x̂_i - p̂_a‖² / T} )

    x̂, p̂ the L2-normalised embeddings and proxies, A all proxies, T = ``temperature``.

    What the loss implements from the paper: the proxy assignment probability (§3.1: the
    positive proxy p_y is part of the denominator, unlike ProxyNCA's paper form, so the loss is
    -log P(y | x) of a softmax over all proxies), the low temperature (§3.2; default T = 1/9,
    the official code's scale 3 on both sides), one proxy per class drawn as the official code
    draws them (N(0, 1) / 8). Fast-moving proxies (§3.4) are the trainer's proxy learning-rate
    multiplier (``proxy_parameters()``); global max pooling (§3.3) and the layer norm of the
    embedding belong to the model, not the loss. Not implemented: the paper's optional
    class-balanced sampling and learning-rate schedule.

    A mined ``indices_tuple`` weights samples as ProxyNCALoss does. Proxy-level language
    guidance reads ``proxies`` / ``proxy_labels``.

    Valid values: num_classes, embedding_size ints >= 1; temperature a finite number > 0.
    """

    def __init__(
        self, num_classes: int, embedding_size: int, temperature: float = 1.0 / 9.0
    ) -> None:
        if not (
            isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0
        ):
            raise LangDMLError(
                "ProxyNCAPlusPlusLoss: temperature must be a finite number > 0, "
                f"got {temperature!r}"
            )
        super().__init__(num_classes, embedding_size, softmax_scale=1.0 / float(temperature))
        self.temperature = float(temperature)
        with torch.no_grad():
            self.proxies.normal_().div_(8.0)
