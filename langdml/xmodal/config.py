"""The settings of a cross-modal evaluation, validated like the experiment config.

:class:`XmodalConfig` is the one place the xmodal settings, their defaults and help texts are
written: the ``langdml xmodal`` flags are generated from its fields, the Python functions in
:mod:`langdml.xmodal.methods` validate their keyword arguments with it (an unknown or misspelled
one is an error naming the nearest valid key), and :mod:`langdml.xmodal.align` takes its trainer
defaults from it. Importing this module loads no torch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from langdml.config import _format_error
from langdml.errors import ConfigError, LangDMLError
from langdml.losses.registry import TEXT_PROXY_BASES

METHODS = ("clip", "aligned", "text_proxies", "zeroshot")
Method = Literal["clip", "aligned", "text_proxies", "zeroshot"]
TextProxyLoss = Literal[TEXT_PROXY_BASES]  # type: ignore[valid-type]
RUN_METHODS = ("aligned", "text_proxies")

# Settings whose default depends on the method (None in the config means "the method's").
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "clip": {"batch_size": 64, "text_model": "clip:ViT-B-32/openai"},
    "aligned": {"temperature": 0.2, "batch_size": 256},
    "text_proxies": {"batch_size": 128},
    "zeroshot": {"temperature": 1.0, "text_model": "minilm"},
}


def _cli(help: str, flag: str | None = None, **extra: Any) -> dict[str, Any]:
    """Field metadata: the CLI help text (and flag name when it is not --field-name)."""
    return {"cli": {"help": help, **({"flag": flag} if flag else {}), **extra}}


class XmodalConfig(BaseModel):
    """Every setting of ``langdml xmodal`` and of the ``xmodal_*`` functions."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    method: Method = Field(..., json_schema_extra=_cli("cross-modal method"))
    dataset: str | None = Field(
        None, json_schema_extra=_cli("dataset spec (default emoji, or the run's with --run)")
    )
    run_dir: str | None = Field(
        None,
        json_schema_extra=_cli(
            "aligned/text_proxies: a langdml train run directory for the image side",
            flag="--run",
            metavar="RUN_DIR",
        ),
    )
    checkpoint: Literal["last", "best", "final"] = Field(
        "last",
        json_schema_extra=_cli("with --run: which checkpoint (final: the old word for last)"),
    )

    @field_validator("checkpoint")
    @classmethod
    def _old_checkpoint_word(cls, value: str) -> str:
        from langdml.experiment.run_files import checkpoint_word

        return checkpoint_word(value)

    split: Literal["test", "val"] | None = Field(
        None,
        json_schema_extra=_cli(
            "with --run: held-out classes to evaluate (default: the run's own eval split)"
        ),
    )
    text_model: str | None = Field(
        None,
        json_schema_extra=_cli(
            "text model (default minilm, or the run's; clip: required, a clip:... spec)",
            metavar="TEXTMODEL",
        ),
    )
    prompts: list[str] | None = Field(
        None,
        json_schema_extra=_cli(
            "prompt with {} for the name (default 'a photo of a {}'); repeatable",
            flag="--prompt",
            metavar="TEMPLATE",
        ),
    )
    text_embeddings: str | None = Field(
        None,
        json_schema_extra=_cli(
            "a langdml precompute cache file holding every needed class name", metavar="FILE"
        ),
    )
    image_size: int = Field(128, ge=16, json_schema_extra=_cli("frozen-feature image size"))
    train_fraction: float = Field(0.5, gt=0, lt=1, json_schema_extra=_cli("train classes"))
    loss: TextProxyLoss = Field("text_proxy_anchor", json_schema_extra=_cli("text_proxies loss"))
    loss_kwargs: dict[str, Any] | None = None  # Python only: the loss's constructor arguments
    image_head: Literal["linear", "mlp", "none"] = Field(
        "linear", json_schema_extra=_cli("image head on frozen features (without --run)")
    )
    embedding_dim: int = Field(128, ge=2, json_schema_extra=_cli("joint space dimension"))
    projection: Literal["linear", "mlp"] = Field(
        "linear", json_schema_extra=_cli("text head / text-proxy projection")
    )
    temperature: float | None = Field(
        None,
        gt=0,
        json_schema_extra=_cli(
            "aligned: InfoNCE temperature (0.2); zeroshot: softmax temperature (1)"
        ),
    )
    epochs: int = Field(40, ge=1, json_schema_extra=_cli("training epochs (aligned, text_proxies)"))
    batch_size: int | None = Field(
        None, ge=1, json_schema_extra=_cli("batch size (aligned 256, text_proxies 128, clip 64)")
    )
    lr: float = Field(1e-3, gt=0, json_schema_extra=_cli("learning rate"))
    proxy_lr_multiplier: float = Field(
        10.0, gt=0, json_schema_extra=_cli("text_proxies: learning-rate factor of the projection")
    )
    weight_decay: float = Field(1e-4, ge=0, json_schema_extra=_cli("AdamW weight decay"))
    seed: int = Field(0, json_schema_extra=_cli("seed"))
    device: str = Field("cpu", json_schema_extra=_cli("cpu, cuda or cuda:N"))
    cache_dir: str | None = Field(
        None, json_schema_extra=_cli("cache root (default $LANGDML_CACHE or cache)")
    )

    @model_validator(mode="after")
    def _applies(self) -> XmodalConfig:
        if self.run_dir is not None and self.method not in RUN_METHODS:
            raise ValueError(f"--run does not apply to method {self.method!r}")
        if self.method == "text_proxies" and self.temperature is not None:
            raise ValueError(
                "--temperature applies to methods aligned and zeroshot, not text_proxies"
            )
        if self.split not in (None, "test") and self.run_dir is None:
            raise ValueError(
                f"split {self.split!r} needs a run (--run); without one the test split is used"
            )
        return self

    def get(self, key: str) -> Any:
        """A setting with the method's default filled in where the config holds None."""
        value = getattr(self, key)
        return METHOD_DEFAULTS[self.method].get(key) if value is None else value


def method_default(method: str, key: str) -> Any:
    """The default of ``key`` for ``method`` (a field default or the method's own)."""
    if key in METHOD_DEFAULTS[method]:
        return METHOD_DEFAULTS[method][key]
    return XmodalConfig.model_fields[key].default


def xmodal_config(method: str, **settings: Any) -> XmodalConfig:
    """Validate settings; an unknown key is a LangDMLError naming the nearest valid one."""
    if method not in METHODS:
        raise LangDMLError(f"unknown cross-modal method {method!r}; expected one of {METHODS}")
    for key in ("run_dir", "cache_dir", "text_embeddings"):
        if settings.get(key) is not None:
            settings[key] = str(settings[key])
    if isinstance(settings.get("prompts"), str):
        settings["prompts"] = [settings["prompts"]]
    try:
        return XmodalConfig(method=method, **settings)
    except ValidationError as exc:
        err = exc.errors()[0]
        if err["type"] == "value_error":
            raise LangDMLError(err["msg"].removeprefix("Value error, ")) from None
        message = _format_error(err, XmodalConfig).replace("config key", "xmodal setting")
        raise ConfigError(message) from None


def cli_fields() -> dict[str, dict[str, Any]]:
    """Field name → its CLI metadata, for the settings that have a flag."""
    out = {}
    for name, field in XmodalConfig.model_fields.items():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and "cli" in extra:
            out[name] = extra["cli"]
    return out
