"""Experiment trackers (``train.loggers``) as training callbacks: tensorboard (tb/), csv
(log.csv), mlflow and wandb (optional extras).

MLflow and W&B get the run's config as params / config, every epoch's numbers at step = epoch,
and at the end :func:`summary_metrics` of the summary that becomes ``metrics.json`` (the final
and best metrics, the baselines, cross-modal and hierarchy columns). Names
(:func:`tracking_names`): ``train.tracking_experiment`` is the MLflow experiment and the W&B
group (and project unless ``train.wandb_project``), ``train.tracking_run_name`` the run; unset,
they are the parts of ``name`` before and after its last ``/``. An ablation sets them to its
name and to the cell's key and seed, with ``train.tracking_tags`` (ablation, cell, run id, seed,
each grid key's value) as MLflow tags and W&B tags. A resumed run continues the same tracker
run (its id is kept in ``trackers.json`` of the run directory).
"""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

from langdml._extras import require
from langdml.config import ExperimentConfig
from langdml.errors import LangDMLError
from langdml.io import atomic_write_json
from langdml.train.callbacks import Callback, RunInfo
from langdml.train.logs import tensorboard, write_csv, write_scalars

TRACKER_IDS = "trackers.json"
# MLflow's cap on one log_batch call (params and metrics).
_MLFLOW_BATCH = 100


# W&B refuses a tag longer than this.
_WANDB_TAG = 64


def tracking_names(cfg: ExperimentConfig) -> tuple[str, str]:
    """(experiment, run name) of a run in the trackers (module docstring)."""
    experiment, _, run = cfg.name.rpartition("/")
    t = cfg.train
    return (t.tracking_experiment or experiment or run), (t.tracking_run_name or run)


def wandb_tags(cfg: ExperimentConfig) -> list[str]:
    """``train.tracking_tags`` as W&B tags ``KEY=VALUE``, each cut to W&B's 64 characters (the
    full values are in the run's config, under train.tracking_tags)."""
    tags = [f"{k}={v}" for k, v in cfg.train.tracking_tags.items()]
    return [t if len(t) <= _WANDB_TAG else t[: _WANDB_TAG - 1] + "\u2026" for t in tags]


def numbers(record: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of a log record, ``epoch`` excluded."""
    return {
        k: float(v)
        for k, v in record.items()
        if k != "epoch" and isinstance(v, int | float) and not isinstance(v, bool)
    }


def summary_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """Every number of a metrics.json summary, nested keys joined by ``/`` (``final/recall@1``,
    ``best/metrics/map@r``, ``baselines/untrained/recall@1``, ...); the config is left out."""
    out: dict[str, float] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}/")
        elif isinstance(node, int | float) and not isinstance(node, bool):
            out[prefix[:-1]] = float(node)

    walk({k: v for k, v in summary.items() if k != "config"}, "")
    return out


def flat_config(cfg: ExperimentConfig) -> dict[str, str]:
    """The config as dotted keys → their values' text (MLflow params)."""
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = str(node)

    walk(cfg.to_dict(), "")
    return out


def _read_ids(run_dir: Path) -> dict[str, str]:
    import json

    path = run_dir / TRACKER_IDS
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _save_id(run_dir: Path, key: str, value: str) -> None:
    ids = _read_ids(run_dir)
    ids[key] = value
    atomic_write_json(run_dir / TRACKER_IDS, ids)


class TensorBoardTracker(Callback):
    """Scalars of every epoch under RUN_DIR/tb (nothing when tensorboard is not installed)."""

    def __init__(self) -> None:
        self.writer = None

    def on_train_start(self, run: RunInfo) -> None:
        self.writer = tensorboard(run.run_dir)

    def on_epoch_end(self, run: RunInfo, record: dict[str, Any]) -> None:
        if self.writer is not None:
            write_scalars(self.writer, record)

    def teardown(self, run: RunInfo, failed: bool) -> None:
        if self.writer is not None:
            self.writer.close()


class CsvTracker(Callback):
    """RUN_DIR/log.csv: one row per epoch, one column per logged key."""

    def on_epoch_end(self, run: RunInfo, record: dict[str, Any]) -> None:
        write_csv(run.run_dir, run.history)


def mlflow_key(name: str) -> str:
    """A metric name as MLflow accepts it: ``@`` becomes ``_at_`` (``recall@1`` →
    ``recall_at_1``), any other character outside ``[A-Za-z0-9_-. :/]`` an underscore."""
    return re.sub(r"[^\w\-. :/]", "_", name.replace("@", "_at_"))


class MlflowTracker(Callback):
    """A run in an MLflow tracking store (``train.mlflow_uri``), through ``MlflowClient``."""

    def __init__(self) -> None:
        self.client = None
        self.run_id: str | None = None

    def on_train_start(self, run: RunInfo) -> None:
        mlflow = require("mlflow", "mlflow", "train.loggers mlflow")
        from mlflow.entities import Param

        uri = run.cfg.train.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI")
        uri = uri or f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"
        experiment, name = tracking_names(run.cfg)
        try:
            self.client = mlflow.tracking.MlflowClient(uri)
            found = self.client.get_experiment_by_name(experiment)
            exp_id = found.experiment_id if found else self.client.create_experiment(experiment)
            old = _read_ids(run.run_dir).get("mlflow")
            if old and self._reopen(old):
                self._catch_up(run.history)
                return
            tags = {**run.cfg.train.tracking_tags, "langdml.run_dir": str(run.run_dir)}
            created = self.client.create_run(exp_id, run_name=name, tags=tags)
            self.run_id = created.info.run_id
            params = [Param(k, v[:6000]) for k, v in flat_config(run.cfg).items()]
            for i in range(0, len(params), _MLFLOW_BATCH):
                self.client.log_batch(self.run_id, params=params[i : i + _MLFLOW_BATCH])
        except mlflow.exceptions.MlflowException as exc:
            raise LangDMLError(f"train.loggers mlflow ({uri}): {_first_line(exc)}") from None
        _save_id(run.run_dir, "mlflow", self.run_id)

    def _reopen(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.update_run(run_id, status="RUNNING")
        except MlflowException:  # deleted, or another store: start a new run
            return False
        self.run_id = run_id
        return True

    def _catch_up(self, history: list[dict]) -> None:
        """Epochs the checkpoint holds but the MLflow run lacks (a kill between the two)."""
        logged = {m.step for m in self.client.get_metric_history(self.run_id, "loss")}
        for record in history:
            if int(record["epoch"]) not in logged:
                self._log(numbers(record), int(record["epoch"]))

    def _log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(mlflow_key(k), v, now, step) for k, v in values.items()]
        for i in range(0, len(metrics), _MLFLOW_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + _MLFLOW_BATCH])

    def on_epoch_end(self, run: RunInfo, record: dict[str, Any]) -> None:
        self._log(numbers(record), int(record["epoch"]))

    def on_train_end(self, run: RunInfo, summary: dict[str, Any]) -> None:
        self._log(summary_metrics(summary), int(run.cfg.train.epochs))

    def teardown(self, run: RunInfo, failed: bool) -> None:
        if self.client is not None and self.run_id is not None:
            self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


class WandbTracker(Callback):
    """A Weights & Biases run (``train.wandb_mode``: offline under RUN_DIR/wandb by default)."""

    def __init__(self) -> None:
        self.run = None

    def on_train_start(self, run: RunInfo) -> None:
        wandb = require("wandb", "wandb", "train.loggers wandb")
        experiment, name = tracking_names(run.cfg)
        run_id = _read_ids(run.run_dir).get("wandb") or secrets.token_hex(8)
        try:
            self.run = wandb.init(
                project=run.cfg.train.wandb_project or experiment,
                group=experiment,
                name=name,
                tags=wandb_tags(run.cfg),
                id=run_id,
                resume="allow",
                reinit="create_new",
                dir=str(run.run_dir),
                mode=run.cfg.train.wandb_mode,
                config=run.cfg.to_dict(),
                settings=wandb.Settings(silent=True, x_disable_stats=True, console="off"),
            )
        except wandb.errors.Error as exc:
            raise LangDMLError(f"train.loggers wandb: {_first_line(exc)}") from None
        _save_id(run.run_dir, "wandb", run_id)

    def on_epoch_end(self, run: RunInfo, record: dict[str, Any]) -> None:
        self.run.log(numbers(record), step=int(record["epoch"]))

    def on_train_end(self, run: RunInfo, summary: dict[str, Any]) -> None:
        self.run.summary.update(summary_metrics(summary))

    def teardown(self, run: RunInfo, failed: bool) -> None:
        if self.run is None:
            return
        import wandb

        self.run.finish(exit_code=1 if failed else 0)
        # finish() returns before W&B's service has written the run out; with no other run
        # active in the process, shutting the service down waits for it, so the offline run
        # file is complete when training returns.
        if wandb.run is None:
            wandb.teardown()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


TRACKERS = {
    "tensorboard": TensorBoardTracker,
    "csv": CsvTracker,
    "mlflow": MlflowTracker,
    "wandb": WandbTracker,
}


def build_trackers(cfg: ExperimentConfig) -> list[Callback]:
    """The callbacks of ``train.loggers``, in its order."""
    return [TRACKERS[name]() for name in cfg.train.loggers]


def check_trackers(cfg: ExperimentConfig) -> None:
    """A tracker whose extra is missing fails here, before any work, in one line."""
    for name in cfg.train.loggers:
        if name in ("mlflow", "wandb"):
            require(name, name, f"train.loggers {name}")
