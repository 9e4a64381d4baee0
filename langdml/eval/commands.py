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
    import torch

    from langdml.errors import LangDMLError
    from langdml.train.trainer import (
        BEST,
        CHECKPOINT,
        build_model,
        embed,
        evaluate_embeddings,
        load_run_config,
        prepare_data,
    )

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    if split == "test":
        cfg.data.validation_fraction = 0.0
    ckpt = run_dir / (BEST if checkpoint == "best" else CHECKPOINT)
    if not ckpt.is_file():
        raise LangDMLError(f"{run_dir} has no {ckpt.name}; train it first: langdml train {run_dir}")
    cfg.train.progress = False
    data = prepare_data(cfg)
    if split == "val" and data.eval_split != "val":
        raise LangDMLError(f"run {run_dir} has no validation split (data.validation_fraction is 0)")
    model = build_model(cfg, data)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    model.to(cfg.train.device)
    metrics = evaluate_embeddings(cfg, embed(model, cfg, data), data.eval.labels)
    return {
        "run_dir": str(run_dir),
        "checkpoint": checkpoint,
        "epoch": int(state["epoch"]),
        "split": data.eval_split,
        **metrics,
    }


def _evaluate(args: argparse.Namespace) -> int:
    print(json.dumps(evaluate_run(args.run_dir, args.checkpoint, args.split), indent=2))
    return 0
