"""The queries-inside-the-reference mapping of ``retrieval_metrics(self_index=...)``.

When the reference set contains the queries (a gallery that holds the query images, PML's
``ref_includes_query=True``), each query must not retrieve itself and must not count itself among
its relevant items. ``self_index[i]`` names the reference row that *is* query i, or -1 when query i
is not in the reference. Leave-one-out (no reference) is the special case ``self_index =
arange(N)`` over the queries themselves.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from langdml.errors import LangDMLError


def leave_out_rows(
    self_index: Any,
    q_codes: np.ndarray,
    r_codes: np.ndarray,
    n_ref: int | None,
    reranking: bool = False,
) -> np.ndarray | None:
    """Per query, the reference row to leave out (-1: none): ``arange(N)`` for leave-one-out
    (``n_ref`` None: no reference), the checked ``self_index`` with a reference, or None when
    nothing is left out. ``reranking``: a re-ranked search, which does not take ``self_index``."""
    if n_ref is None:
        if self_index is not None:
            raise LangDMLError(
                "self_index needs a reference; without one every query is already left out of "
                "its own neighbours"
            )
        return np.arange(len(q_codes), dtype=np.int64)
    if self_index is None:
        return None
    if reranking:
        raise LangDMLError("self_index is not supported with rerank; use rerank='none'")
    return check_self_index(self_index, len(q_codes), n_ref, q_codes, r_codes)


def check_self_index(
    self_index: Any, n_query: int, n_ref: int, q_codes: np.ndarray, r_codes: np.ndarray
) -> np.ndarray:
    """``self_index`` as an (n_query,) int64 array with entries in [-1, n_ref); each named
    reference row must carry its query's label (it is the same item)."""
    if hasattr(self_index, "detach") and hasattr(self_index, "cpu"):
        self_index = self_index.detach().cpu().numpy()
    arr = np.asarray(self_index)
    if arr.ndim != 1 or len(arr) != n_query:
        raise LangDMLError(
            f"self_index must be a 1-D array with one entry per query ({n_query}); "
            f"got shape {arr.shape}"
        )
    if arr.size and arr.dtype.kind not in "iu":
        raise LangDMLError(f"self_index must hold integer reference rows or -1; got {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = np.flatnonzero((arr < -1) | (arr >= n_ref))
    if bad.size:
        i = int(bad[0])
        raise LangDMLError(
            f"self_index[{i}] = {int(arr[i])}; expected a reference row in [0, {n_ref}) or -1"
        )
    inside = np.flatnonzero(arr >= 0)
    rows = arr[inside]
    if np.unique(rows).size != rows.size:
        raise LangDMLError("self_index names the same reference row for two queries")
    wrong = inside[r_codes[rows] != q_codes[inside]]
    if wrong.size:
        i = int(wrong[0])
        raise LangDMLError(
            f"self_index[{i}] = {int(arr[i])} but that reference row has another label than "
            f"query {i}; expected the row that is the query itself"
        )
    return arr
