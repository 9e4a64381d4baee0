"""The public kNN entry point: exact search (``langdml.eval.knn``) or an approximate faiss index
(``langdml.eval.ann``), one contract for both. Lives above both modules so neither imports the
other's dispatcher."""

from __future__ import annotations

from typing import Any

import numpy as np

from langdml.eval.ann import approx_knn_search, check_search
from langdml.eval.knn import check_metric, exact_knn_search


def knn_search(
    query: Any,
    reference: Any = None,
    k: int = 10,
    *,
    exclude_self: bool = False,
    metric: str = "cosine",
    device: Any = "auto",
    chunk_size: int | None = None,
    search: str = "exact",
    search_params: Any = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest reference items of every query: ``(distances, indices)``, both (N, k).

    ``reference=None`` searches the queries themselves. ``exclude_self=True`` treats query i as
    reference row i and leaves it out by index (leave-one-out); it needs ``len(query) <=
    len(reference)``. ``distances`` are cosine similarities (descending) for ``metric="cosine"`` and
    squared Euclidean distances (ascending) for ``"euclidean"``; ``indices`` are int64 rows of the
    reference. Ties are ordered by ascending reference index (module docstring). Accepts torch
    tensors or numpy arrays; returns numpy arrays. ``search="ivf"`` / ``"hnsw"`` (with
    ``search_params`` and ``seed``) is an approximate search, ``langdml.eval.ann``; its rows hold
    index -1 where the index reached fewer than k items.
    """
    check_metric(metric)
    if search != "exact" or search_params:
        spec = check_search(search, search_params)
        if spec.approximate:
            return approx_knn_search(
                query, reference, k, exclude_self, metric, device, chunk_size, spec, seed
            )
    return exact_knn_search(
        query,
        reference,
        k,
        exclude_self=exclude_self,
        metric=metric,
        device=device,
        chunk_size=chunk_size,
    )
