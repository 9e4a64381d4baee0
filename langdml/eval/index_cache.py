"""One approximate index for several metric calls on the same reference.

``retrieval_metrics(..., index_cache=IndexCache())`` builds an approximate index (``eval.ann``)
once and searches it again on a later call with the same reference object and settings.
"""

from __future__ import annotations

from typing import Any

from langdml.eval.ann import ApproxKNN, Rows, SearchSpec
from langdml.eval.knn import SearchBackend


class IndexCache:
    """Keeps the approximate indexes ``retrieval_metrics(..., index_cache=...)`` builds, so a later
    call on the same reference -- the same Python object, unchanged since -- with the same metric,
    search, parameters and seed searches the index already built instead of building it again
    (e.g. metrics over all queries, then over a ``query_sample``, from one HNSW graph, whose
    multi-threaded build is not bit-reproducible). The cache holds a reference to each array it
    indexed so that its identity cannot be reused by another object."""

    def __init__(self) -> None:
        self._entries: list[tuple[Any, tuple, ApproxKNN]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def get(
        self,
        source: Any,
        reference: Rows,
        metric: str,
        spec: SearchSpec,
        seed: int,
        backend: SearchBackend | None,
    ) -> ApproxKNN:
        """The index over ``reference`` (read from the array ``source``), built on first use."""
        key = (reference.n, reference.d, metric, spec.kind, tuple(sorted(spec.params.items())))
        key += (int(seed), str(backend))
        for held, held_key, engine in self._entries:
            if held is source and held_key == key:
                return engine
        engine = ApproxKNN(reference, metric, spec, seed, backend)
        self._entries.append((source, key, engine))
        return engine
