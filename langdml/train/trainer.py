"""The training loop's driver: frozen-trunk (cached features) or full fine-tuning, checkpoint
every epoch, exact resume, evaluation on class-disjoint held-out classes.

The pieces: the run's data, text, model and loss come from the assembly layer
(:mod:`langdml.experiment`); one epoch is :mod:`langdml.train.loop`; the run directory
(config check, checkpoints, best weights) :mod:`langdml.train.checkpoint`; logs
:mod:`langdml.train.logs`; evaluation :mod:`langdml.train.evaluation`. The trainer imports no
stage above it: a later stage (e.g. xmodal) runs as a callback handed in by the caller
(:func:`langdml.pipeline.train_experiment`, the public ``langdml.train.train``; a ``post_train``
step is one case of the callbacks, :mod:`langdml.train.callbacks`); the experiment trackers of
``train.loggers`` are callbacks too (:mod:`langdml.train.trackers`).

Under ``torchrun`` the same loop runs data-parallel (langdml.train.distributed): each rank embeds
its slice of the global batch, embeddings and labels are all-gathered so the loss sees the global
batch, and only rank 0 writes files.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from langdml._lazy import renamed_getattr
from langdml.clip_zeroshot import clip_zeroshot_baseline
from langdml.config import ExperimentConfig
from langdml.errors import ConfigError
from langdml.eval.metric_keys import is_metric_key
from langdml.experiment import (
    NO_BEST,
    build_model,
    build_run_loss,
    class_text_embeddings,
    prepare_data,
)
from langdml.experiment.run_files import CHECKPOINT, METRICS, load_into
from langdml.io import atomic_write_json
from langdml.train import distributed as dd
from langdml.train.callbacks import (
    Callback,
    CallbackList,
    PostTrain,
    PostTrainCallback,
    RunInfo,
)
from langdml.train.checkpoint import (
    load_checkpoint,
    precheck,
    save_best,
    save_checkpoint,
    write_provenance,
)
from langdml.train.evaluation import evaluate_distributed, final_evaluation_details
from langdml.train.heap import kept_heap
from langdml.train.logs import write_jsonl
from langdml.train.loop import TrainState, run_epoch
from langdml.train.optim import build_optimizer, build_scheduler
from langdml.train.sampler import build_sampler
from langdml.train.trackers import build_trackers, check_trackers

__all__ = ["PostTrain", "RunResult", "seed_everything", "train_run"]


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, float]
    best: dict[str, Any]
    epochs: int
    resumed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


# ``langdml.train.trainer.train``, train_run's name before the rename, still works (warns).
__getattr__ = renamed_getattr(__name__, {"train": "train_run"})


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train_run(
    cfg: ExperimentConfig,
    run_dir: str | Path | None = None,
    *,
    post_train: PostTrain | None = None,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Train (or resume, or return a finished run) in ``run_dir`` (default: the config's); the
    loop alone: no run-folder lock and only the post-training steps ``post_train`` hands in
    (``langdml.train.train`` adds both).

    ``callbacks`` (:class:`langdml.train.callbacks.Callback`) run in order, then the trackers
    of ``train.loggers``; all on the main process only. ``post_train`` (run_dir → extra
    metrics.json entries) is shorthand for a first ``PostTrainCallback(post_train)``.

    Started by ``torchrun`` (WORLD_SIZE > 1) it trains data-parallel: ``train.batch_size`` is the
    GLOBAL batch (divisible by the number of processes); results equal the 1-process run's.
    """
    import torch.distributed as tdist

    owns_group = dd.torchrun_env().enabled and not (tdist.is_available() and tdist.is_initialized())
    ctx, device = dd.init_distributed(cfg.train.device)
    try:
        run_dir = Path(run_dir or cfg.run_dir())
        hooks = [PostTrainCallback(post_train)] if post_train is not None else []
        hooks += list(callbacks)
        return _train_in_context(cfg, run_dir, ctx, device, hooks)
    finally:
        if owns_group:
            dd.cleanup(ctx)


def _setup(cfg: ExperimentConfig, ctx: dd.DistContext, device: torch.device) -> TrainState:
    """Data, text, model, loss, sampler and optimiser of a run (resumed from its checkpoint)."""
    seed_everything(cfg.seed)
    with dd.main_first(ctx, device):
        data = prepare_data(cfg)
        text_emb = class_text_embeddings(cfg, data.train)
    # Reseed: a cold feature cache draws augmentations from the global RNG, a warm one does not;
    # the initial weights must not depend on which (nor on the rank that filled the cache).
    seed_everything(cfg.seed)
    model = build_model(cfg, data).to(device)
    if cfg.train.channels_last and model.backbone is not None:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_run_loss(cfg, data, text_emb).to(device)
    dd.broadcast_parameters(loss_fn, ctx)
    sampler = build_sampler(cfg, data.train)
    optimizer = build_optimizer(cfg, model, loss_fn)
    amp = cfg.train.amp and device.type == "cuda"
    amp_dtype = torch.float16 if cfg.train.amp_dtype == "float16" else torch.bfloat16
    # fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range.
    scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16)
    scheduler = build_scheduler(cfg, optimizer, len(sampler))
    state = TrainState(data, model, loss_fn, sampler, optimizer, scheduler, scaler, amp, amp_dtype)
    if model.backbone is not None:
        state.trunk_params = [p for p in model.backbone.parameters() if p.requires_grad]
    return state


def _resume(
    cfg: ExperimentConfig, state: TrainState, run_dir: Path, ctx: dd.DistContext, device
) -> None:
    """Load the last checkpoint (rank 0 reads it, every rank gets it), or measure baselines."""
    saved = load_checkpoint(run_dir) if ctx.is_main else None
    saved = dd.broadcast_object(saved, ctx, device)
    if saved is not None:
        load_into(state.model, saved["model"], run_dir / CHECKPOINT, cfg)
        state.loss_fn.load_state_dict(saved["loss"])
        state.optimizer.load_state_dict(saved["optimizer"])
        state.scheduler.load_state_dict(saved["scheduler"])
        if saved.get("scaler"):  # a disabled scaler saves {} and cannot load it back
            state.scaler.load_state_dict(saved["scaler"])
        state.history, state.best = saved["history"], saved["best"]
        state.start_epoch = int(saved["epoch"])
        state.baselines = saved.get("baselines", {})
        state.resumed = True
    elif cfg.model.frozen_trunk:
        # Reference points: the raw trunk features and the untrained head on the same classes.
        state.baselines["raw_features"] = evaluate_distributed(cfg, None, state.data, ctx, device)
        state.baselines["untrained"] = evaluate_distributed(
            cfg, state.model, state.data, ctx, device
        )
    if saved is None:  # an open_clip trunk: its zero-shot scores (langdml.clip_zeroshot)
        zeroshot = clip_zeroshot_baseline(cfg, state.data) if ctx.is_main else None
        zeroshot = dd.broadcast_object(zeroshot, ctx, device)
        if zeroshot is not None:
            state.baselines["clip_zeroshot"] = zeroshot


def _evaluate_epoch(
    cfg: ExperimentConfig, state: TrainState, record: dict, epoch: int, ctx, device, run_dir
) -> dict[str, float] | None:
    """Evaluate after ``epoch`` when due (its metrics, else None); track (and on rank 0 save)
    the best epoch."""
    if (epoch + 1) % cfg.eval.every and epoch + 1 != cfg.train.epochs:
        return None
    metrics = evaluate_distributed(cfg, state.model, state.data, ctx, device)
    record.update(metrics)
    value = metrics.get(cfg.eval.best_metric)
    if value is None:
        raise ConfigError(
            f"eval.best_metric {cfg.eval.best_metric!r} is not one of {sorted(metrics)}"
        )
    if state.data.eval_split != "val":
        return metrics  # no validation split: selecting on the test classes would bias them
    if not state.best or value > state.best["value"]:
        state.best = {
            "epoch": epoch + 1,
            "metric": cfg.eval.best_metric,
            "value": value,
            "metrics": metrics,
        }
        if ctx.is_main:
            save_best(run_dir, state, epoch + 1)
    return metrics


def _train_in_context(
    cfg: ExperimentConfig,
    run_dir: Path,
    ctx: dd.DistContext,
    device: torch.device,
    hooks: list[Callback],
) -> RunResult:
    dd.check_batch_size(cfg.train.batch_size, ctx.world_size)
    # Rank 0 alone reads and writes the run directory (it may live on rank 0's node only).
    status, payload = dd.broadcast_object(
        precheck(cfg, run_dir) if ctx.is_main else None, ctx, device
    )
    if status == "error":
        raise ConfigError(payload)
    if status == "done":
        return RunResult(
            run_dir, payload["final"], payload.get("best", {}), cfg.train.epochs, True, payload
        )
    if ctx.is_main:
        check_trackers(cfg)
    state = _setup(cfg, ctx, device)
    state.run_dir = run_dir
    _resume(cfg, state, run_dir, ctx, device)
    if ctx.is_main:
        write_provenance(cfg, state, run_dir)
    run = RunInfo(cfg, run_dir, state.model, state.resumed, state.start_epoch, state.history)
    # Only the main process reports; the other ranks' list stays empty.
    callbacks = CallbackList([*hooks, *build_trackers(cfg)] if ctx.is_main else [], run)
    failed = True
    try:
        callbacks.on_train_start()
        summary = _epochs(cfg, state, run_dir, ctx, device, callbacks)
        failed = False
    finally:
        callbacks.teardown(failed)
    return RunResult(
        run_dir, summary["final"], state.best, cfg.train.epochs, state.resumed, summary
    )


def _epochs(
    cfg: ExperimentConfig,
    state: TrainState,
    run_dir: Path,
    ctx: dd.DistContext,
    device: torch.device,
    callbacks: CallbackList,
) -> dict[str, Any]:
    """The remaining epochs (checkpoint and log after each), then the final summary."""
    # DDP wraps the model only for the training forward; evaluation calls the bare module (a
    # DDP forward would issue collectives that ranks embedding different shares cannot match).
    # Warm-up epochs leave the trunk without gradients: DDP must not wait for them.
    train_model = dd.wrap_model(
        state.model, ctx, device, find_unused=cfg.train.frozen_trunk_epochs > 0
    )
    # A trunk that trains on the CPU allocates and frees its activations every step: keep the
    # freed memory for the next step (langdml.train.heap); a head on cached features needs not.
    keep = cfg.train.keep_cpu_heap and device.type == "cpu" and state.model.backbone is not None
    with kept_heap(keep):
        for epoch in range(state.start_epoch, cfg.train.epochs):
            record = run_epoch(cfg, state, train_model, epoch, ctx, device)
            metrics = _evaluate_epoch(cfg, state, record, epoch, ctx, device, run_dir)
            if metrics is not None:
                callbacks.on_eval(epoch + 1, metrics)
            state.history.append(record)
            if ctx.is_main:
                save_checkpoint(run_dir, state, epoch + 1)
                write_jsonl(run_dir, state.history)
            callbacks.on_epoch_end(record)
    return _finish(cfg, state, run_dir, ctx, device, callbacks)


def _finish(
    cfg, state: TrainState, run_dir: Path, ctx, device, callbacks: CallbackList
) -> dict[str, Any]:
    """metrics.json (rank 0, after the callbacks' end-of-training entries) and the summary
    every rank returns."""
    final = {k: v for k, v in state.history[-1].items() if is_metric_key(k)}
    summary = {
        "final": final,
        "best": state.best,
        **({} if state.best else {"best_unavailable": NO_BEST}),
        "epochs": cfg.train.epochs,
        "eval_split": state.data.eval_split,
        "baselines": state.baselines,
        "config": cfg.to_dict(),
    }
    # every rank: the final embedding is gathered collectively; rank 0 writes per_class.csv
    summary.update(final_evaluation_details(cfg, state.model, state.data, ctx, device, run_dir))
    if ctx.is_main:
        callbacks.on_train_end(summary)
        atomic_write_json(run_dir / METRICS, summary, checksum=True)
    return dd.broadcast_object(summary, ctx, device)
