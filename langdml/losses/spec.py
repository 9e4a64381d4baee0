"""The one loss schema: the ``loss:`` section of an experiment config, which ``build_loss`` also
takes directly (typed, or as the same mapping).

Names are checked against :mod:`langdml.losses.registry` when the config is read, so a bad base
loss, regularizer or direction form is one line before any data is loaded. Torch-free.

``regularizers`` lists names; each regularizer's settings live in its own block ``loss.<name>``
(``loss.language``, ``loss.direction``). The blocks are not listed here: :class:`LossConfig` is
built with ``pydantic.create_model`` from the rows of the registry's ``REGULARIZERS``, one field
per row whose type is the row's settings model (its fields, defaults, bounds and descriptions),
so adding a regularizer never edits this module. A list item may also be a mapping
``{name: language, weight: 5, ...}``: its settings then move into that block (the short form
``build_loss`` callers of earlier releases wrote).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from .registry import REGULARIZERS, check_base, check_regularizer


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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


class _LossConfigBase(_Strict):
    """The fields every loss config has; :data:`LossConfig` adds one block per regularizer."""

    base: BaseLossConfig = Field(default_factory=BaseLossConfig)
    regularizers: list[str] = Field(
        default_factory=list,
        description="Terms added to the base loss: none, or any of "
        f"{' / '.join(REGULARIZERS)}, as a list or joined by + (e.g. {'+'.join(REGULARIZERS)}).",
    )

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
                settings = {k: v for k, v in item.items() if k != "name"}
                # the short form's weight defaulted to 1 for every regularizer
                settings.setdefault("weight", 1.0)
                tree[name] = {**dict(tree.get(name) or {}), **settings}
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
    def _applies(self) -> _LossConfigBase:
        """Each listed regularizer's settings say whether it applies to this base loss."""
        for name in self.regularizers:
            getattr(self, name).check_base(self.base.name)
        return self


def _regularizer_blocks() -> dict[str, Any]:
    """One ``loss.<name>`` field per registry row, typed by the row's settings model."""
    taken = {*_LossConfigBase.model_fields, "s2sd"}
    blocks: dict[str, Any] = {}
    for name, entry in REGULARIZERS.items():
        if name in taken or not name.isidentifier():
            raise ValueError(f"regularizer name {name!r} cannot be a loss config block")
        model = entry.load_settings()
        blocks[name] = (
            model,
            Field(
                default_factory=model,
                description=f"Settings of the {name!r} regularizer (used when "
                "loss.regularizers lists it).",
            ),
        )
    return blocks


LossConfig = create_model(
    "LossConfig",
    __base__=_LossConfigBase,
    __module__=__name__,
    **_regularizer_blocks(),
    s2sd=(S2SDConfig, Field(default_factory=S2SDConfig)),
)
