"""Optimiser (parameter groups: trunk, head, proxies) and learning-rate schedule of a run."""

from __future__ import annotations

import math

import torch
from torch import nn

from langdml.config import ExperimentConfig


def parameter_groups(cfg: ExperimentConfig, model: nn.Module, loss: nn.Module) -> list[dict]:
    """The optimiser's groups, each with its ``lr``, ``weight_decay`` and a ``name``.

    Without optimizer.trunk_lr / head_lr / trunk_weight_decay / head_weight_decay the model is
    one group ("model"), exactly as before those keys; with any of them the trunk ("trunk") and
    the head ("head") are separate. The loss's proxies ("proxies", lr x proxy_lr_multiplier) and
    its other parameters ("loss") follow the head's settings."""
    opt = cfg.optimizer
    head_lr = opt.head_lr if opt.head_lr is not None else opt.lr
    head_wd = opt.head_weight_decay if opt.head_weight_decay is not None else opt.weight_decay
    trained = [p for p in model.parameters() if p.requires_grad]
    if opt.split_groups:
        backbone = getattr(model, "backbone", None)
        trunk_ids = {id(p) for p in backbone.parameters()} if backbone is not None else set()
        trunk = [p for p in trained if id(p) in trunk_ids]
        groups = [
            {
                "name": "trunk",
                "params": trunk,
                "lr": opt.trunk_lr if opt.trunk_lr is not None else opt.lr,
                "weight_decay": (
                    opt.trunk_weight_decay
                    if opt.trunk_weight_decay is not None
                    else opt.weight_decay
                ),
            },
            {
                "name": "head",
                "params": [p for p in trained if id(p) not in trunk_ids],
                "lr": head_lr,
                "weight_decay": head_wd,
            },
        ]
        groups = [g for g in groups if g["params"]]
    else:
        groups = [{"name": "model", "params": trained, "lr": opt.lr, "weight_decay": head_wd}]
    proxy = list(loss.proxy_parameters()) if hasattr(loss, "proxy_parameters") else []
    proxy_ids = {id(p) for p in proxy}
    other_loss = [p for p in loss.parameters() if id(p) not in proxy_ids and p.requires_grad]
    if proxy:
        groups.append(
            {
                "name": "proxies",
                "params": proxy,
                "lr": head_lr * opt.proxy_lr_multiplier,
                "weight_decay": head_wd,
            }
        )
    if other_loss:
        groups.append(
            {"name": "loss", "params": other_loss, "lr": head_lr, "weight_decay": head_wd}
        )
    return groups


def build_optimizer(
    cfg: ExperimentConfig, model: nn.Module, loss: nn.Module
) -> torch.optim.Optimizer:
    opt = cfg.optimizer
    groups = parameter_groups(cfg, model, loss)
    if opt.name == "sgd":
        return torch.optim.SGD(
            groups, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay
        )
    cls = torch.optim.AdamW if opt.name == "adamw" else torch.optim.Adam
    return cls(groups, lr=opt.lr, weight_decay=opt.weight_decay)


def lr_factor(cfg: ExperimentConfig, iters_per_epoch: int):
    """step → multiplier of every group's initial learning rate: linear warm-up over
    train.warmup_epochs, then cosine (down to train.min_lr_ratio), step (x step_gamma after each
    milestone epoch, by default after each third) or constant."""
    t = cfg.train
    total = t.epochs * iters_per_epoch
    warm = t.warmup_epochs * iters_per_epoch
    floor = t.min_lr_ratio

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if t.scheduler == "cosine":
            cos = 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
            return cos if not floor else floor + (1 - floor) * cos
        if t.scheduler == "step":
            if t.step_milestones is None:
                return t.step_gamma ** int(3 * step / max(1, total))
            cuts = sum(step >= m * iters_per_epoch for m in t.step_milestones)
            return t.step_gamma**cuts
        return 1.0

    return factor


def build_scheduler(cfg: ExperimentConfig, optimizer, iters_per_epoch: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, iters_per_epoch))
