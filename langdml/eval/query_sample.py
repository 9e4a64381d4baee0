"""The query sample of ``retrieval_metrics(query_sample=...)``: the kNN metrics average over a
seeded sample of the queries (the reference is unchanged), so exact metrics of a sample can price
an approximate search at a size where an exact search over all queries is too slow."""

from __future__ import annotations

from typing import Any

import numpy as np

from langdml.errors import LangDMLError


def check_query_sample(query_sample: Any) -> None:
    """None, or a positive integer; anything else is one LangDMLError line."""
    if query_sample is None:
        return
    if (
        isinstance(query_sample, bool)
        or not isinstance(query_sample, int | np.integer)
        or query_sample < 1
    ):
        raise LangDMLError(
            f"query_sample must be a positive integer (queries to sample) or None; "
            f"got {query_sample!r}"
        )


def sample_queries(n: int, query_sample: int | None, seed: int) -> np.ndarray:
    """Sorted ids of the queries the kNN metrics average over: all, or a seeded sample."""
    if query_sample is None or query_sample >= n:
        return np.arange(n)
    rng = np.random.default_rng([seed, 0x5A])  # its own stream: not the neighbor-recall sample
    return np.sort(rng.choice(n, query_sample, replace=False))
