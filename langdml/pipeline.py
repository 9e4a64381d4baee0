"""Training with the steps a config asks for after it: :func:`train_experiment`, which is
``langdml.train.train`` and what the ``langdml train`` command calls. The trainer
(:mod:`langdml.train.trainer`) trains and imports no stage above it; this module hands it the
later stages as callbacks (``eval.xmodal``: cross-modal columns in metrics.json, a
:class:`~langdml.train.callbacks.PostTrainCallback`), before the caller's own."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langdml._lazy import renamed_getattr
from langdml.config import ExperimentConfig
from langdml.train.callbacks import Callback, PostTrain, PostTrainCallback
from langdml.train.trainer import RunResult, train_run

# ``langdml.pipeline.train``, train_experiment's name before the rename, still works (warns).
__getattr__ = renamed_getattr(__name__, {"train": "train_experiment"})


def post_train_steps(cfg: ExperimentConfig) -> PostTrain | None:
    """The post-training hook the config asks for, or None."""
    return _xmodal_columns if cfg.eval.xmodal else None


def post_train_callbacks(cfg: ExperimentConfig) -> list[Callback]:
    """The post-training steps the config asks for, as callbacks."""
    step = post_train_steps(cfg)
    return [] if step is None else [PostTrainCallback(step)]


def _xmodal_columns(run_dir: Path) -> dict[str, Any]:
    from langdml.xmodal import METRIC_KEYS as XMODAL_KEYS
    from langdml.xmodal import xmodal_for_run

    result = xmodal_for_run(run_dir)
    return {"xmodal": {f"xmodal/{k}": float(result[k]) for k in XMODAL_KEYS if k in result}}


def train_experiment(
    cfg: ExperimentConfig,
    run_dir: str | Path | None = None,
    *,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Train (or resume, or return a finished run), then the configured post-training steps;
    public as ``langdml.train.train``.

    ``callbacks``: :class:`langdml.train.Callback` instances, called after the post-training
    steps and before the trackers of ``train.loggers`` (:mod:`langdml.train.callbacks`).

    The run directory is locked for the whole run (``langdml.locks``): a second writer on the
    same folder is refused in one line naming the holder. Under torchrun rank 0 holds it for
    the group."""
    import contextlib
    import os

    from langdml.locks import folder_lock
    from langdml.train.trackers import check_trackers

    check_trackers(cfg)  # a missing extra is one line before the run folder is touched
    folder = Path(run_dir or cfg.run_dir())
    rank0 = os.environ.get("RANK", "0") == "0"
    with folder_lock(folder) if rank0 else contextlib.nullcontext():
        return train_run(cfg, folder, callbacks=[*post_train_callbacks(cfg), *callbacks])
