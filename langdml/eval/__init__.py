"""Evaluation: exact faiss kNN retrieval metrics (Recall@k, MAP@R, R-precision) and NMI / AMI."""

from langdml.eval.knn import knn_search, l2_normalize
from langdml.eval.metrics import adjusted_mutual_info, kmeans_assign, retrieval_metrics

__all__ = [
    "adjusted_mutual_info",
    "kmeans_assign",
    "knn_search",
    "l2_normalize",
    "retrieval_metrics",
]
