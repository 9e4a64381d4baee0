"""Normalized softmax loss (Zhai & Wu, "Classification is a Strong Baseline for Deep Metric
Learning", BMVC 2019)."""

from __future__ import annotations

from torch import Tensor

from ._class_weights import ClassWeightLoss, check_positive, softmax_cross_entropy_
from ._fused import ValueAndGrad


class NormalizedSoftmaxLoss(ClassWeightLoss):
    """Normalized softmax (Zhai & Wu, BMVC 2019), pytorch-metric-learning's NormalizedSoftmaxLoss:

        L = mean_i -log( e^{cos(x_i, W_{y_i}) / T} / Σ_j e^{cos(x_i, W_j) / T} )

    cosines of L2-normalised embeddings and class weights W (``proxies``, (num_classes,
    embedding_size), PML's ``W`` transposed, drawn from N(0, 1) in the same order), T =
    ``temperature`` (the paper's 0.05).

    Valid values: num_classes, embedding_size ints >= 1; temperature > 0.
    """

    def __init__(self, num_classes: int, embedding_size: int, temperature: float = 0.05) -> None:
        super().__init__(num_classes, embedding_size)
        check_positive("NormalizedSoftmaxLoss", temperature=temperature)
        self.temperature = float(temperature)

    def logit_scale(self) -> float:
        return 1.0 / self.temperature

    def logit_fn(self, labels: Tensor, weights: Tensor | None) -> ValueAndGrad:
        # cosines in [-1, 1]: the logits lie within ±1/T
        bounds = (-1.0 / self.temperature, 1.0 / self.temperature)

        def value_and_grad(logits: Tensor) -> tuple[Tensor, Tensor]:
            return softmax_cross_entropy_(logits, labels, weights, bounds=bounds)

        return value_and_grad
