"""`langdml evaluate RUN_DIR`: recompute a run's retrieval metrics and print them as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="retrieval metrics of a trained run, as JSON")
    p.add_argument("run_dir")
    p.add_argument("--checkpoint", choices=["final", "best"], default="final")
    p.add_argument(
        "--split",
        choices=["test", "val"],
        default=None,
        help="held-out classes to evaluate (default: the run's own eval split)",
    )
    p.set_defaults(func=_evaluate)


def evaluate_run(run_dir: str | Path, checkpoint: str = "final", split: str | None = None) -> dict:
    from langdml.experiment import embed, evaluate_embeddings, open_run

    run = open_run(run_dir, checkpoint, split=split)
    cfg, data = run.config, run.data
    metrics = evaluate_embeddings(cfg, embed(run.model, cfg, data), data.eval.labels)
    return {
        "run_dir": str(run.run_dir),
        "checkpoint": checkpoint,
        "epoch": run.epoch,
        "split": data.eval_split,
        **metrics,
    }


def _evaluate(args: argparse.Namespace) -> int:
    print(json.dumps(evaluate_run(args.run_dir, args.checkpoint, args.split), indent=2))
    return 0
