"""The names of the metrics ``retrieval_metrics`` returns, for the stages that sort metric columns
from other numbers (training logs, ablation tables) without importing the search code."""

from __future__ import annotations

# Every metric key retrieval_metrics can return (recall@K for any K besides these).
_KEYS = ("map@r", "r_precision", "nmi", "ami", "map@1000", "f1")


def is_metric_key(key: str) -> bool:
    """A retrieval / clustering metric name (recall@K for any K)."""
    return key in _KEYS or (key[:7] == "recall@" and key[7:].isdigit())
