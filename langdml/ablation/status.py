"""``langdml ablate ABLATION.yaml --status``: done / running / stale / failed / pending per run,
read from the results folder alone (nothing is submitted or written)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from langdml.ablation.cells import STATES, RunState, run_state
from langdml.ablation.spec import Ablation, load_ablation


def ablation_status(
    path: str | os.PathLike, output_dir: str | None = None
) -> tuple[Ablation, list[RunState]]:
    ablation = load_ablation(path, output_dir)
    states = [
        run_state(run.id, Path(run.config.output_dir), run.config.train.epochs)
        for run in ablation.runs
    ]
    return ablation, states


def format_status(ablation: Ablation, states: list[RunState]) -> str:
    cells = {run.cell.id for run in ablation.runs}
    head = f"ablation {ablation.name}: {_count(len(states), 'run')} in {_count(len(cells), 'cell')}"
    lines = [f"{head}, {ablation.output_dir}"]
    labels = [run.cell.label() for run in ablation.runs]
    width = min(60, max(len(x) for x in labels))
    lines.append(f"{'status':<8} {'cell':<{width}} {'seed':>4}  detail")
    for run, label, state in zip(ablation.runs, labels, states):
        row = f"{state.status:<8} {label:<{width}} {run.seed:>4}  {state.detail}"
        lines.append(f"{row}  [{run.id}]")
    counts = Counter(s.status for s in states)
    summary = ", ".join(f"{counts[s]} {s}" for s in STATES if counts[s])
    lines.append(f"{_count(len(states), 'run')}: {summary}")
    if counts["stale"]:
        lines.append(
            "stale: an attempt was killed (its process is gone or its heartbeat stopped); "
            "rerunning the ablation resumes it from its checkpoint"
        )
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
