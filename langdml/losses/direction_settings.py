"""The ``loss.direction`` block: the direction regularizer's settings and its builder — form
"integrated" swaps the base for its DR form (:mod:`langdml.losses.dr_losses`), form
"orthogonal" adds our :class:`~langdml.losses.direction.DirectionRegularizer` penalty.
Torch-free until ``build``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import ConfigDict, Field, field_validator

from .registry import DR_BASES
from .regularizer import BuildContext, RegularizerSettings

if TYPE_CHECKING:
    from torch import nn


class DirectionConfig(RegularizerSettings):
    # integrated: DR-Triplet / DR-ProxyNCA / DR-MS, weight = γ inside the base loss (the public
    # reproductions use γ ≈ 0.3-0.49); orthogonal: the project's own additive penalty.
    weight: float = Field(0.3, ge=0, description="γ (integrated) or the penalty's weight.")
    form: Literal["integrated", "orthogonal"] = Field(
        "integrated",
        description="integrated: DR inside a triplet / proxy_nca / multi_similarity base; "
        "orthogonal: an additive penalty for any base.",
    )
    model_config = ConfigDict(extra="allow", validate_assignment=True)  # form-specific options

    @field_validator("form", mode="before")
    @classmethod
    def _removed_form(cls, value: Any) -> Any:
        if value == "reproduction":
            raise ValueError(
                "form 'reproduction' was removed: it was an additive -mean cos term, not the "
                "reproductions' form; use 'integrated' (DR inside triplet / proxy_nca / "
                "multi_similarity) or 'orthogonal' (the project's own penalty)"
            )
        return value

    def loss_arguments(self) -> dict[str, Any]:
        """The DirectionRegularizer / integrated-form arguments besides the weight."""
        return self.model_dump(exclude={"weight"})

    def check_base(self, base: str) -> None:
        """The integrated form exists only for the bases with a DR class."""
        if self.form == "integrated" and base not in DR_BASES:
            raise ValueError(
                f"regularizer 'direction' (form 'integrated') exists only for bases "
                f"{list(DR_BASES)}, not {base!r}; use form 'orthogonal' (our additive penalty) "
                "with other bases"
            )

    def build(self, base: nn.Module, context: BuildContext) -> tuple[nn.Module, nn.Module, float]:
        """(base, DirectionRegularizer, weight) for form "orthogonal"; for "integrated" (DR form
        of the base with γ = weight, a weight-0 module logging its cos θ, 0)."""
        from langdml.errors import ConfigError

        from ._construct import construct
        from .direction import DirectionRegularizer
        from .dr_losses import IntegratedDirectionLog, to_integrated_direction

        kwargs = self.loss_arguments()
        form, weight = kwargs.pop("form"), float(self.weight)
        if form == "orthogonal":
            return base, construct(DirectionRegularizer, kwargs, "regularizer 'direction'"), weight
        where = "regularizer 'direction' (form 'integrated')"
        if kwargs:
            raise ConfigError(f"{where} takes only 'weight' (= γ), got {sorted(kwargs)}")
        if getattr(base, "gamma", None) is not None:
            raise ConfigError(f"{where} given twice; list one direction entry")
        dr_base = to_integrated_direction(base, weight)
        return dr_base, IntegratedDirectionLog(dr_base), 0.0
