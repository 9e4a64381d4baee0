"""What every compat loss shares: PML's extra constructor arguments (distance, reducer,
regularizers), PML's call signature (``ref_emb`` / ``ref_labels``) and the output dtype."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from langdml.errors import LangDMLError
from langdml.losses.inputs import as_compute, check_batch

from ._reference import reference_loss
from .distances import describe, distance_key
from .regularizers import check_regularizer, regularizer_value

LP = ("lp", True, 2.0, 1.0)
LP_SQUARED = ("lp", True, 2.0, 2.0)
COSINE = ("dot", True, 2.0, 1.0)
DOT = ("dot", False, 2.0, 1.0)


def pml_options(
    who: str,
    kwargs: dict[str, Any],
    distances: dict[tuple, dict[str, Any]],
    weight_regularizers: tuple[str, ...] = (),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(native kwargs implied by ``distance=``, the regularizer settings) from PML's keyword
    arguments; anything langdml does not implement raises one line naming it."""
    kwargs = dict(kwargs)
    native: dict[str, Any] = {}
    distance = kwargs.pop("distance", None)
    if distance is not None:
        key = distance_key(distance)
        if key not in distances:
            accepted = ", ".join(describe(k) for k in distances)
            raise LangDMLError(
                f"{who}: distance={describe(key)} is not supported; this loss computes {accepted}"
            )
        native.update(distances[key])
    reducer = kwargs.pop("reducer", None)
    if reducer is not None:
        raise LangDMLError(
            f"{who}: reducer={type(reducer).__name__} is not supported; the loss always reduces "
            "as PML's default reducer for it"
        )
    if kwargs.pop("collect_stats", False):
        raise LangDMLError(f"{who}: collect_stats=True is not supported (no recorded stats)")
    if kwargs.pop("weight_init_func", None) is not None:
        raise LangDMLError(f"{who}: weight_init_func is not supported; set .proxies in place")
    regs = {
        "embedding": (
            kwargs.pop("embedding_regularizer", None),
            kwargs.pop("embedding_reg_weight", 1),
        ),
        "weight": (kwargs.pop("weight_regularizer", None), kwargs.pop("weight_reg_weight", 1)),
    }
    if regs["embedding"][0] is not None:
        check_regularizer(regs["embedding"][0], ("LpRegularizer",), who, "embedding_regularizer")
    if regs["weight"][0] is not None:
        if not weight_regularizers:
            raise LangDMLError(f"{who}: weight_regularizer is not supported (no class weights)")
        check_regularizer(regs["weight"][0], weight_regularizers, who, "weight_regularizer")
    if kwargs:
        raise LangDMLError(f"{who}: argument(s) {sorted(kwargs)} not supported")
    return native, regs


class PMLCompatLoss:
    """Mixin over a langdml loss: PML's ``forward(embeddings, labels, indices_tuple, ref_emb,
    ref_labels)``, regularizers added, the value returned in the embeddings' dtype (computed
    in float32, or float64 for float64 input). ``supports_ref``: the pair losses for which PML
    takes ``ref_emb``."""

    supports_ref = False
    _regs: dict[str, tuple[Any, float]]

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor | None = None,
        indices_tuple: tuple[Tensor, ...] | None = None,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Tensor:
        who = type(self).__name__
        if labels is None:
            raise LangDMLError(f"{who}: labels are required (label-free losses are not supported)")
        if ref_emb is None and ref_labels is not None:
            raise LangDMLError(f"{who}: ref_labels given without ref_emb; pass both or neither")
        if ref_emb is None:
            value = super().forward(embeddings, labels, indices_tuple)  # type: ignore[misc]
        else:
            value = self._against_reference(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        value = value + self._regularization(embeddings)
        return value.to(embeddings.dtype)

    def _against_reference(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        who = type(self).__name__
        if not self.supports_ref:
            raise LangDMLError(f"{who}: ref_emb is not supported for this loss function")
        if ref_labels is None:
            raise LangDMLError(f"{who}: ref_emb needs ref_labels (one label per reference row)")
        check_batch(embeddings, labels, who)
        check_batch(ref_emb, ref_labels, f"{who} (reference)")
        same = ref_labels is labels
        device = embeddings.device
        x = as_compute(embeddings)
        return reference_loss(
            self,  # type: ignore[arg-type]
            x,
            labels.to(device).long(),
            ref_emb.to(device),
            ref_labels.to(device).long(),
            indices_tuple,
            same,
        )

    def _regularization(self, embeddings: Tensor) -> Tensor | float:
        total: Tensor | float = 0.0
        reg, weight = self._regs["embedding"]
        if reg is not None:
            total = total + weight * regularizer_value(reg, as_compute(embeddings))
        reg, weight = self._regs["weight"]
        if reg is not None:
            proxies = self.proxies  # type: ignore[attr-defined]
            rows = proxies.to(as_compute(embeddings).dtype)
            groups = (self.num_classes, self.proxies_per_class)  # type: ignore[attr-defined]
            total = total + weight * regularizer_value(reg, rows, groups)
        return total
