"""Several texts of one class → one unit vector: the mean of their L2-normalised embeddings,
renormalised. The text stage's one implementation: prompt ensembles, a class's description rows,
and the single vector per class that the agreement diagnostic takes from a target of several
views (pseudo-labels, names + descriptions). The text-proxy losses apply the same renormalised
mean to a (C, V, d) target they are given."""

from __future__ import annotations

from typing import TYPE_CHECKING

from langdml.errors import LangDMLError

if TYPE_CHECKING:
    import torch


def unit_mean(embeddings: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """``normalize(mean_dim normalize(e))``: e.g. (C, k, d) → (C, d)."""
    import torch.nn.functional as F

    return F.normalize(F.normalize(embeddings.float(), dim=-1).mean(dim=dim), dim=-1)


def grouped_unit_mean(
    embeddings: torch.Tensor, groups: torch.Tensor, num_groups: int
) -> torch.Tensor:
    """(N, d) rows and each row's group in [0, num_groups) → (num_groups, d): per group, the
    renormalised mean of its L2-normalised rows. Every group needs at least one row."""
    import torch
    import torch.nn.functional as F

    groups = torch.as_tensor(groups, dtype=torch.long)
    if embeddings.ndim != 2 or groups.shape != (embeddings.shape[0],):
        raise LangDMLError(
            f"grouped_unit_mean: expected (N, d) rows and N group ids, got "
            f"{tuple(embeddings.shape)} and {tuple(groups.shape)}"
        )
    counts = torch.bincount(groups, minlength=num_groups)
    if counts.numel() != num_groups or bool((counts == 0).any()):
        raise LangDMLError(f"grouped_unit_mean: every one of {num_groups} groups needs a row")
    rows = F.normalize(embeddings.float(), dim=-1)
    sums = torch.zeros(num_groups, rows.shape[1]).index_add_(0, groups, rows)
    return F.normalize(sums / counts.unsqueeze(1).float(), dim=-1)
