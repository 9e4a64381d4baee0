"""The training loop's hooks: subclass :class:`Callback` and hand instances to
``langdml.train.train(cfg, callbacks=[...])``.

Every hook runs on the main process only (rank 0 under ``torchrun``), in list order:

* ``on_train_start(run)``: after the run is set up (resumed from its checkpoint if it was);
* ``on_eval(run, epoch, metrics)``: after an evaluation (``epoch`` counts from 1);
* ``on_epoch_end(run, record)``: after the epoch's checkpoint and ``log.jsonl`` are written;
  ``record`` is the epoch's log line (loss terms, learning rate, metrics when evaluated);
* ``on_train_end(run, summary)``: before ``metrics.json`` is written; ``summary`` is its
  content so far (earlier callbacks' entries included); a returned dict is merged into it;
* ``teardown(run, failed)``: always last, also when training raised (``failed`` True).

A finished run that ``train`` returns as is calls no hook. The experiment trackers
(``train.loggers``, :mod:`langdml.train.trackers`) and the post-training steps of
:mod:`langdml.pipeline` are callbacks too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from langdml.config import ExperimentConfig


@dataclass
class RunInfo:
    """What a callback sees of the run: the config, its directory, the model being trained and
    the per-epoch log so far (``history``, updated in place as epochs end)."""

    cfg: ExperimentConfig
    run_dir: Path
    model: nn.Module
    resumed: bool = False
    start_epoch: int = 0
    history: list[dict] = field(default_factory=list)


class Callback:
    """Base class of training hooks; every hook does nothing unless overridden."""

    def on_train_start(self, run: RunInfo) -> None:
        """The run is set up; ``run.start_epoch`` epochs are already done when it resumed."""

    def on_eval(self, run: RunInfo, epoch: int, metrics: dict[str, float]) -> None:
        """Epoch ``epoch`` (from 1) was evaluated."""

    def on_epoch_end(self, run: RunInfo, record: dict[str, Any]) -> None:
        """Epoch ``record["epoch"]`` ended and is saved."""

    def on_train_end(self, run: RunInfo, summary: dict[str, Any]) -> dict[str, Any] | None:
        """Training ended; return extra entries for metrics.json, or None."""
        return None

    def teardown(self, run: RunInfo, failed: bool) -> None:
        """Always called last: release what the callback holds."""


# A step after training: called with the run directory once the last epoch is saved; returns
# extra entries for metrics.json (e.g. {"xmodal": {...}}).
PostTrain = Callable[[Path], dict[str, Any]]


class PostTrainCallback(Callback):
    """A post-training step (``run_dir → extra metrics.json entries``) as a callback."""

    def __init__(self, step: PostTrain) -> None:
        self.step = step

    def on_train_end(self, run: RunInfo, summary: dict[str, Any]) -> dict[str, Any] | None:
        return self.step(run.run_dir)


class CallbackList:
    """Calls each hook on every callback in order (the trainer's one handle on them)."""

    def __init__(self, callbacks: Sequence[Callback], run: RunInfo) -> None:
        bad = [c for c in callbacks if not isinstance(c, Callback)]
        if bad:
            raise TypeError(
                f"callbacks must be langdml.train.Callback instances, got {type(bad[0]).__name__}"
            )
        self.callbacks, self.run = list(callbacks), run

    def on_train_start(self) -> None:
        for c in self.callbacks:
            c.on_train_start(self.run)

    def on_eval(self, epoch: int, metrics: dict[str, float]) -> None:
        for c in self.callbacks:
            c.on_eval(self.run, epoch, metrics)

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        for c in self.callbacks:
            c.on_epoch_end(self.run, record)

    def on_train_end(self, summary: dict[str, Any]) -> None:
        """Each callback's returned entries go into ``summary`` before the next one runs."""
        for c in self.callbacks:
            extra = c.on_train_end(self.run, summary)
            if extra:
                summary.update(extra)

    def teardown(self, failed: bool) -> None:
        """Every callback's teardown runs, even when an earlier one raises (the first error is
        raised after all of them)."""
        error: BaseException | None = None
        for c in self.callbacks:
            try:
                c.teardown(self.run, failed)
            except Exception as exc:  # noqa: BLE001 - re-raised below, after the others
                error = error or exc
        if error is not None:
            raise error
