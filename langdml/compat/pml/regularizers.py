"""PML's regularizer classes as settings for the compat losses (``embedding_regularizer=`` on
every loss, ``weight_regularizer=`` on the losses with class weights / proxies). Their value,
written from PML's documented definitions:

* ``LpRegularizer(p=2, power=1)``: mean over rows of ||v||_p ** power (rows: the raw
  embeddings, or the class weights / proxies).
* ``SparseCentersRegularizer(num_classes, centers_per_class)`` (SoftTripleLoss's centres):
  sum over the same-class centre pairs k < k' of sqrt(2 + tiny - min(2 cos(w_k, w_k'), 2)),
  divided by num_classes · K · (K - 1); ``tiny`` is the dtype's smallest normal number (PML's
  choice; langdml's own ``SoftTripleLoss(tau=...)`` adds the authors' 1e-5 instead).

PML's own regularizer objects are read the same way (class name and attributes); others raise.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from langdml.errors import LangDMLError


class LpRegularizer:
    def __init__(self, p: float = 2, power: float = 1) -> None:
        self.p = p
        self.power = power


class SparseCentersRegularizer:
    def __init__(self, num_classes: int, centers_per_class: int) -> None:
        if not isinstance(centers_per_class, int) or centers_per_class < 2:
            raise LangDMLError(
                f"SparseCentersRegularizer: centers_per_class must be an int > 1, "
                f"got {centers_per_class!r}"
            )
        self.num_classes = num_classes
        self.centers_per_class = centers_per_class


def regularizer_value(reg: Any, rows: Tensor, groups: tuple[int, int] | None = None) -> Tensor:
    """The regularizer's value on ``rows`` (N, d); ``groups`` = (num_classes, centers per
    class) of the rows, for SparseCentersRegularizer (the loss's own, which PML's must match)."""
    name = type(reg).__name__
    if name == "LpRegularizer":
        norms = torch.linalg.vector_norm(rows, ord=float(reg.p), dim=1)
        power = float(reg.power)
        return (norms if power == 1 else norms**power).mean()
    if name == "SparseCentersRegularizer":
        if groups is None or groups[1] < 2:
            raise LangDMLError("SparseCentersRegularizer needs several centres per class")
        c, k = groups
        w = torch.nn.functional.normalize(rows, dim=1).view(c, k, -1)
        upper = torch.triu(torch.ones(k, k, dtype=torch.bool, device=rows.device), diagonal=1)
        cos = (w @ w.transpose(1, 2))[:, upper]
        tiny = torch.finfo(rows.dtype).tiny
        return torch.sqrt(2.0 + tiny - (2.0 * cos).clamp(max=2.0)).sum() / (c * k * (k - 1))
    raise LangDMLError(
        f"regularizer {name} is not supported; expected LpRegularizer or "
        "SparseCentersRegularizer (SoftTripleLoss)"
    )


def check_regularizer(reg: Any, allowed: tuple[str, ...], who: str, arg: str) -> None:
    name = type(reg).__name__
    if name not in allowed:
        raise LangDMLError(f"{who}: {arg}={name} is not supported; expected one of {list(allowed)}")
