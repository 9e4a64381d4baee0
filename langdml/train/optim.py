"""Optimiser (a proxy learning-rate group) and learning-rate schedule of a training run."""

from __future__ import annotations

import math

import torch
from torch import nn

from langdml.config import ExperimentConfig


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
            return cfg.train.step_gamma ** int(3 * step / max(1, total))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
