"""Evaluation: kNN retrieval metrics (Recall@k, MAP@R, R-precision; exact faiss, torch on a GPU
without faiss-gpu, or approximate IVF / HNSW faiss indexes with a measured neighbor_recall) and
NMI / AMI.

Exports resolve on first use, so a module of this package (the search options of a command, the
approximate index) loads without the metrics' scikit-learn."""

from langdml._lazy import lazy_getattr

_EXPORTS = {
    "SEARCHES": "langdml.eval.ann",
    "check_search": "langdml.eval.ann",
    "kmeans_assign": "langdml.eval.kmeans",
    "SearchBackend": "langdml.eval.knn",
    "l2_normalize": "langdml.eval.knn",
    "resolve_backend": "langdml.eval.knn",
    "adjusted_mutual_info": "langdml.eval.metrics",
    "retrieval_metrics": "langdml.eval.metrics",
    "knn_search": "langdml.eval.search",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
