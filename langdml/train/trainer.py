"""The training loop: frozen-trunk (cached features) or full fine-tuning, checkpoint every epoch,
exact resume, evaluation on class-disjoint held-out classes.

All randomness of epoch ``e`` derives from ``(seed, e)``, so a run killed mid-epoch and resumed from
its last checkpoint replays that epoch exactly and ends with the same metrics.

Under ``torchrun`` the same loop runs data-parallel (langdml.train.distributed): each rank embeds
its slice of the global batch, embeddings and labels are all-gathered so the loss sees the global
batch, and only rank 0 writes files.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from langdml.config import ExperimentConfig, dump_yaml, load_yaml, validate_config
from langdml.data import ImageDataset, class_disjoint_split, load_dataset
from langdml.errors import ConfigError, LangDMLError
from langdml.eval.metrics import METRIC_KEYS
from langdml.io import atomic_torch_save, atomic_write_json, atomic_write_text
from langdml.models import EmbeddingHead, EmbeddingModel, FeatureSpec, create_backbone
from langdml.train import distributed as dd
from langdml.train.sampler import MPerClassSampler

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"


@dataclass
class RunData:
    """What a run trains and evaluates on; frozen-trunk runs carry cached features."""

    train: ImageDataset
    eval: ImageDataset
    eval_split: str  # "test" or "val"
    train_features: torch.Tensor | None = None  # (V, N_train, D)
    eval_features: torch.Tensor | None = None  # (N_eval, D)


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, float]
    best: dict[str, Any]
    epochs: int
    resumed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919) % 2**31


def prepare_data(cfg: ExperimentConfig) -> RunData:
    """Class-disjoint split (optionally a validation split carved from train classes) + features."""
    dataset = load_dataset(cfg.data.dataset, cache_dir=cfg.data.cache_dir)
    split = class_disjoint_split(dataset, cfg.data.train_fraction)
    train, held_out, name = split.train, split.test, "test"
    if cfg.data.validation_fraction > 0:
        inner = class_disjoint_split(train, 1.0 - cfg.data.validation_fraction)
        train, held_out, name = inner.train, inner.test, "val"
    data = RunData(train=train, eval=held_out, eval_split=name)
    if cfg.model.frozen_trunk:
        from langdml.models import extract_features

        spec = FeatureSpec(
            cfg.model.backbone,
            cfg.model.weights,
            cfg.model.image_size,
            cfg.model.augment_views,
            cfg.model.crop_pct,
        )
        feats = extract_features(
            dataset,
            spec,
            cache_dir=cfg.data.cache_dir,
            device=cfg.train.device,
            progress=cfg.train.progress,
        )
        # Map split members back to rows of the full dataset by their image items.
        row = {item: i for i, item in enumerate(dataset.images.items)}
        tr = torch.as_tensor([row[i] for i in train.images.items])
        ev = torch.as_tensor([row[i] for i in held_out.images.items])
        data.train_features = feats.features[:, tr]
        data.eval_features = feats.features[0, ev]
    return data


def class_text_embeddings(cfg: ExperimentConfig, train: ImageDataset) -> torch.Tensor | None:
    """(C, d) class-name or (C, k, d) pseudo-label embeddings of the TRAIN classes, cached."""
    lang = cfg.loss.language
    if "language" not in cfg.loss.regularizers and not uses_text_proxies(cfg):
        return None
    from langdml import text

    kwargs = dict(
        model=lang.text_model,
        prompts=lang.prompts,
        cache_dir=_text_cache(cfg),
        device=cfg.train.device,
    )
    if lang.pseudo_labels:
        emb = text.pseudo_label_embeddings(train, k=lang.top_k, **kwargs).embeddings.float()
    else:
        # Several classes may share a name (SOP's super-class names): embed each name once.
        position = {name: i for i, name in enumerate(dict.fromkeys(train.class_names))}
        rows = torch.as_tensor([position[n] for n in train.class_names])
        emb = text.precompute_text_embeddings(list(position), **kwargs).embeddings.float()[rows]
    if lang.shuffled_names:
        emb = emb[shuffled_classes(emb.shape[0], cfg.seed)]
    return emb


def shuffled_classes(num_classes: int, seed: int) -> torch.Tensor:
    """The shuffled-names control's permutation: class c gets the text embedding of class
    perm[c]. Seeded by the run seed, so seeds average over permutations; the stream is separate
    from training's."""
    generator = torch.Generator().manual_seed(1_000_003 + seed)
    return torch.randperm(num_classes, generator=generator)


def uses_text_proxies(cfg: ExperimentConfig) -> bool:
    """Base losses whose proxies are projected class-name embeddings (language as proxies)."""
    return cfg.loss.base.name.startswith("text_proxy_")


def _text_cache(cfg: ExperimentConfig) -> Path | None:
    return Path(cfg.data.cache_dir) / "text" if cfg.data.cache_dir else None


def loss_spec(cfg: ExperimentConfig) -> dict[str, Any]:
    """The loss library's plain-dict spec from the typed config."""
    regs = []
    for name in cfg.loss.regularizers:
        if name == "language":
            lang = cfg.loss.language
            regs.append(
                {
                    "name": "language",
                    "weight": lang.weight,
                    "temperature": lang.temperature,
                    "shift": lang.shift,
                    "direction": lang.direction,
                    "mode": lang.level,
                }
            )
        else:
            regs.append({"name": "direction", **cfg.loss.direction.model_dump()})
    return {"base": cfg.loss.base.model_dump(), "regularizers": regs}


def build_model(cfg: ExperimentConfig, data: RunData) -> EmbeddingModel:
    if cfg.model.frozen_trunk:
        in_dim = int(data.train_features.shape[-1])
        return EmbeddingModel(EmbeddingHead(in_dim, cfg.model.embedding_dim, cfg.model.head))
    backbone, info = create_backbone(
        cfg.model.backbone, cfg.model.weights, frozen_bn=cfg.model.frozen_bn
    )
    head = EmbeddingHead(info.feature_dim, cfg.model.embedding_dim, cfg.model.head)
    return EmbeddingModel(head, backbone)


def build_optimizer(
    cfg: ExperimentConfig, model: nn.Module, loss: nn.Module
) -> torch.optim.Optimizer:
    opt = cfg.optimizer
    proxy = list(loss.proxy_parameters()) if hasattr(loss, "proxy_parameters") else []
    proxy_ids = {id(p) for p in proxy}
    other_loss = [p for p in loss.parameters() if id(p) not in proxy_ids and p.requires_grad]
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": opt.lr}]
    if proxy:
        groups.append({"params": proxy, "lr": opt.lr * opt.proxy_lr_multiplier})
    if other_loss:
        groups.append({"params": other_loss, "lr": opt.lr})
    if opt.name == "sgd":
        return torch.optim.SGD(
            groups, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay
        )
    cls = torch.optim.AdamW if opt.name == "adamw" else torch.optim.Adam
    return cls(groups, lr=opt.lr, weight_decay=opt.weight_decay)


def build_scheduler(cfg: ExperimentConfig, optimizer, iters_per_epoch: int):
    total = cfg.train.epochs * iters_per_epoch
    warm = cfg.train.warmup_epochs * iters_per_epoch

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if cfg.train.scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
        if cfg.train.scheduler == "step":
            return 0.1 ** int(3 * step / max(1, total))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def embed(
    model: EmbeddingModel,
    cfg: ExperimentConfig,
    data: RunData,
    batch_size: int = 512,
    rows: np.ndarray | None = None,
) -> torch.Tensor:
    """Embeddings of the evaluation images (clean view); only ``rows`` of them if given."""
    model.eval()
    device = cfg.train.device
    rows = np.arange(len(data.eval)) if rows is None else np.asarray(rows)
    if data.eval_features is not None:
        feats = data.eval_features[torch.as_tensor(rows, dtype=torch.long)]
        chunks = [
            model(feats[i : i + batch_size].to(device)).float().cpu()
            for i in range(0, len(feats), batch_size)
        ]
        return torch.cat(chunks) if chunks else torch.zeros(0, cfg.model.embedding_dim)
    if len(rows) == 0:
        return torch.zeros(0, cfg.model.embedding_dim)
    loader = _image_loader(
        cfg, data.eval, list(np.array_split(rows, max(1, len(rows) // 64))), False
    )
    return torch.cat([model(x.to(device)).float().cpu() for x, _ in loader])


def _evaluate_distributed(
    cfg: ExperimentConfig,
    model: EmbeddingModel | None,
    data: RunData,
    ctx: dd.DistContext,
    device: torch.device,
) -> dict:
    """Metrics of ``model`` (None: the raw eval features) on the eval split. Under several
    processes each rank embeds a contiguous share, rank 0 gathers them, computes the metrics and
    broadcasts them, so every rank continues with the same numbers."""
    if model is None:
        emb = data.eval_features
    elif not ctx.enabled:
        emb = embed(model, cfg, data)
    else:
        share = np.array_split(np.arange(len(data.eval)), ctx.world_size)[ctx.rank]
        local = embed(model, cfg, data, rows=share)
        comm = device if device.type == "cuda" else torch.device("cpu")
        emb = dd.all_gather_rows(local.to(comm)).cpu()
    metrics = evaluate_embeddings(cfg, emb, data.eval.labels) if ctx.is_main else None
    return dd.broadcast_object(metrics, ctx, device)


def evaluate_embeddings(
    cfg: ExperimentConfig, embeddings: torch.Tensor, labels: np.ndarray
) -> dict:
    from langdml.eval import retrieval_metrics

    include = ("recall", "map_r", "clustering") if cfg.eval.clustering else ("recall", "map_r")
    return retrieval_metrics(
        embeddings,
        labels,
        metric=cfg.eval.metric,
        include=include,
        seed=cfg.seed,
        device=cfg.train.device,
    )


class _ImageBatches(torch.utils.data.Dataset):
    def __init__(self, dataset: ImageDataset, transform) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return self.transform(self.dataset.image(int(i))), int(self.dataset.labels[int(i)])


def _image_loader(cfg: ExperimentConfig, dataset: ImageDataset, batches, train: bool):
    from langdml.models import image_transform

    mean, std = _normalisation(cfg)
    tf = image_transform(cfg.model.image_size, mean, std, train=train, crop_pct=cfg.model.crop_pct)
    return torch.utils.data.DataLoader(
        _ImageBatches(dataset, tf), batch_sampler=batches, num_workers=cfg.train.num_workers
    )


def _normalisation(cfg: ExperimentConfig):
    import timm

    pcfg = timm.models.get_pretrained_cfg(cfg.model.backbone)
    if pcfg is None:
        return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    return pcfg.mean, pcfg.std


def _same_config(saved: dict, current: dict) -> list[str]:
    """Dotted keys that differ, ignoring keys that do not change results."""
    ignore = {"train.progress", "output_dir", "train.num_workers", "eval.every"}
    diffs: list[str] = []

    def walk(a, b, prefix):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{prefix}{k}.")
        elif a != b and prefix[:-1] not in ignore:
            diffs.append(prefix[:-1])

    walk(saved, current, "")
    return diffs


def _precheck(cfg: ExperimentConfig, run_dir: Path) -> tuple[str, Any]:
    """("error", message) | ("done", metrics.json summary) | ("go", None) for ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / CHECKPOINT
    saved_cfg = run_dir / "config.yaml"
    if saved_cfg.is_file() and ckpt_path.is_file():
        diffs = _same_config(load_yaml(saved_cfg), cfg.to_dict())
        if diffs:
            return "error", (
                f"run directory {run_dir} holds a run of a different config (differs at "
                f"{', '.join(diffs[:4])}); choose another output_dir or delete the directory"
            )
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file() and ckpt_path.is_file():
        done = json.loads(metrics_path.read_text())
        if done.get("epochs") == cfg.train.epochs:
            return "done", done
    atomic_write_text(saved_cfg, dump_yaml(cfg))
    return "go", None


def train(
    cfg: ExperimentConfig, run_dir: str | Path | None = None, *, stop_after_iters: int | None = None
) -> RunResult:
    """Train (or resume, or return a finished run) in ``run_dir`` (default: the config's).

    Started by ``torchrun`` (WORLD_SIZE > 1) it trains data-parallel: ``train.batch_size`` is the
    GLOBAL batch (divisible by the number of processes); results equal the 1-process run's.
    """
    import torch.distributed as tdist

    owns_group = dd.torchrun_env().enabled and not (tdist.is_available() and tdist.is_initialized())
    ctx, device = dd.init_distributed(cfg.train.device)
    try:
        return _train(cfg, Path(run_dir or cfg.run_dir()), ctx, device, stop_after_iters)
    finally:
        if owns_group:
            dd.cleanup(ctx)


def _train(
    cfg: ExperimentConfig,
    run_dir: Path,
    ctx: dd.DistContext,
    device: torch.device,
    stop_after_iters: int | None,
) -> RunResult:
    dd.check_batch_size(cfg.train.batch_size, ctx.world_size)
    ckpt_path = run_dir / CHECKPOINT
    metrics_path = run_dir / "metrics.json"
    # Rank 0 alone reads and writes the run directory (it may live on rank 0's node only).
    status, payload = dd.broadcast_object(
        _precheck(cfg, run_dir) if ctx.is_main else None, ctx, device
    )
    if status == "error":
        raise ConfigError(payload)
    if status == "done":
        return RunResult(
            run_dir, payload["final"], payload.get("best", {}), cfg.train.epochs, True, payload
        )

    seed_everything(cfg.seed)
    with dd.main_first(ctx, device):
        data = prepare_data(cfg)
        text_emb = class_text_embeddings(cfg, data.train)
    # Reseed: a cold feature cache draws augmentations from the global RNG, a warm one does not;
    # the initial weights must not depend on which (nor on the rank that filled the cache).
    seed_everything(cfg.seed)
    model = build_model(cfg, data).to(device)
    from langdml.losses import build_loss

    try:
        loss_fn = build_loss(
            loss_spec(cfg),
            num_classes=data.train.num_classes,
            embedding_size=cfg.model.embedding_dim,
            class_text_embeddings=text_emb,
        )
    except TypeError as exc:
        raise ConfigError(f"loss config: {exc}") from None
    loss_fn = loss_fn.to(device)
    dd.broadcast_parameters(loss_fn, ctx)
    sampler = MPerClassSampler(
        data.train.labels,
        cfg.train.batch_size,
        cfg.train.m_per_class,
        seed=cfg.seed,
        iterations_per_epoch=cfg.train.iterations_per_epoch,
    )
    optimizer = build_optimizer(cfg, model, loss_fn)
    scheduler = build_scheduler(cfg, optimizer, len(sampler))
    amp = cfg.train.amp and device.type == "cuda"
    amp_dtype = torch.float16 if cfg.train.amp_dtype == "float16" else torch.bfloat16
    # fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range.
    scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16)
    history: list[dict] = []
    best: dict[str, Any] = {}
    start_epoch = 0
    baselines: dict[str, Any] = {}
    resumed = False
    state = None
    if ctx.is_main and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    state = dd.broadcast_object(state, ctx, device)
    if state is not None:
        model.load_state_dict(state["model"])
        loss_fn.load_state_dict(state["loss"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):  # a disabled scaler saves {} and cannot load it back
            scaler.load_state_dict(state["scaler"])
        history, best, start_epoch = state["history"], state["best"], int(state["epoch"])
        baselines = state.get("baselines", {})
        resumed = True
    elif cfg.model.frozen_trunk:
        # Reference points: the raw trunk features and the untrained head on the same classes.
        baselines["raw_features"] = _evaluate_distributed(cfg, None, data, ctx, device)
        baselines["untrained"] = _evaluate_distributed(cfg, model, data, ctx, device)

    # DDP wraps the model only for the training forward; evaluation calls the bare module (a
    # DDP forward would issue collectives that ranks embedding different shares cannot match).
    train_model = dd.wrap_model(model, ctx, device)
    tb = _tensorboard(run_dir) if ctx.is_main else None
    labels_t = torch.as_tensor(data.train.labels)
    from tqdm import tqdm

    iters_done = 0
    for epoch in range(start_epoch, cfg.train.epochs):
        torch.manual_seed(_epoch_seed(cfg.seed, epoch))
        model.train()
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        batches = sampler.epoch(epoch)
        source = (
            iter(_image_loader(cfg, data.train, [dd.shard(b, ctx) for b in batches], True))
            if data.train_features is None
            else None
        )
        bar = tqdm(
            batches,
            desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
            leave=False,
            disable=not cfg.train.progress or not ctx.is_main,
        )
        for batch in bar:
            idx = torch.as_tensor(batch)
            if source is None:
                views = data.train_features.shape[0]
                view = (
                    torch.randint(views, (len(idx),))
                    if views > 1
                    else torch.zeros(len(idx), dtype=torch.long)
                )
                # Views are drawn for the GLOBAL batch on every rank, then sliced, so the
                # random stream (and the batch) match the 1-process run.
                x, y = dd.shard(data.train_features[view, idx], ctx), dd.shard(labels_t[idx], ctx)
            else:
                x, y = next(source)
            x, y = x.to(device), y.to(device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                z = train_model(x)
            # Losses in fp32 on the global batch: every rank's slice, gradients to its own rows.
            z = dd.all_gather_with_grad(z.float())
            y = dd.all_gather_tensor(y)
            loss = loss_fn(z, y)
            if not torch.isfinite(loss):
                raise LangDMLError(
                    f"loss became {loss.item()} at epoch {epoch + 1}; training stopped, "
                    f"the last good "
                    f"checkpoint (epoch {start_epoch if not history else history[-1]['epoch']}) is "
                    f"kept in {run_dir}; lower optimizer.lr or check the loss settings"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            dd.average_gradients(loss_fn.parameters())
            if cfg.train.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            scaler.step(optimizer)  # skipped (and the scale lowered) on inf/NaN fp16 gradients
            scaler.update()
            scheduler.step()
            terms = {"loss": float(loss.detach())}
            terms.update(
                {f"loss/{k}": float(v) for k, v in getattr(loss_fn, "last_terms", {}).items()}
            )
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            last = history[-1].get(cfg.eval.best_metric) if history else None
            bar.set_postfix(
                loss=f"{terms['loss']:.4f}",
                **({cfg.eval.best_metric: f"{last:.4f}"} if last is not None else {}),
            )
            iters_done += 1
            if stop_after_iters is not None and iters_done >= stop_after_iters:
                raise KeyboardInterrupt  # test hook: simulates a kill mid-epoch
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "seconds": round(time.perf_counter() - t0, 3),
            "lr": optimizer.param_groups[0]["lr"],
        }
        record.update({k: v / len(batches) for k, v in sums.items()})
        if (epoch + 1) % cfg.eval.every == 0 or epoch + 1 == cfg.train.epochs:
            metrics = _evaluate_distributed(cfg, model, data, ctx, device)
            record.update(metrics)
            value = metrics.get(cfg.eval.best_metric)
            if value is None:
                raise ConfigError(
                    f"eval.best_metric {cfg.eval.best_metric!r} is not one of {sorted(metrics)}"
                )
            if not best or value > best["value"]:
                best = {
                    "epoch": epoch + 1,
                    "metric": cfg.eval.best_metric,
                    "value": value,
                    "metrics": metrics,
                }
                if ctx.is_main:
                    atomic_torch_save(
                        run_dir / BEST,
                        {
                            "model": model.state_dict(),
                            "loss": loss_fn.state_dict(),
                            "epoch": epoch + 1,
                        },
                    )
        history.append(record)
        if not ctx.is_main:
            continue
        atomic_torch_save(
            ckpt_path,
            {
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "loss": loss_fn.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "history": history,
                "best": best,
                "baselines": baselines,
            },
        )
        _write_logs(run_dir, history, tb)
    final = {k: v for k, v in history[-1].items() if k in METRIC_KEYS}
    summary = {
        "final": final,
        "best": best,
        "epochs": cfg.train.epochs,
        "eval_split": data.eval_split,
        "baselines": baselines,
        "config": cfg.to_dict(),
    }
    if ctx.is_main:
        if cfg.eval.xmodal:
            summary["xmodal"] = _xmodal_columns(run_dir)
        atomic_write_json(metrics_path, summary)
    summary = dd.broadcast_object(summary, ctx, device)
    if tb is not None:
        tb.close()
    return RunResult(run_dir, final, best, cfg.train.epochs, resumed, summary)


def _xmodal_columns(run_dir: Path) -> dict[str, float]:
    from langdml.xmodal import METRIC_KEYS as XMODAL_KEYS
    from langdml.xmodal import xmodal_for_run

    result = xmodal_for_run(run_dir)
    return {f"xmodal/{k}": float(result[k]) for k in XMODAL_KEYS if k in result}


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional at run time
        return None
    return SummaryWriter(str(run_dir / "tb"))


def _write_logs(run_dir: Path, history: list[dict], tb) -> None:
    atomic_write_text(run_dir / "log.jsonl", "".join(json.dumps(r) + "\n" for r in history))
    keys = list(dict.fromkeys(k for r in history for k in r))
    lines = [",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in history]
    atomic_write_text(run_dir / "log.csv", "\n".join(lines) + "\n")
    if tb is not None:
        rec = history[-1]
        for k, v in rec.items():
            if k != "epoch" and isinstance(v, int | float):
                tb.add_scalar(k, v, rec["epoch"])
        tb.flush()


def load_run_config(run_dir: str | Path) -> ExperimentConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml)")
    return validate_config(load_yaml(path))
