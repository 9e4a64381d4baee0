"""The eval section of an experiment config: which metrics, how often, which kNN search."""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from langdml.config.base import _Strict


class EvalConfig(_Strict):
    every: int = Field(5, ge=1, description="Evaluate every N epochs (and after the last).")
    best_metric: str = Field(
        "recall@1", description="Metric that picks best.pt: recall@K, map@r, r_precision, nmi, ami."
    )
    recall_at: list[int] = Field(
        default_factory=lambda: [1, 2, 4, 8],
        description="The k of recall@k (train, evaluate, ablate), e.g. [1, 10, 100, 1000] for SOP.",
    )
    clustering: bool = Field(
        True, description="Also compute NMI, AMI and the pairwise F1 (k-means)."
    )
    metric: Literal["cosine", "euclidean"] = Field(
        "cosine", description="Similarity of the kNN retrieval."
    )
    xmodal: bool = Field(
        False,
        description="After training, also measure image <-> class-name retrieval on the "
        "held-out classes (langdml.xmodal); an ablation's table then gets cross-modal columns.",
    )
    search: Literal["exact", "ivf", "hnsw", "auto"] = Field(
        "exact",
        description="kNN search of the metrics: exact, an approximate faiss index for large eval "
        "sets (ivf, hnsw; they also report neighbor_recall), or auto: the cheapest of exact / "
        "hnsw / ivf whose neighbour recall on a seeded query sample reaches "
        "search_params.target_recall (default 0.95), chosen by measurement.",
    )
    search_params: dict[str, Any] = Field(
        default_factory=dict,
        description="Options of the search: ivf nlist / nprobe / train_size, hnsw M / "
        "efConstruction / efSearch, auto target_recall, any recall_queries; e.g. {nprobe: 128}.",
    )
    rerank: Literal["none", "qe", "k_reciprocal"] = Field(
        "none",
        description="Re-rank each query's exact neighbour list before scoring: qe (average or "
        "alpha-weighted query expansion) or k_reciprocal (Zhong et al., CVPR 2017).",
    )
    rerank_params: dict[str, float] = Field(
        default_factory=dict,
        description="Options of the re-ranking: qe n (neighbours averaged), alpha (0: plain "
        "average); k_reciprocal k1, k2, lambda, candidates.",
    )
    hierarchy: str | None = Field(
        None,
        description="Class hierarchy of the mistake-severity metrics: a CSV/TSV file of "
        "class_name,group[/subgroup]; null: the dataset's own (emoji: Unicode group/subgroup); "
        "none: off.",
    )

    @field_validator("recall_at")
    @classmethod
    def _check_recall_at(cls, ks: list[int]) -> list[int]:
        if not ks or any(k < 1 for k in ks) or len(set(ks)) != len(ks):
            raise ValueError(f"recall_at must be distinct positive integers, got {ks}")
        return sorted(ks)

    @model_validator(mode="after")
    def _check_search(self) -> EvalConfig:
        from langdml.eval.ann import check_search
        from langdml.eval.rerank import check_rerank

        check_search(self.search, self.search_params)
        check_rerank(self.rerank, self.rerank_params)
        if self.rerank != "none" and self.search != "exact":
            raise ValueError(
                f"eval.rerank {self.rerank!r} re-ranks an exact search; set eval.search: exact "
                f"(got {self.search!r})"
            )
        k = self.best_metric[7:] if self.best_metric.startswith("recall@") else ""
        if k.isdigit() and int(k) not in self.recall_at:
            raise ValueError(
                f"eval.best_metric {self.best_metric!r} needs {k} in eval.recall_at "
                f"{self.recall_at}"
            )
        names = [f"recall@{k}" for k in self.recall_at] + ["map@r", "r_precision", "map@1000"]
        names += ["nmi", "ami", "f1"] if self.clustering else []
        if self.best_metric not in names:
            near = difflib.get_close_matches(self.best_metric, names, n=1)
            raise ValueError(
                f"best_metric {self.best_metric!r} is not a metric this evaluation computes; "
                + (f"did you mean {near[0]!r}? " if near else "")
                + f"expected one of {', '.join(names)}"
            )
        return self
