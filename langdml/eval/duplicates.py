"""Identical rows of an embedding matrix, and exact neighbour lists expanded from their
distinct rows.

Why: identical embeddings (a collapsed class, repeated images) have identical scores to every
query, so an exact search whose contract breaks ties by ascending reference index
(``langdml.eval.knn``) meets tie groups as large as the number of copies, and finding the
lowest-indexed members of a big tie group by searching again with a larger k costs several full
searches. Searching the *distinct* rows instead and expanding each one into its copies gives the
same neighbour lists in one search, whatever the number of copies.

The expansion is exact. Distinct rows are numbered by their first occurrence, so among distinct
rows of equal score ascending number means ascending lowest member index. Take the canonical
(score, number) top ``min(k, M)`` of the ``M`` distinct rows. Every distinct row scoring strictly
better than the k-th expanded entry is among them with all its copies; the k-th entry's tie group
needs at most ``need = k - (copies scoring better)`` members, and the returned part of that group
holds at least ``need`` distinct rows (every distinct row has a copy), each with a member index
lower than any member of a group row left out. So the first k entries of the stable
(score, index) sort of the expanded list are the first k of the full reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Elements hashed or compared per block: temporaries stay near 256 KiB whatever the matrix size.
_BLOCK_ELEMENTS = 1 << 15
_MULTIPLIERS: dict[int, np.ndarray] = {}


@dataclass(frozen=True)
class DuplicateRows:
    """The distinct rows of a matrix, numbered by first occurrence.

    ``first``: (M,) the row where each distinct row first occurs (``x[first]`` are the distinct
    rows, made only when needed: no copy of the matrix is kept); ``inverse``: (N,) each row's
    number; ``order``: (N,) the row indices grouped by number, ascending within a group;
    ``starts``: (M + 1,) where each group begins in ``order``; ``counts``: (M,) copies per
    distinct row; ``member_key``: (N,) ``number * (N + 1) + index`` along ``order``, ascending
    (to count a group's members up to an index by one ``searchsorted``)."""

    first: np.ndarray
    inverse: np.ndarray
    order: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    member_key: np.ndarray

    @property
    def n(self) -> int:
        return len(self.inverse)

    @property
    def m(self) -> int:
        return len(self.first)


def _row_hashes(x: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's float32 bit pattern (equal rows, equal hashes)."""
    d = x.shape[1]
    if d not in _MULTIPLIERS:
        rng = np.random.default_rng(d)
        _MULTIPLIERS[d] = rng.integers(1, 2**63, d, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    mult = _MULTIPLIERS[d]
    bits = x.view(np.uint32)
    out = np.empty(len(x), dtype=np.uint64)
    step = _block_rows(d)
    with np.errstate(over="ignore"):
        for s in range(0, len(x), step):
            block = bits[s : s + step].astype(np.uint64)
            block ^= block >> np.uint64(7)  # mix the low bits in before the products wrap
            block *= mult
            out[s : s + step] = block.sum(axis=1)
    return out


def _block_rows(d: int) -> int:
    return max(1, _BLOCK_ELEMENTS // max(d, 1))


def _same_rows(x: np.ndarray, first: np.ndarray, inverse: np.ndarray) -> bool:
    """Whether every row equals the first row of its group, compared a block at a time."""
    step = _block_rows(x.shape[1])
    return all(
        np.array_equal(x[s : s + step], x[first[inverse[s : s + step]]])
        for s in range(0, len(x), step)
    )


def _group(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first row of each distinct key in first-occurrence order, each row's group number)."""
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    by_first = np.argsort(first, kind="stable")
    rank = np.empty_like(by_first)
    rank[by_first] = np.arange(len(by_first))
    return first[by_first], rank[inverse.reshape(-1)]


def find_duplicates(
    x: np.ndarray, min_share: float = 0.0, min_group: int = 2
) -> DuplicateRows | None:
    """The distinct rows of the float32 matrix ``x``, or None when it has no copies, or when
    fewer than ``min_share`` of its rows are copies of an earlier row and no row has
    ``min_group`` or more copies (counting itself). Rows are equal when their float32 bits are;
    a hash collision is resolved by comparing the rows themselves."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    first, inverse = _group(_row_hashes(x))
    if len(first) == len(x):  # every hash distinct: no copies (and no collision to undo)
        return None
    if not _same_rows(x, first, inverse):  # a 64-bit collision: group by the bytes
        first, inverse = _group(x.view(np.dtype((np.void, x.shape[1] * 4))).reshape(-1))
    copies = len(x) - len(first)
    if copies == 0:
        return None
    counts = np.bincount(inverse, minlength=len(first))
    if copies < min_share * len(x) and counts.max() < min_group:
        return None
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    member_key = inverse[order].astype(np.int64) * (len(x) + 1) + order
    return DuplicateRows(first, inverse, order, starts, counts, member_key)


def _taken(key, counts, I, dup: DuplicateRows, k: int) -> np.ndarray:
    """How many members of each returned distinct row can be among the first ``k`` entries
    (rows of ``key``/``counts``/``I`` sorted by key): all of those scoring better than the k-th
    entry; of the boundary tie group (``need`` entries to fill), at most ``need - t`` of its t-th
    row (the t rows before it each bring a lower index) and only members up to ``tau``, the lowest
    index of the group's ``need``-th row (the ``need`` rows before it already hold ``need``
    indices up to ``tau``). Both caps keep a tie over many distinct rows (a zero query in cosine)
    small."""
    rows, width = I.shape
    cum = np.cumsum(counts, axis=1)
    at = np.arange(rows)
    boundary = key[at, (cum < k).sum(axis=1)][:, None]  # the key of the k-th entry
    in_group = key == boundary
    g0 = in_group.argmax(axis=1)[:, None]  # the group starts here (rows are key-sorted)
    better = np.where(g0[:, 0] > 0, cum[at, np.maximum(g0[:, 0] - 1, 0)], 0)
    need = (k - better)[:, None]
    t = np.arange(width)[None, :] - g0
    last = g0[:, 0] + need[:, 0] - 1  # the group's need-th row, when returned and tied
    has_tau = (last < width) & in_group[at, np.minimum(last, width - 1)]
    tau = np.where(has_tau, dup.first[I[at, np.minimum(last, width - 1)]], dup.n)[:, None]
    upto = np.searchsorted(dup.member_key, I * (dup.n + 1) + tau, side="right")
    cap = np.maximum(np.minimum(np.minimum(counts, need - t), upto - dup.starts[I]), 0)
    return np.where(t < 0, counts, np.where(in_group, cap, 0))


def expand_neighbours(
    D: np.ndarray, I: np.ndarray, dup: DuplicateRows, k: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` neighbours over the full matrix, in (score, index) order, from the
    canonical top ``min(k, M)`` distinct rows ``(D, I)`` of each query (``I``: group numbers).
    Exact by the argument in the module docstring."""
    rows = len(I)
    key = -D if metric == "cosine" else D
    take = _taken(key, dup.counts[I], I, dup, k)
    flat = take.ravel()
    total = take.sum(axis=1)
    offset = np.arange(int(flat.sum())) - np.repeat(np.cumsum(flat) - flat, flat)
    group = np.repeat(I.ravel(), flat)
    member = dup.order[dup.starts[group] + offset]  # each group's lowest indices first
    score = np.repeat(D.ravel(), flat)
    sort_key = -score if metric == "cosine" else score
    ranked = np.lexsort((member, sort_key, np.repeat(np.arange(rows), total)))
    first = np.concatenate([[0], np.cumsum(total)[:-1]])
    pick = ranked[(first[:, None] + np.arange(k)[None, :]).ravel()]
    return score[pick].reshape(rows, k), member[pick].reshape(rows, k)
