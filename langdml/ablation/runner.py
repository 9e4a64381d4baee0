"""Run an ablation grid: shared precompute once, each run resumable, results appended atomically.

The run directories are the source of truth: a finished run has ``metrics.json`` and is skipped, an
interrupted one resumes from its checkpoint, a failed one is recorded with its error (and retried
on the next invocation) without stopping the grid, and one a live attempt holds (its
``running.json`` marker, see ``langdml.ablation.cells``) is left alone. The same holds whichever
backend (local processes, Slurm, Ray) runs the cells, so a grid can move between them.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langdml.ablation.agreement import cell_agreements, varies_text
from langdml.ablation.backends import Backend, BackendOptions, resolve_options
from langdml.ablation.cells import PLAN, cell_record, extra_columns, finished, run_state
from langdml.ablation.local_backend import LocalBackend
from langdml.ablation.report import write_report
from langdml.ablation.spec import Ablation, Run, load_ablation, value_label
from langdml.eval.metric_keys import is_metric_key
from langdml.eval.metrics import METRIC_KEYS as METRICS
from langdml.io import atomic_write_json, atomic_write_text
from langdml.locks import folder_lock

# Two drivers on one grid write the table in turns; one write takes well under a second, the
# final report (agreements, plot) seconds.
TABLE_LOCK_WAIT_S = 300.0


@dataclass
class AblationResult:
    output_dir: Path
    rows: list[dict[str, Any]]
    table_path: Path
    plot_path: Path | None
    markdown: str
    notes: list[str] = field(default_factory=list)  # runs running elsewhere, submitted jobs


def _row(
    run: Run,
    ablation: Ablation,
    status: str,
    metrics: dict | None = None,
    seconds: float | None = None,
    error: str = "",
    extra: dict | None = None,
) -> dict:
    row: dict[str, Any] = {"run_id": run.id, "cell_id": run.cell.id, "seed": run.seed}
    if any(r.fold is not None for r in ablation.runs):  # data.folds: seeds x folds
        row["fold"] = "" if run.fold is None else run.fold
    for key in ablation.grid:
        row[key] = value_label(run.cell.get(key))
    row["status"] = status
    # recall@k for the config's eval.recall_at ks, then the other metrics; any extra ks of a
    # run land in the CSV too
    keys = [f"recall@{k}" for k in run.config.eval.recall_at]
    keys += [m for m in (*METRICS, *(metrics or {})) if is_metric_key(m) and m not in keys]
    for m in dict.fromkeys(keys):
        row[m] = (metrics or {}).get(m, "")
    for k, v in (extra or {}).items():
        row[k] = v
    row["seconds"] = "" if seconds is None else round(seconds, 2)
    row["error"] = error
    return row


def run_ablation(
    path: str | os.PathLike,
    workers: int = 1,
    output_dir: str | None = None,
    progress: bool = True,
    backend: str = "local",
    backend_flags: dict[str, Any] | None = None,
    detach: bool = False,
) -> AblationResult:
    """Run the grid's unfinished runs on ``backend`` (local / slurm / ray) and write the table.

    ``backend_flags`` override the file's ``backend:`` section (dotted keys such as
    ``"slurm.partition"``; see ``langdml.ablation.backends``)."""
    ablation = load_ablation(path, output_dir)  # validates every run before any starts
    _check_trackers(ablation)
    options = resolve_options(backend, path, backend_flags)
    out = ablation.output_dir
    out.mkdir(parents=True, exist_ok=True)
    _write_snapshot(out, ablation)
    rows: dict[str, dict] = {}  # what this invocation's attempts returned
    todo: list[Run] = []
    notes: list[str] = []
    for run in ablation.runs:
        state = run_state(run.id, Path(run.config.output_dir), run.config.train.epochs)
        if state.status == "running":
            notes.append(f"{run.id} is running elsewhere ({state.detail}); not submitted")
        elif state.status != "done":
            todo.append(run)
    _save_rows(out, ablation, rows)
    engine = make_backend(backend, options, workers, out, f"langdml-{ablation.name}", detach)
    try:
        if todo:
            configs = [run.config.to_dict() for run in todo]
            if options.prepare_mode(backend) == "here":
                LocalBackend().prepare(configs, progress)
            else:
                engine.prepare(configs, progress)
        with _Progress(len(ablation.runs), len(rows), progress) as bar:

            def record(run: Run, res: dict) -> None:
                rows[run.id] = _row(
                    run,
                    ablation,
                    res["status"],
                    res.get("metrics"),
                    res.get("seconds"),
                    res.get("error", ""),
                    res.get("extra"),
                )
                _save_rows(out, ablation, rows)
                bar.advance(run, res)

            notes += engine.run(todo, record) if todo else []
    finally:
        engine.close()
    if progress:
        for note in notes:
            print(f"langdml: {note}", file=sys.stderr)
    with folder_lock(out, "ablation folder", wait_s=TABLE_LOCK_WAIT_S):
        table = disk_table(ablation, rows)
        _write_rows(out, table.rows)
        agreements = (
            cell_agreements(ablation, table.rows, progress) if varies_text(ablation) else None
        )
        markdown, plot = write_report(
            out, ablation, table.rows, _baselines(ablation), agreements, table.waiting
        )
    return AblationResult(out, table.rows, out / "results.md", plot, markdown, notes)


def _check_trackers(ablation: Ablation) -> None:
    """A logger whose extra is missing fails here, in one line, before any run starts."""
    from langdml.train.trackers import check_trackers

    for run in {tuple(r.config.train.loggers): r for r in ablation.runs}.values():
        check_trackers(run.config)


def _write_snapshot(out: Path, ablation: Ablation) -> None:
    import yaml

    snapshot = {
        "name": ablation.name,
        "grid": ablation.grid,
        "seeds": ablation.seeds,
        "base": ablation.base_tree,
    }
    atomic_write_text(out / "ablation.yaml", yaml.safe_dump(snapshot, sort_keys=False))
    plan = [{"run_id": r.id, "epochs": r.config.train.epochs} for r in ablation.runs]
    atomic_write_json(out / PLAN, {"name": ablation.name, "runs": plan})


def _baselines(ablation: Ablation) -> dict[str, dict]:
    """Reference points recorded by the runs: raw trunk features and the untrained head."""
    for run in ablation.runs:
        found = (finished(Path(run.config.output_dir), run.config.train.epochs) or {}).get(
            "baselines"
        )
        if found:
            return found
    return {}


@dataclass
class DiskTable:
    """The ablation's table as its run directories hold it: a row per finished run (ok or
    failed) in grid order, and the runs still ``running`` or ``pending`` (not started, stale or
    submitted) by state."""

    rows: list[dict[str, Any]]
    waiting: dict[str, list[str]]


def disk_table(ablation: Ablation, attempts: dict[str, dict] | None = None) -> DiskTable:
    """Every run's row from its directory, whichever process trained it, so two drivers on one
    grid each write the whole table. ``attempts``: rows this process got back (a cluster job
    that died without a result is on no disk) fill in runs the directories show unfinished."""
    attempts = attempts or {}
    rows, waiting = [], {"running": [], "pending": []}
    for run in ablation.runs:
        run_dir, epochs = Path(run.config.output_dir), run.config.train.epochs
        state = run_state(run.id, run_dir, epochs)
        if state.status == "done":
            done = finished(run_dir, epochs) or {}
            seconds = cell_record(run_dir).get("seconds")
            rows.append(
                _row(run, ablation, "ok", done.get("final"), seconds, extra=extra_columns(done))
            )
        elif state.status == "running":
            waiting["running"].append(run.id)
        elif run.id in attempts:
            rows.append(attempts[run.id])
        elif state.status == "failed":
            record = cell_record(run_dir)
            error = record.get("error") or state.detail
            rows.append(_row(run, ablation, "failed", None, record.get("seconds"), error))
        else:
            waiting["pending"].append(run.id)
    return DiskTable(rows, waiting)


def _save_rows(out: Path, ablation: Ablation, attempts: dict[str, dict]) -> None:
    """results.csv / results.json from the disk (under the ablation folder's lock)."""
    with folder_lock(out, "ablation folder", wait_s=TABLE_LOCK_WAIT_S):
        _write_rows(out, disk_table(ablation, attempts).rows)


def _write_rows(out: Path, ordered: list[dict]) -> None:
    if not ordered:
        return
    keys = list(dict.fromkeys(k for row in ordered for k in row))
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(ordered)
    atomic_write_text(out / "results.csv", buf.getvalue())
    atomic_write_json(out / "results.json", ordered)


class _Progress:
    """Runs done / total with an ETA from the runs finished in this invocation."""

    def __init__(self, total: int, already: int, enabled: bool) -> None:
        self.total, self.done, self.enabled = total, already, enabled

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("ablation"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.description}"),
            )
            self.progress.start()
            self.task = self.progress.add_task("", total=self.total, completed=self.done)
        return self

    def advance(self, run: Run, res: dict) -> None:
        self.done += 1
        if self.enabled:
            r1 = (res.get("metrics") or {}).get("recall@1")
            desc = f"{run.cell.label()} seed {run.seed}: " + (
                f"R@1 {r1:.4f}" if r1 is not None else res["status"]
            )
            self.progress.update(self.task, completed=self.done, description=desc)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.progress.stop()


def make_backend(
    name: str,
    options: BackendOptions,
    workers: int = 1,
    output_dir: Path = Path("."),
    job_name: str = "langdml",
    detach: bool = False,
) -> Backend:
    if name == "local":
        from langdml.ablation.local_backend import LocalBackend

        return LocalBackend(workers, options.cpus_per_cell)
    if name == "slurm":
        from langdml.ablation.slurm_backend import SlurmBackend

        return SlurmBackend(options, output_dir, job_name, detach)
    from langdml.ablation.ray_backend import RayBackend

    return RayBackend(options)
