"""Reopening a finished run: :class:`Run`, the one record of a trained run that ``evaluate``,
cross-modal evaluation, inference and the report use: its config (older keys migrated), model
with a checkpoint's weights, the loss that holds a text-proxy run's projection, and its data
split on first use."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from langdml.config import ExperimentConfig, load_yaml, migrate_config, validate_config
from langdml.devices import usable_device
from langdml.errors import ConfigError, LangDMLError
from langdml.experiment.assemble import build_model, text_proxy_loss
from langdml.experiment.class_text import class_text_embeddings, needs_text, uses_text_proxies
from langdml.experiment.run_data import NO_BEST, RunData, has_validation, prepare_data
from langdml.experiment.run_files import (
    CHECKPOINT,
    CHECKPOINTS,
    CONFIG,
    PREVIOUS,
    checkpoint_word,
    load_into,
    open_checkpoint,
)
from langdml.io import file_sha256
from langdml.models import EmbeddingModel


def load_run_config(run_dir: str | Path) -> ExperimentConfig:
    """A run's resolved config; keys of older releases are migrated (one deprecation line)."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no {CONFIG})")
    return validate_config(migrate_config(load_yaml(path), source=str(path)))


_R = TypeVar("_R", bound="Run")


@dataclass(eq=False)
class Run:
    """A finished run, reopened: its config, the model with the checkpoint's weights and, for
    text-proxy runs, the base loss rebuilt from the checkpoint (its projection is the run's text
    side); ``data`` (its class split and cached features) is prepared on first use only, so
    inference on a gallery it did not train on never loads the training dataset."""

    run_dir: Path
    config: ExperimentConfig
    model: EmbeddingModel
    epoch: int
    checkpoint: str  # "last" or "best"
    loss_state: dict[str, torch.Tensor]
    checkpoint_file: Path  # the file loaded (checkpoint.prev.pt after a fallback)
    loss: torch.nn.Module | None = None
    text_embeddings: torch.Tensor | None = None
    prepared: RunData | None = field(default=None, repr=False)
    eval_part: str | None = None  # the split ``data`` evaluates on; None: the run's own

    @classmethod
    def open(
        cls: type[_R],
        run_dir: str | Path,
        checkpoint: str = "last",
        *,
        split: str | None = None,
        device: str | None = None,
    ) -> _R:
        """Reopen a trained run: config and model (weights loaded with ``weights_only=True``).

        ``checkpoint``: "last" or "best" ("final", the old word for "last", still works with
        one deprecation line); "last" falls back to checkpoint.prev.pt, with one warning line,
        when checkpoint.pt is damaged or missing (``run_files``). ``split``: None = the run's own
        evaluation split, "test" = the test classes, "val" = its validation classes.
        """
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise LangDMLError(f"run directory {str(run_dir)!r} does not exist")
        checkpoint = checkpoint_word(checkpoint)
        cfg = load_run_config(run_dir)
        _check_open_args(run_dir, cfg, checkpoint, split)
        if split == "test":
            cfg.data.validation_fraction = 0.0
            cfg.data.fold = 0  # before folds: each assignment is validated
            cfg.data.folds = 0
        cfg.train.progress = False
        if device is not None:
            cfg.train.device = usable_device(device)
        path, state = open_checkpoint(run_dir, checkpoint)
        model = build_model(cfg, in_dim=head_input_dim(cfg, state["model"]))
        load_into(model, state["model"], path, cfg)
        model.to(cfg.train.device)
        loss_state = dict(state.get("loss", {}))
        epoch = int(state.get("epoch", 0))
        run = cls(run_dir, cfg, model, epoch, checkpoint, loss_state, path, eval_part=split)
        if uses_text_proxies(cfg):
            run.loss = text_proxy_loss(cfg, loss_state)
            run.text_embeddings = run.loss.class_text_embeddings
        return run

    @property
    def data(self) -> RunData:
        """The run's class split (and cached features), prepared on first use."""
        if self.prepared is None:
            self.prepared = prepare_data(self.config, self.eval_part)
        return self.prepared

    @property
    def embedding_dim(self) -> int:
        return int(self.config.model.embedding_dim)

    @property
    def has_text(self) -> bool:
        """Whether the run learned a text side (a text-proxy base loss)."""
        return uses_text_proxies(self.config)

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the model: its config file and the checkpoint file its weights came
        from (SHA-256 prefixes; checkpoint.prev.pt when checkpoint.pt was damaged)."""
        return {
            "run_dir": str(self.run_dir.resolve()),
            "config_sha256": file_sha256(self.run_dir / CONFIG)[:16],
            "checkpoint": self.checkpoint_file.name,
            "checkpoint_sha256": file_sha256(self.checkpoint_file)[:16],
            "epoch": self.epoch,
        }

    def training_text_embeddings(self) -> torch.Tensor | None:
        """The train classes' text embeddings the run trained with (from the text cache;
        None when it used no text)."""
        if self.text_embeddings is None and needs_text(self.config):
            self.text_embeddings = class_text_embeddings(self.config, self.data.train)
        return self.text_embeddings

    def text_projection(self) -> torch.nn.Module | None:
        """The text → proxy projection a text-proxy run learned, in eval mode; else None."""
        proj = None if self.loss is None else self.loss.text_projection()
        return None if proj is None else proj.eval()


def head_input_dim(cfg: ExperimentConfig, model_state: dict[str, torch.Tensor]) -> int:
    """The feature size the saved head reads (its first layer's input), so a frozen-trunk run
    rebuilds its model without extracting any feature."""
    for key in ("head.net.weight", "head.net.0.weight"):  # linear, mlp
        if key in model_state:
            return int(model_state[key].shape[1])
    return int(cfg.model.embedding_dim)  # identity head: features are the embedding


def _check_open_args(run_dir: Path, cfg: ExperimentConfig, checkpoint: str, split) -> None:
    if checkpoint not in CHECKPOINTS:
        raise LangDMLError(f"checkpoint must be 'last' or 'best', got {checkpoint!r}")
    ckpt = run_dir / CHECKPOINTS[checkpoint]
    if checkpoint == "best" and not has_validation(cfg):
        raise LangDMLError(f"run {str(run_dir)!r} has no best checkpoint: {NO_BEST}")
    if not ckpt.is_file() and not (ckpt.name == CHECKPOINT and (run_dir / PREVIOUS).is_file()):
        raise LangDMLError(f"{run_dir} has no {ckpt.name}; train it first: langdml train {run_dir}")
    if split not in (None, "test", "val"):
        raise LangDMLError(f"split must be 'test' or 'val', got {split!r}")
    if split == "val" and not has_validation(cfg):
        raise LangDMLError(
            f"run {str(run_dir)!r} has no validation split (data.validation_fraction and "
            "data.folds are 0, and no split file names val rows)"
        )


def open_run(
    run_dir: str | Path,
    checkpoint: str = "last",
    *,
    split: str | None = None,
    device: str | None = None,
) -> Run:
    """:meth:`Run.open`: reopen a trained run (its data prepared on first use)."""
    return Run.open(run_dir, checkpoint, split=split, device=device)
