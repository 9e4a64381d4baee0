"""Reopening a finished run: its config (older keys migrated), data split, model with a
checkpoint's weights and, for text-proxy runs, the loss that holds its text projection."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from langdml.config import ExperimentConfig, load_yaml, migrate_config, validate_config
from langdml.errors import ConfigError, LangDMLError
from langdml.experiment.assemble import build_model, text_proxy_loss
from langdml.experiment.class_text import class_text_embeddings, needs_text, uses_text_proxies
from langdml.experiment.run_data import NO_BEST, RunData, has_validation, prepare_data
from langdml.experiment.run_files import CHECKPOINT, CHECKPOINTS, CONFIG, PREVIOUS, open_checkpoint
from langdml.models import EmbeddingModel


def load_run_config(run_dir: str | Path) -> ExperimentConfig:
    """A run's resolved config; keys of older releases are migrated (one deprecation line)."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no {CONFIG})")
    return validate_config(migrate_config(load_yaml(path), source=str(path)))


@dataclass
class OpenRun:
    """A finished run, reopened: its config, data split, model with the checkpoint's weights,
    and, for text-proxy runs, the base loss rebuilt from the checkpoint (its projection is the
    run's text side) with the training classes' text embeddings; None otherwise."""

    run_dir: Path
    config: ExperimentConfig
    data: RunData
    model: EmbeddingModel
    epoch: int
    checkpoint: str
    loss_state: dict[str, torch.Tensor]
    text_embeddings: torch.Tensor | None = None
    loss: torch.nn.Module | None = None
    checkpoint_file: Path | None = None  # the file loaded (checkpoint.prev.pt after a fallback)

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
            "data.folds are 0)"
        )


def open_run(
    run_dir: str | Path,
    checkpoint: str = "last",
    *,
    split: str | None = None,
    device: str | None = None,
) -> OpenRun:
    """Reopen a trained run: config, data, model (weights loaded with ``weights_only=True``).

    ``checkpoint``: "last" (alias "final") or "best"; "last" falls back to checkpoint.prev.pt,
    with one warning line, when checkpoint.pt is damaged or missing (``run_files``). ``split``:
    None = the run's own evaluation split, "test" = the test classes, "val" = its validation
    classes.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LangDMLError(f"run directory {str(run_dir)!r} does not exist")
    cfg = load_run_config(run_dir)
    _check_open_args(run_dir, cfg, checkpoint, split)
    if split == "test":
        cfg.data.validation_fraction = 0.0
        cfg.data.fold = 0  # before folds: each assignment is validated
        cfg.data.folds = 0
    cfg.train.progress = False
    if device is not None:
        cfg.train.device = device
    data = prepare_data(cfg)
    path, state = open_checkpoint(run_dir, checkpoint)
    model = build_model(cfg, data)
    model.load_state_dict(state["model"])
    model.to(cfg.train.device)
    loss_state = dict(state.get("loss", {}))
    run = OpenRun(run_dir, cfg, data, model, int(state.get("epoch", 0)), checkpoint, loss_state)
    run.checkpoint_file = path
    if uses_text_proxies(cfg):
        run.loss = text_proxy_loss(cfg, loss_state)
        run.text_embeddings = run.loss.class_text_embeddings
    return run
