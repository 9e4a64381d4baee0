"""Data-parallel training across processes (``torchrun``): process group, batch sharding,
all-gather with gradients, gradient sync of the loss module's parameters, rank-0-only I/O.

The scheme keeps a W-process run numerically equal to the 1-process run of the same global batch:

* every rank draws the SAME global m-per-class batch from ``(seed, epoch)`` and embeds only its
  contiguous slice ``batch[r·B/W : (r+1)·B/W]``;
* :func:`all_gather_with_grad` concatenates the slices in rank order, which restores the global
  batch exactly, so pair losses, miners and the language regularizer see all ``B`` samples;
* every rank then evaluates the same loss ``L`` on the same global batch. In backward each rank
  holds ``∂L/∂Z`` for the whole batch; the gather's backward all-reduces (sums) it and returns the
  rank's slice, ``Σ_r ∂L_r/∂z_local = W · ∂L/∂z_local``. DistributedDataParallel averages the
  parameter gradients over ranks (÷W), so the model receives ``Σ_r (1/W)·W·∂L/∂z_r · ∂z_r/∂θ =
  ∂L/∂θ`` — the 1-process gradient;
* the loss module's own parameters (proxies, text-proxy projections) receive the full ``∂L/∂P`` on
  every rank already; :func:`average_gradients` all-reduces and averages them anyway, so ranks stay
  bit-identical even if a loss is non-deterministic on some device.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from langdml.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job; ``world_size == 1`` means no process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def torchrun_env() -> DistContext:
    """The job layout from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); 1 process if
    unset."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise ConfigError(f"torchrun environment is malformed ({exc})") from None
    return DistContext(rank, world, local)


def init_distributed(device: str) -> tuple[DistContext, torch.device]:
    """Join the process group torchrun set up (nccl on CUDA, gloo on CPU); a no-op for 1 process.

    Returns the context and this rank's device (``cuda:LOCAL_RANK`` for CUDA configs, which also
    becomes the current CUDA device so that code passing ``"cuda"`` lands on the right GPU).
    """
    ctx = torchrun_env()
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"train.device={device} but CUDA is not available on this machine; "
            f"set train.device=cpu or auto (or install a CUDA build of torch)"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(
            f"train.device={device} but this machine has {torch.cuda.device_count()} CUDA "
            f"device(s); use cuda:0 .. cuda:{torch.cuda.device_count() - 1}"
        )
    if dev.type == "cuda" and ctx.enabled:
        if dev.index is not None and dev.index != ctx.local_rank:
            raise ConfigError(
                f"train.device {device!r} names one GPU, but under torchrun each rank uses "
                f"cuda:LOCAL_RANK; set train.device=cuda"
            )
        dev = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(dev)
    if ctx.enabled and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if ctx.enabled and dist.get_world_size() != ctx.world_size:
        raise ConfigError(
            f"process group has {dist.get_world_size()} ranks but WORLD_SIZE={ctx.world_size}"
        )
    return ctx, dev


def check_batch_size(batch_size: int, world_size: int) -> None:
    """The global batch is split into equal contiguous slices, one per rank."""
    if batch_size % world_size:
        raise ConfigError(
            f"train.batch_size {batch_size} (the GLOBAL batch) is not divisible by the "
            f"{world_size} processes; use a multiple of {world_size}"
        )


def shard(batch: Any, ctx: DistContext) -> Any:
    """This rank's contiguous slice of a global batch (anything sliceable of length B)."""
    if not ctx.enabled:
        return batch
    n = len(batch) // ctx.world_size
    return batch[ctx.rank * n : (ctx.rank + 1) * n]


class _AllGatherWithGrad(torch.autograd.Function):
    """forward: concatenate every rank's (n, …) tensor in rank order; backward: sum the incoming
    gradient over ranks and return this rank's rows (see the module docstring for the scaling)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def all_gather_with_grad(x: Tensor) -> Tensor:
    """(n, …) per rank → (W·n, …) on every rank; gradients flow back to each rank's own rows.
    Every rank must pass the same n (the trainer guarantees it with equal slices)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _AllGatherWithGrad.apply(x)


def all_gather_tensor(x: Tensor) -> Tensor:
    """Plain all-gather (no gradient) of equally sized tensors, concatenated in rank order."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def all_gather_rows(x: Tensor) -> Tensor:
    """All-gather of (n_r, …) tensors whose n_r may differ per rank, concatenated in rank order."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    count = torch.tensor([x.shape[0]], device=x.device)
    counts = all_gather_tensor(count).tolist()
    padded = x.new_zeros((max(counts), *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = all_gather_tensor(padded).split(max(counts))
    return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)])


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """All-reduce-average the .grad of parameters outside DDP (the loss module's), flattened into
    one buffer so it costs one collective. Parameters without a grad are skipped (every rank runs
    the same graph, so they agree which); creating zeros would change what the optimizer does."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    params = [p for p in params if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
        offset += p.numel()


def broadcast_object(obj: Any, ctx: DistContext, device: torch.device | None = None) -> Any:
    """Rank 0's ``obj`` on every rank (pickled); identity for 1 process."""
    if not ctx.enabled:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(
        box, src=0, device=device if device and device.type == "cuda" else None
    )
    return box[0]


def barrier(ctx: DistContext, device: torch.device | None = None) -> None:
    if ctx.enabled:
        if device is not None and device.type == "cuda":
            dist.barrier(device_ids=[device.index or 0])
        else:
            dist.barrier()


@contextmanager
def main_first(ctx: DistContext, device: torch.device | None = None) -> Iterator[None]:
    """Rank 0 runs the block first (filling caches: features, text embeddings), then the others
    run it and find the caches warm; avoids W processes extracting the same features at once."""
    if ctx.enabled and not ctx.is_main:
        barrier(ctx, device)
    yield
    if ctx.enabled and ctx.is_main:
        barrier(ctx, device)


def wrap_model(
    model: nn.Module, ctx: DistContext, device: torch.device, find_unused: bool = False
) -> nn.Module:
    """DistributedDataParallel around the embedding model (rank 0's weights are broadcast)."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if not any(p.requires_grad for p in model.parameters()):
        return model
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(
        model,
        device_ids=ids,
        output_device=ids[0] if ids else None,
        find_unused_parameters=find_unused,
    )


def broadcast_parameters(module: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's parameters and buffers of ``module`` (the loss: proxies) to every rank."""
    if not ctx.enabled:
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def cleanup(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
