"""The one loss schema: the ``loss:`` section of an experiment config, which ``build_loss`` also
takes directly (typed, or as the same mapping).

Names are checked against :mod:`langdml.losses.registry` when the config is read, so a bad base
loss, regularizer or direction form is one line before any data is loaded. Torch-free.

``regularizers`` lists names; each regularizer's settings live in its own block
(``loss.language``, ``loss.direction``). A list item may also be a mapping
``{name: language, weight: 5, ...}``: its settings then move into that block (the short form
``build_loss`` callers of earlier releases wrote).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .registry import REGULARIZERS, check_base, check_direction_form, check_regularizer


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LanguageConfig(_Strict):
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


class DirectionConfig(_Strict):
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


class BaseLossConfig(BaseModel):
    # Extra keys are the loss's constructor arguments, checked against its signature at build time.
    model_config = ConfigDict(extra="allow", validate_assignment=True)
    name: str = Field(
        "multi_similarity",
        description="Base loss: a langdml.losses name (multi_similarity, proxy_anchor, triplet, "
        "arcface, ...) or pml:ClassName (the pml extra).",
    )

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        check_base(value)
        return value


class S2SDConfig(_Strict):
    """S2SD (Roth et al., ICML 2021; langdml.losses.S2SDLoss): auxiliary MLP heads of these
    sizes are trained with the base loss and distilled into the target embedding; empty = off.
    Defaults of the authors' code: T = 1, weight 50, feature weight 50 after 1000 steps."""

    dims: list[int] = Field(
        default_factory=list, description="Auxiliary head sizes, e.g. [512, 1024]; [] = off."
    )
    temperature: float = Field(1.0, gt=0, description="Softmax temperature of the distillation.")
    weight: float = Field(50.0, ge=0, description="Weight of the head-to-target distillation.")
    feature_weight: float = Field(
        50.0, ge=0, description="Weight of the feature-to-target distillation."
    )
    feature_delay: int = Field(
        1000, ge=0, description="Training steps before feature distillation starts."
    )

    @field_validator("dims")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(d < 2 for d in value):
            raise ValueError(f"every S2SD head size must be >= 2, got {value}")
        return value


class LossConfig(_Strict):
    base: BaseLossConfig = Field(default_factory=BaseLossConfig)
    regularizers: list[str] = Field(
        default_factory=list,
        description="Terms added to the base loss: none, language, direction or "
        "language+direction (a list works too).",
    )
    language: LanguageConfig = Field(default_factory=LanguageConfig)
    direction: DirectionConfig = Field(default_factory=DirectionConfig)
    s2sd: S2SDConfig = Field(default_factory=S2SDConfig)

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, tree: Any) -> Any:
        """``base: NAME`` and ``regularizers: [{name: ..., <settings>}]`` → the long form."""
        if not isinstance(tree, dict):
            return tree
        tree = dict(tree)
        if isinstance(tree.get("base"), str):
            tree["base"] = {"name": tree["base"]}
        items = tree.get("regularizers")
        if isinstance(items, (list, tuple)) and any(isinstance(i, dict) for i in items):
            names = []
            for item in items:
                if not isinstance(item, dict):
                    names.append(item)
                    continue
                if "name" not in item:
                    raise ValueError(f"regularizer {item!r}: expected a 'name' key")
                name = str(item["name"])
                check_regularizer(name)
                section = REGULARIZERS[name].section
                settings = {k: v for k, v in item.items() if k != "name"}
                # the short form's weight defaulted to 1 for every regularizer
                settings.setdefault("weight", 1.0)
                tree[section] = {**dict(tree.get(section) or {}), **settings}
                names.append(name)
            tree["regularizers"] = names
        return tree

    @field_validator("regularizers", mode="before")
    @classmethod
    def _parse_regularizers(cls, value: Any) -> list[str]:
        """Accept a list, ``"none"``, or ``"language+direction"`` (the ablation grid's spelling)."""
        if value is None:
            return []
        if isinstance(value, str):
            value = [] if value.strip().lower() in ("", "none") else value.split("+")
        names = [str(v).strip() for v in value]
        for n in names:
            check_regularizer(n)
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"regularizer {twice[0]!r} given twice; list each regularizer once")
        return names

    @model_validator(mode="after")
    def _applies(self) -> LossConfig:
        if "direction" in self.regularizers:
            check_direction_form(self.base.name, self.direction.form)
        return self
