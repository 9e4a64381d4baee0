"""Run an ablation grid: shared precompute once, each run resumable, results appended atomically.

The run directories are the source of truth: a finished run has ``metrics.json`` and is skipped, an
interrupted one resumes from its checkpoint, a failed one is recorded with its error (and retried
on the next invocation) without stopping the grid.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langdml.ablation.report import write_report
from langdml.ablation.spec import Ablation, Run, load_ablation, value_label
from langdml.eval.metrics import METRIC_KEYS as METRICS
from langdml.io import atomic_write_json, atomic_write_text, stable_hash


@dataclass
class AblationResult:
    output_dir: Path
    rows: list[dict[str, Any]]
    table_path: Path
    plot_path: Path | None
    markdown: str


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
    for key in ablation.grid:
        row[key] = value_label(run.cell.get(key))
    row["status"] = status
    for m in METRICS:
        row[m] = (metrics or {}).get(m, "")
    for k, v in (extra or {}).items():
        row[k] = v
    row["seconds"] = "" if seconds is None else round(seconds, 2)
    row["error"] = error
    return row


def _execute(config: dict, threads: int) -> dict:
    """Train one run (in a worker process or in-process); never raises."""
    import torch

    from langdml.config import validate_config
    from langdml.train import train

    torch.set_num_threads(max(1, threads))
    t0 = time.perf_counter()
    try:
        cfg = validate_config(config)
        cfg.train.progress = False
        result = train(cfg)
        extra = {k: v for k, v in result.extra.get("xmodal", {}).items()}
        return {
            "status": "ok",
            "metrics": result.metrics,
            "extra": extra,
            "seconds": time.perf_counter() - t0,
        }
    except Exception as exc:  # a failed cell must not stop the grid
        msg = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        tb = traceback.format_exc()
        return {
            "status": "failed",
            "error": msg,
            "traceback": tb,
            "seconds": time.perf_counter() - t0,
        }


def _finished(run: Run) -> dict | None:
    path = Path(run.config.output_dir) / "metrics.json"
    if not path.is_file():
        return None
    try:
        done = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return done if done.get("epochs") == run.config.train.epochs else None


def shared_precompute(ablation: Ablation, progress: bool = True) -> None:
    """Frozen features and text embeddings once, in this process, so runs only read caches."""
    from langdml.train.trainer import class_text_embeddings, prepare_data

    done_data, done_text = {}, set()
    for run in ablation.runs:
        cfg = run.config.model_copy(deep=True)
        cfg.train.progress = progress
        data_key = stable_hash([cfg.data.model_dump(), cfg.model.model_dump()])
        if data_key not in done_data:
            done_data[data_key] = prepare_data(cfg)
        if "language" in cfg.loss.regularizers:
            text_key = stable_hash([data_key, cfg.loss.language.model_dump()])
            if text_key not in done_text:
                class_text_embeddings(cfg, done_data[data_key].train)
                done_text.add(text_key)


def run_ablation(
    path: str | os.PathLike, workers: int = 1, output_dir: str | None = None, progress: bool = True
) -> AblationResult:
    ablation = load_ablation(path, output_dir)  # validates every run before any starts
    out = ablation.output_dir
    out.mkdir(parents=True, exist_ok=True)
    import yaml

    atomic_write_text(
        out / "ablation.yaml",
        yaml.safe_dump(
            {
                "name": ablation.name,
                "grid": ablation.grid,
                "seeds": ablation.seeds,
                "base": ablation.base_tree,
            },
            sort_keys=False,
        ),
    )
    rows: dict[str, dict] = {}
    todo: list[Run] = []
    for run in ablation.runs:
        done = _finished(run)
        if done is not None:
            rows[run.id] = _row(run, ablation, "ok", done["final"], extra=done.get("xmodal"))
        else:
            todo.append(run)
    _save_rows(out, ablation, rows)
    if todo:
        shared_precompute(ablation, progress)
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    with _Progress(len(ablation.runs), len(ablation.runs) - len(todo), progress) as bar:

        def record(run: Run, res: dict) -> None:
            if res["status"] != "ok":
                atomic_write_text(
                    Path(run.config.output_dir) / "error.txt", res.get("traceback", "")
                )
            rows[run.id] = _row(
                run,
                ablation,
                res["status"],
                res.get("metrics"),
                res["seconds"],
                res.get("error", ""),
                res.get("extra"),
            )
            _save_rows(out, ablation, rows)
            bar.advance(run, res)

        if workers <= 1:
            for run in todo:
                record(run, _execute(run.config.to_dict(), threads))
        else:
            import multiprocessing as mp

            with ProcessPoolExecutor(
                max_workers=workers, mp_context=mp.get_context("spawn")
            ) as pool:
                futures = {
                    pool.submit(_execute, run.config.to_dict(), threads): run for run in todo
                }
                for fut in as_completed(futures):
                    record(futures[fut], fut.result())
    ordered = [rows[r.id] for r in ablation.runs if r.id in rows]
    markdown, plot = write_report(out, ablation, ordered, _baselines(ablation))
    return AblationResult(out, ordered, out / "results.md", plot, markdown)


def _baselines(ablation: Ablation) -> dict[str, dict]:
    """Reference points recorded by the runs: raw trunk features and the untrained head."""
    for run in ablation.runs:
        path = Path(run.config.output_dir) / "metrics.json"
        if path.is_file():
            found = json.loads(path.read_text()).get("baselines") or {}
            if found:
                return found
    return {}


def _save_rows(out: Path, ablation: Ablation, rows: dict[str, dict]) -> None:
    ordered = [rows[r.id] for r in ablation.runs if r.id in rows]
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
        self.t0, self.finished_here = time.perf_counter(), 0

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
        self.finished_here += 1
        if self.enabled:
            r1 = (res.get("metrics") or {}).get("recall@1")
            desc = f"{run.cell.label()} seed {run.seed}: " + (
                f"R@1 {r1:.4f}" if r1 is not None else res["status"]
            )
            self.progress.update(self.task, completed=self.done, description=desc)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.progress.stop()
