"""Evaluation: exact kNN retrieval metrics (Recall@k, MAP@R, R-precision; faiss, or torch on a GPU
without faiss-gpu) and NMI / AMI."""

from langdml.eval.knn import SearchBackend, knn_search, l2_normalize, resolve_backend
from langdml.eval.metrics import adjusted_mutual_info, kmeans_assign, retrieval_metrics

__all__ = [
    "SearchBackend",
    "adjusted_mutual_info",
    "kmeans_assign",
    "knn_search",
    "l2_normalize",
    "resolve_backend",
    "retrieval_metrics",
]
