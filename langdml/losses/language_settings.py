"""The ``loss.language`` block: the language-guidance regularizer's settings and its builder
(a :class:`~langdml.losses.language.LanguageGuidanceLoss` term). Torch-free until ``build``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from .regularizer import BuildContext, RegularizerSettings

if TYPE_CHECKING:
    from torch import nn


class LanguageConfig(RegularizerSettings):
    weight: float = Field(1.0, ge=0, description="Weight of the language-guidance term.")
    temperature: float = Field(
        1.0, gt=0, description="Softmax temperature of the image and language similarities."
    )
    shift: float = Field(
        1.0,
        description="Added to the language similarities; same-class entries are 1 + shift on "
        "both sides.",
    )
    direction: Literal["backward", "forward"] = Field(
        "backward",
        description="KL direction: backward KL(P_img || P_lang) (the authors' code default) "
        "or forward KL(P_lang || P_img).",
    )
    mode: Literal["batch", "proxy"] = Field(
        "batch",
        description="batch: KL over the batch's sample similarities; proxy: over the proxies' "
        "similarities (proxy-based base losses).",
    )
    # Control: each train class gets the text embedding of another train class (a permutation
    # seeded by the run's seed), so the target keeps its similarity spectrum but loses meaning.
    shuffled_names: bool = Field(
        False,
        description="Control: each train class gets another train class's text embedding "
        "(a permutation seeded by the run seed).",
    )

    def loss_arguments(self) -> dict[str, Any]:
        """The LanguageGuidanceLoss constructor arguments (weight and the control are not)."""
        return self.model_dump(exclude={"weight", "shuffled_names"})

    def build(self, base: nn.Module, context: BuildContext) -> tuple[nn.Module, nn.Module, float]:
        """(base, LanguageGuidanceLoss over the class texts, weight)."""
        from langdml.errors import ConfigError

        from ._construct import construct
        from .language import LanguageGuidanceLoss

        text = context.class_text_embeddings
        if text is None:
            raise ConfigError(
                "regularizer 'language' needs class_text_embeddings (precompute them first)"
            )
        module = construct(
            lambda **kw: LanguageGuidanceLoss(text, **kw),
            {**self.loss_arguments(), "num_classes": context.num_classes},
            "regularizer 'language'",
        )
        return base, module, float(self.weight)
