"""k-means of the clustering metrics: ``kmeans_assign`` (faiss, CPU or GPU), and Lloyd k-means
in torch for a GPU when faiss has no GPU support (``torch_kmeans_assign``).

The torch version follows faiss's ``Kmeans`` recipe (the one PML's NMI/AMI use): the initial
centroids are ``k`` distinct training rows drawn with the seed, each iteration assigns every row
to its nearest centroid (squared L2) and moves each centroid to the mean of its rows, and a
cluster left empty takes over half of a large cluster: it copies that cluster's centroid, and the
two copies are pushed apart by a relative 1/1024 in alternating directions per dimension. Random
streams differ from faiss's, so on data without a clear cluster structure the partition (and
NMI/AMI) differs from CPU faiss's by k-means' own seed-to-seed variation; on well-separated data
both find it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from langdml.eval.knn import _faiss, resolve_backend

_EPS = 1.0 / 1024
_BLOCK_BYTES = 1 << 30  # distance block: rows x k float32 scores at a time


def _nearest(x, centroids, rows: int):
    """Index of the nearest centroid (squared L2) of every row, in blocks of ``rows``."""
    import torch

    half_sq = 0.5 * (centroids * centroids).sum(1)
    out = torch.empty(len(x), dtype=torch.long, device=x.device)
    for s in range(0, len(x), rows):
        # argmin |x - c|^2 = argmax x.c - |c|^2 / 2 (|x|^2 is the same for every centroid)
        out[s : s + rows] = (x[s : s + rows] @ centroids.T - half_sq).argmax(1)
    return out


def torch_kmeans_assign(
    x: np.ndarray, n_clusters: int, seed: int = 0, niter: int = 20, device: str = "cpu"
) -> np.ndarray:
    """The cluster of every row of ``x`` (N, d) after ``niter`` seeded Lloyd steps on ``device``."""
    import torch

    n, k = len(x), int(n_clusters)
    if not 1 <= k <= n:
        raise ValueError(f"n_clusters must be in [1, {n}]; got {k}")
    data = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    rows = max(1, _BLOCK_BYTES // (4 * k))
    gen = torch.Generator().manual_seed(int(seed))
    centroids = data[torch.randperm(n, generator=gen)[:k].to(device)].clone()
    sign = torch.where(torch.arange(data.shape[1], device=device) % 2 == 0, 1.0, -1.0)
    for _ in range(int(niter)):
        assign = _nearest(data, centroids, rows)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, assign, data)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None].to(sums.dtype)
        empty = torch.nonzero(~filled).flatten().tolist()
        if empty:
            sizes = counts.clone()
            for e in empty:  # split the currently largest cluster in two
                big = int(sizes.argmax())
                base = centroids[big].clone()
                centroids[e] = base * (1 + _EPS * sign)
                centroids[big] = base * (1 - _EPS * sign)
                sizes[e] = sizes[big] - sizes[big] // 2
                sizes[big] //= 2
    return _nearest(data, centroids, rows).cpu().numpy()


def kmeans_assign(
    x: np.ndarray, n_clusters: int, seed: int = 0, niter: int = 20, device: Any = "cpu"
) -> np.ndarray:
    """k-means (``niter`` Lloyd iterations, seeded) of the rows of x; the cluster of each row.

    ``device`` as in :func:`retrieval_metrics`. On faiss (CPU, or GPU with faiss-gpu) it is the
    same faiss call as PML's ``FaissKMeans(niter=20)`` (which uses faiss's default seed 1234);
    ``min_points_per_centroid=1`` only silences faiss's "please provide at least ... points"
    warning (DML test sets have ~5-60 points per class). On the torch backend (a GPU without
    faiss-gpu) it is ``langdml.eval.kmeans.torch_kmeans_assign``.
    """
    backend = resolve_backend(device)
    if backend.kind == "torch":
        return torch_kmeans_assign(x, n_clusters, seed, niter, backend.torch_device)
    faiss = _faiss()
    km = faiss.Kmeans(
        x.shape[1],
        int(n_clusters),
        niter=int(niter),
        seed=int(seed),
        min_points_per_centroid=1,
        verbose=False,
        gpu=1 if backend.kind == "faiss-gpu" else False,
    )
    km.train(x)
    _, assign = km.index.search(x, 1)
    return assign[:, 0]
