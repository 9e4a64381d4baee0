"""One training epoch: the sampler's batches (frozen features or images), AMP forward, the loss on
the global batch in fp32, the optimiser step. All randomness of epoch ``e`` derives from
``(seed, e)``, so a resumed epoch replays exactly."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from langdml.config import ExperimentConfig
from langdml.errors import LangDMLError
from langdml.experiment import RunData, image_loader
from langdml.models import EmbeddingModel
from langdml.train import distributed as dd
from langdml.train.sampler import BatchSampler


@dataclass
class TrainState:
    """Everything the loop changes, and what a checkpoint stores."""

    data: RunData
    model: EmbeddingModel
    loss_fn: torch.nn.Module
    sampler: BatchSampler
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    amp: bool
    amp_dtype: torch.dtype
    history: list[dict] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    baselines: dict[str, Any] = field(default_factory=dict)
    start_epoch: int = 0
    resumed: bool = False
    iters_done: int = 0
    run_dir: Any = None
    # The trunk parameters that train (frozen BatchNorm excluded), so train.frozen_trunk_epochs
    # can switch them off and back on.
    trunk_params: list[torch.nn.Parameter] = field(default_factory=list)

    def last_good_epoch(self) -> int:
        return self.start_epoch if not self.history else self.history[-1]["epoch"]


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919) % 2**31


def set_trunk_frozen(state: TrainState, frozen: bool) -> None:
    """Warm-up epochs train only the head and the loss's parameters: the trunk's get no
    gradient, so the optimiser leaves them (and their weight decay and moments) untouched.
    Decided from the epoch index alone, so a resumed run freezes exactly as an uninterrupted one."""
    for p in state.trunk_params:
        p.requires_grad_(not frozen)


def _batch_inputs(state: TrainState, batch, source, ctx: dd.DistContext, labels_t):
    """(x, y) of one batch on this rank: a feature view per image, or decoded images."""
    if source is not None:
        return next(source)
    feats = state.data.train_features
    idx = torch.as_tensor(batch)
    views = feats.shape[0]
    view = (
        torch.randint(views, (len(idx),)) if views > 1 else torch.zeros(len(idx), dtype=torch.long)
    )
    # Views are drawn for the GLOBAL batch on every rank, then sliced, so the random stream (and
    # the batch) match the 1-process run.
    return dd.shard(feats[view, idx], ctx), dd.shard(labels_t[idx], ctx)


# Learning rates above this make every loss here diverge within an epoch or two (the defaults
# are 1e-5 .. 1e-3; proxies get lr x proxy_lr_multiplier on top).
_DIVERGING_LR = 0.1


def _likely_cause(cfg: ExperimentConfig, state: TrainState) -> str:
    lr, loss = cfg.optimizer.lr, cfg.loss.base.name
    if state.iters_done == 0 and state.start_epoch == 0:
        return (
            f"it was not finite before any optimiser step, so the loss settings (loss.base: "
            f"{loss}) or the inputs are the likely cause, not the learning rate"
        )
    if lr > _DIVERGING_LR:
        return (
            f"likely cause: optimizer.lr={lr:g} is far too high for {loss} (the weights "
            f"diverged; values around 1e-4 .. 1e-3 are usual); lower optimizer.lr"
        )
    if state.amp and state.amp_dtype == torch.float16:
        return (
            "likely cause: float16 autocast overflowed; set train.amp_dtype=bfloat16 "
            "or train.amp=false"
        )
    clip = "" if cfg.train.grad_clip else " or set train.grad_clip (e.g. 1.0)"
    return (
        f"likely cause: optimizer.lr={lr:g} is still too high for {loss} with these settings; "
        f"lower optimizer.lr{clip}, or check the loss parameters"
    )


def _non_finite_message(cfg: ExperimentConfig, state: TrainState, what: str, epoch: int) -> str:
    from langdml.experiment.run_files import CHECKPOINT

    ckpt = state.run_dir / CHECKPOINT if state.run_dir is not None else None
    kept = (
        f"the last good checkpoint (epoch {state.last_good_epoch()}) is kept at {ckpt}"
        if ckpt is not None and ckpt.is_file()
        else "no checkpoint was written yet (it stopped in the first epoch)"
    )
    return (
        f"{what} at epoch {epoch + 1} (loss {cfg.loss.base.name}); training stopped; "
        f"{_likely_cause(cfg, state)}; {kept}"
    )


def _step(cfg: ExperimentConfig, state: TrainState, train_model, x, y, device, epoch: int):
    """Forward, loss on the global batch, backward and optimiser step; the logged terms."""
    x, y = x.to(device), y.to(device)
    if cfg.train.channels_last and x.dim() == 4:  # images or cached feature maps
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=state.amp_dtype, enabled=state.amp):
        # with S2SD heads: [embedding | auxiliary embeddings | features], S2SDLoss's input
        out = train_model(x, concat_aux=True)
    if not torch.isfinite(out).all():  # the losses would only say "NaN input"
        raise LangDMLError(
            _non_finite_message(cfg, state, "the embeddings became non-finite", epoch)
        )
    # Losses in fp32 on the global batch: every rank's slice, gradients to its own rows.
    y = dd.all_gather_tensor(y)
    loss = state.loss_fn(dd.all_gather_with_grad(out.float()), y)
    if not torch.isfinite(loss):
        what = f"loss became {float(loss.item())}"
        raise LangDMLError(_non_finite_message(cfg, state, what, epoch))
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    dd.average_gradients(state.loss_fn.parameters())
    if cfg.train.grad_clip:
        state.scaler.unscale_(state.optimizer)
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.train.grad_clip)
    state.scaler.step(state.optimizer)  # skipped (and the scale lowered) on inf/NaN fp16 grads
    state.scaler.update()
    state.scheduler.step()
    terms = {"loss": float(loss.detach())}
    last = getattr(state.loss_fn, "last_terms", {})
    terms.update({f"loss/{k}": float(v) for k, v in last.items()})
    return terms


def run_epoch(
    cfg: ExperimentConfig,
    state: TrainState,
    train_model,
    epoch: int,
    ctx: dd.DistContext,
    device: torch.device,
) -> dict[str, Any]:
    """Train one epoch; the epoch's log record (mean of every logged loss term)."""
    from tqdm import tqdm

    torch.manual_seed(epoch_seed(cfg.seed, epoch))
    state.model.train()
    set_trunk_frozen(state, epoch < cfg.train.frozen_trunk_epochs)
    t0 = time.perf_counter()
    sums: dict[str, float] = {}
    batches = state.sampler.epoch(epoch)
    data = state.data
    source = None
    if data.train_features is None:
        shards = [dd.shard(b, ctx) for b in batches]
        source = iter(image_loader(cfg, data.train, shards, True))
    labels_t = torch.as_tensor(data.train.labels)
    bar = tqdm(
        batches,
        desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
        leave=False,
        disable=not cfg.train.progress or not ctx.is_main,
    )
    best_metric = cfg.eval.best_metric
    for batch in bar:
        x, y = _batch_inputs(state, batch, source, ctx, labels_t)
        terms = _step(cfg, state, train_model, x, y, device, epoch)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v
        last = state.history[-1].get(best_metric) if state.history else None
        shown = {best_metric: f"{last:.4f}"} if last is not None else {}
        bar.set_postfix(loss=f"{terms['loss']:.4f}", **shown)
        state.iters_done += 1
    record: dict[str, Any] = {
        "epoch": epoch + 1,
        "seconds": round(time.perf_counter() - t0, 3),
        "lr": state.optimizer.param_groups[0]["lr"],
    }
    if cfg.optimizer.split_groups:  # the first group's is "lr"; every group's under its name
        for group in state.optimizer.param_groups:
            record[f"lr/{group.get('name', 'group')}"] = group["lr"]
    record.update({k: v / len(batches) for k, v in sums.items()})
    return record
