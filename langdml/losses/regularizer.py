"""What a regularizer provides: its settings model, which is also its builder.

A regularizer is an nn.Module (its formula) and a torch-free settings module holding one
:class:`RegularizerSettings` subclass: its fields are the ``loss.<name>`` config block (each a
``Field(default, description=...)``, so the config reference shows them), ``check_base`` says
which base losses it applies to, and ``build`` turns the settings into the term (importing the
nn.Module only then, so the config validates without torch). One row of
:data:`langdml.losses.registry.REGULARIZERS` names the settings class; the ``loss:`` schema
(:mod:`langdml.losses.spec`) and ``build_loss`` take every regularizer from that table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from torch import Tensor, nn


@dataclass(frozen=True)
class BuildContext:
    """What a regularizer's ``build`` may need besides its settings: the base loss's config
    entry (``name`` and its arguments) and the sizes and class texts given to ``build_loss``."""

    base_entry: Mapping[str, Any]
    num_classes: int | None = None
    embedding_size: int | None = None
    class_text_embeddings: Tensor | None = None

    @property
    def base_name(self) -> str:
        return str(self.base_entry["name"])


class RegularizerSettings(BaseModel):
    """The base of every regularizer's settings: unknown keys are errors, assignments validated.
    A subclass declares its ``weight`` (its own default) and further fields, and implements
    ``build``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def check_base(self, base: str) -> None:
        """Raise ValueError (one line naming ``base`` and the accepted ones) when this
        regularizer, with these settings, does not apply to the base loss ``base``."""

    def build(self, base: nn.Module, context: BuildContext) -> tuple[nn.Module, nn.Module, float]:
        """(base, term module, weight): the term CombinedLoss adds as weight × term. A builder
        may return a different base (the integrated direction form replaces it)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement build()")
