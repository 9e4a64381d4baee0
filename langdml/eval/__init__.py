"""Evaluation: kNN retrieval metrics (Recall@k, MAP@R, R-precision; exact faiss, torch on a GPU
without faiss-gpu, or approximate IVF / HNSW faiss indexes with a measured neighbor_recall) and
NMI / AMI."""

from langdml.eval.ann import SEARCHES, check_search
from langdml.eval.kmeans import kmeans_assign
from langdml.eval.knn import SearchBackend, l2_normalize, resolve_backend
from langdml.eval.metrics import adjusted_mutual_info, retrieval_metrics
from langdml.eval.search import knn_search

__all__ = [
    "SEARCHES",
    "SearchBackend",
    "adjusted_mutual_info",
    "check_search",
    "kmeans_assign",
    "knn_search",
    "l2_normalize",
    "resolve_backend",
    "retrieval_metrics",
]
