"""The run directory during training: the config check before a (re)start, exact-resume
checkpoints every epoch and the best-epoch weights."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from langdml.config import (
    ExperimentConfig,
    dump_yaml,
    load_yaml,
    migrate_config,
    validate_config,
)
from langdml.config.training import TRACKING_KEYS
from langdml.errors import ConfigError, LangDMLError
from langdml.experiment.run_files import (
    BEST,
    CHECKPOINT,
    CONFIG,
    METRICS,
    PREVIOUS,
    newest_checkpoint,
)
from langdml.io import (
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    checksum_path,
    verify_checksum,
)

# Keys that do not change results: a resumed run may differ in them (``name`` is a label; an
# ablation names its runs after the ablation file, which may be renamed or split).
# The trackers' keys say where a run reports, not what it computes.
_IGNORED = {
    "name",
    "train.progress",
    "output_dir",
    "train.num_workers",
    "train.keep_cpu_heap",
    "eval.every",
} | {f"train.{k}" for k in TRACKING_KEYS}


def same_config(saved: dict, current: dict) -> list[str]:
    """Dotted keys that differ, ignoring keys that do not change results."""
    diffs: list[str] = []

    def walk(a, b, prefix):
        if prefix[:-1] in _IGNORED:  # also a whole ignored mapping (train.tracking_tags)
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{prefix}{k}.")
        elif a != b:
            diffs.append(prefix[:-1])

    walk(saved, current, "")
    return diffs


def precheck(cfg: ExperimentConfig, run_dir: Path) -> tuple[str, Any]:
    """("error", message) | ("done", metrics.json summary) | ("go", None) for ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / CHECKPOINT
    saved_cfg = run_dir / CONFIG
    checkpoints = [run_dir / name for name in (CHECKPOINT, PREVIOUS, BEST)]
    if not saved_cfg.is_file() and any(p.is_file() for p in checkpoints):
        return "error", (
            f"run directory {run_dir} holds checkpoints but no {CONFIG}, so it is not a run this "
            f"config can resume; choose another output_dir or delete the directory"
        )
    if saved_cfg.is_file() and any(p.is_file() for p in checkpoints[:2]):
        saved = migrate_config(load_yaml(saved_cfg), source=str(saved_cfg))
        try:  # keys added since the run started take their defaults, the behaviour it ran with
            saved = validate_config(saved).to_dict()
        except ConfigError:
            pass  # compare the raw tree: the differing keys are named below
        diffs = same_config(saved, cfg.to_dict())
        if diffs:
            return "error", (
                f"run directory {run_dir} holds a run of a different config (differs at "
                f"{', '.join(diffs[:4])}); choose another output_dir or delete the directory"
            )
    metrics_path = run_dir / METRICS
    if metrics_path.is_file() and ckpt_path.is_file():
        try:
            damaged = verify_checksum(metrics_path)
            if damaged:  # e.g. a flipped digit: still JSON, but not the numbers the run wrote
                raise ValueError(damaged)
            done = json.loads(metrics_path.read_text(encoding="utf-8"))
            if not isinstance(done, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
            # the checkpoint holds the history: resuming it rewrites metrics.json
            warnings.warn(
                f"{metrics_path} is damaged ({str(exc).splitlines()[0]}); recomputing it from "
                f"{ckpt_path}",
                stacklevel=2,
            )
            done = {}
        if done.get("epochs") == cfg.train.epochs:
            return "done", done
    atomic_write_text(saved_cfg, dump_yaml(cfg))
    return "go", None


def load_checkpoint(run_dir: Path) -> dict | None:
    """The resume checkpoint, or None. A damaged (or missing) checkpoint.pt falls back to
    checkpoint.prev.pt (``run_files.newest_checkpoint``), which is set aside as
    checkpoint.pt.damaged, saying so in one warning line; when both fail, a one-line error naming
    the file."""
    path, prev = run_dir / CHECKPOINT, run_dir / PREVIOUS
    if not path.is_file() and not prev.is_file():
        return None
    best = run_dir / BEST
    hint = (
        f"; {best} (the best epoch's weights) is intact for evaluation, but resuming needs "
        f"{CHECKPOINT}: delete it to retrain from scratch"
        if best.is_file()
        else "; delete it to retrain from scratch"
    )
    _, state, failed = newest_checkpoint(run_dir)
    if state is None:
        raise LangDMLError(failed[0] + hint)
    if failed:
        aside = ""
        if path.is_file():  # else the next save would keep it as the "previous" checkpoint
            aside = f"; the damaged file is kept as {path.name}.damaged"
            os.replace(path, path.with_name(path.name + ".damaged"))
            checksum_path(path).unlink(missing_ok=True)
        warnings.warn(
            f"{failed[0]}; resuming from the previous checkpoint {prev} "
            f"(epoch {state.get('epoch')}){aside}",
            stacklevel=2,
        )
    return state


def _keep(src: Path, dst: Path) -> None:
    """Atomically make ``dst`` a copy of ``src`` (a hard link where the file system allows)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _keep_previous(run_dir: Path) -> None:
    """checkpoint.pt (and its checksum) -> checkpoint.prev.pt, sidecar first: a kill in between
    leaves a previous checkpoint that fails its checksum, never a wrong one that passes, and
    checkpoint.pt is untouched until the previous one is complete."""
    path = run_dir / CHECKPOINT
    if not path.is_file():
        return
    prev = run_dir / PREVIOUS
    if checksum_path(path).is_file():
        digest = checksum_path(path).read_text(encoding="utf-8").split()[:1]
        atomic_write_text(checksum_path(prev), f"{''.join(digest)}  {prev.name}\n")
    else:
        checksum_path(prev).unlink(missing_ok=True)
    _keep(path, prev)


def save_checkpoint(run_dir: Path, state, epoch: int) -> None:
    """Everything an exact resume needs (``state`` is the loop's TrainState); the checkpoint it
    replaces is kept as checkpoint.prev.pt."""
    _keep_previous(run_dir)
    atomic_torch_save(
        run_dir / CHECKPOINT,
        {
            "epoch": epoch,
            "model": state.model.state_dict(),
            "loss": state.loss_fn.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "scaler": state.scaler.state_dict(),
            "history": state.history,
            "best": state.best,
            "baselines": state.baselines,
        },
    )


def save_best(run_dir: Path, state, epoch: int) -> None:
    atomic_torch_save(
        run_dir / BEST,
        {"model": state.model.state_dict(), "loss": state.loss_fn.state_dict(), "epoch": epoch},
    )


def write_provenance(cfg: ExperimentConfig, state, run_dir: Path) -> None:
    """provenance.json (versions, CUDA/GPU, git commit, dataset fingerprints, text model) at
    training start; a resumed run keeps the original record and appends what it resumed with."""
    from langdml import provenance
    from langdml.experiment import needs_text

    record = provenance.collect(
        dataset=cfg.data.dataset,
        fingerprints={
            "train": state.data.train.fingerprint,
            state.data.eval_split: state.data.eval.fingerprint,
        },
        text_model=cfg.text.text_model if needs_text(cfg) else None,
    )
    path = run_dir / provenance.PROVENANCE
    if state.resumed and path.is_file():
        old = json.loads(path.read_text())
        old.setdefault("resumed", []).append({"epoch": state.start_epoch, **record})
        record = old
    atomic_write_json(path, record)
