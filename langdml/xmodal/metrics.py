"""Cross-modal retrieval metrics (image ↔ class-name text) and their chance levels.

Both directions rank a gallery of the other modality by cosine similarity with the eval module's
code — :func:`langdml.eval.retrieval_metrics` in query/reference mode for R@k and MAP@R, and its
exact kNN search :func:`langdml.eval.knn_search` over the whole gallery for full-ranking AP (so
the tie order, equal scores by ascending gallery index, is the eval module's):

- image→text (i2t): each image is a query against the gallery of class-name embeddings.
  ``i2t_r@k`` = fraction of images whose own class name is among the k nearest names
  (``i2t_r@1`` is zero-shot classification accuracy); ``i2t_map`` = mean average precision of the
  full name ranking. With exactly one relevant name per image, AP = 1/rank of that name, so
  ``i2t_map`` equals the mean reciprocal rank (MRR).
- text→image (t2i): each class name is a query against all images. ``t2i_r@k`` = fraction of
  names with at least one image of their class among the k nearest images; ``t2i_map@r`` = MAP@R
  (R = number of images of the class; (1/R) Σ_{i≤R} P@i · rel_i, as the DML protocol);
  ``t2i_map`` = average precision over the full image ranking,
  AP = (1/R) Σ_{i=1}^{N} P@i · rel_i. Names with no image in the gallery are left out.

All averages are over queries (images for i2t, names for t2i).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from langdml.errors import LangDMLError

I2T_KS = (1, 5)
T2I_KS = (1, 10)
METRIC_KEYS = ("i2t_r@1", "i2t_r@5", "i2t_map", "t2i_r@1", "t2i_r@10", "t2i_map@r", "t2i_map")
# Ranked entries (queries x gallery) scored per knn_search call: bounds memory to ~200 MB.
_RANK_ENTRIES = 1 << 24


def _labels(labels: Any, n: int, what: str) -> np.ndarray:
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1 or len(arr) != n:
        raise LangDMLError(f"{what}: expected {n} labels (one per row), got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise LangDMLError(f"{what} must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def full_ranking_ap(
    query: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    device: Any = "cpu",
) -> np.ndarray:
    """Per-query average precision over the full cosine ranking of ``gallery`` (kNN order):
    AP = (1/R) Σ_{i=1}^{G} P@i · rel_i, R = number of relevant gallery items (must be >= 1).
    Queries are ranked in chunks, so memory stays bounded whatever the sizes."""
    from langdml.eval.search import knn_search

    k = len(gallery)
    step = max(1, _RANK_ENTRIES // k)
    ranks = np.arange(1, k + 1, dtype=np.float64)
    out = np.empty(len(query), dtype=np.float64)
    for s in range(0, len(query), step):
        _, idx = knn_search(query[s : s + step], gallery, k, metric="cosine", device=device)
        rel = gallery_labels[idx] == query_labels[s : s + step, None]
        hits = np.cumsum(rel, axis=1, dtype=np.int64)
        out[s : s + step] = (hits / ranks * rel).sum(axis=1) / rel.sum(axis=1)
    return out


def crossmodal_metrics(
    image_embeddings: Any,
    image_labels: Any,
    text_embeddings: Any,
    text_labels: Any = None,
    *,
    chance: bool = True,
    device: Any = "cpu",
) -> dict[str, float]:
    """Image→text and text→image retrieval metrics (module docstring) as a flat dict of floats.

    ``image_embeddings`` (N, d) and ``text_embeddings`` (T, d) must live in one space (cosine
    similarity); ``text_labels`` (T,) gives each text row's class (default: row t is class t).
    Every image's class must have a text. With ``chance=True`` the analytic expectation of each
    metric under a uniformly random ranking is added as ``chance_<key>``
    (:func:`chance_levels`, computed for the actual class sizes).
    """
    from langdml.eval import retrieval_metrics
    from langdml.eval.knn import as_float32_matrix

    img = as_float32_matrix(image_embeddings, "image embeddings")
    txt = as_float32_matrix(text_embeddings, "text embeddings")
    if img.shape[1] != txt.shape[1]:
        raise LangDMLError(
            f"image embeddings are {img.shape[1]}-d but text embeddings {txt.shape[1]}-d; both "
            "must live in one space (project the text side, e.g. method aligned or text_proxies)"
        )
    y_img = _labels(image_labels, len(img), "image labels")
    y_txt = (
        np.arange(len(txt))
        if text_labels is None
        else _labels(text_labels, len(txt), "text labels")
    )
    texts_per_class = {c: n for c, n in zip(*np.unique(y_txt, return_counts=True), strict=True)}
    no_text = sorted(set(np.unique(y_img).tolist()) - set(texts_per_class))
    if no_text:
        raise LangDMLError(
            f"images of classes {no_text[:5]} have no text embedding; expected a class-name "
            "embedding for every image's class"
        )
    classes, images_per_class = np.unique(y_img, return_counts=True)
    size = dict(zip(classes.tolist(), images_per_class.tolist(), strict=True))

    has_images = np.array([c in size for c in y_txt.tolist()])
    t_q, t_y = txt[has_images], y_txt[has_images]

    i2t = retrieval_metrics(
        img,
        y_img,
        reference=txt,
        reference_labels=y_txt,
        include=("recall",),
        recall_ks=I2T_KS,
        device=device,
    )
    t2i = retrieval_metrics(
        t_q,
        t_y,
        reference=img,
        reference_labels=y_img,
        include=("recall", "map_r"),
        recall_ks=T2I_KS,
        device=device,
    )
    out = {f"i2t_r@{k}": i2t[f"recall@{k}"] for k in I2T_KS}
    out["i2t_map"] = float(full_ranking_ap(img, y_img, txt, y_txt, device).mean())
    out.update({f"t2i_r@{k}": t2i[f"recall@{k}"] for k in T2I_KS})
    out["t2i_map@r"] = t2i["map@r"]
    out["t2i_map"] = float(full_ranking_ap(t_q, t_y, img, y_img, device).mean())
    if chance:
        # Chance is defined for one text per class; the gallery sizes are the actual ones.
        levels = chance_levels(len(txt), [size[c] for c in t_y.tolist()], num_images=len(img))
        out.update({f"chance_{k}": v for k, v in levels.items()})
    return out


def _harmonic(n: int) -> float:
    return float(np.sum(1.0 / np.arange(1, n + 1))) if n > 0 else 0.0


def _expected_ap(num_relevant: int, num_items: int, cutoff: int) -> float:
    """E[(1/R) Σ_{i≤cutoff} P@i · rel_i] for R relevant items uniformly placed among N.

    E[rel_i] = R/N and E[rel_i rel_j] = R(R-1)/(N(N-1)) (i ≠ j), so
    E = (1/N) H_m + (R-1)/(N(N-1)) · (m - H_m) with m = cutoff and H_m the m-th harmonic number.
    """
    r, n, m = num_relevant, num_items, cutoff
    h = _harmonic(m)
    pair = (r - 1) / (n * (n - 1)) if n > 1 else 0.0
    return h / n + pair * (m - h)


def _expected_recall(num_relevant: int, num_items: int, k: int) -> float:
    """P(at least one of R relevant items in the top k of N) = 1 - C(N-R, k) / C(N, k)."""
    if k >= num_items - num_relevant + 1:
        return 1.0
    log_miss = sum(math.log((num_items - num_relevant - j) / (num_items - j)) for j in range(k))
    return 1.0 - math.exp(log_miss)


def chance_levels(
    num_classes: int, images_per_class: int | Sequence[int], num_images: int | None = None
) -> dict[str, float]:
    """Expected value of each cross-modal metric under a uniformly random ranking.

    ``num_classes`` C names in the i2t gallery (one per class); ``images_per_class`` n (one number
    for equal classes, else one per name query); ``num_images`` N (default Σ n or C·n). Then:
    i2t_r@k = min(k, C)/C; i2t_map = MRR = H_C / C; per name with R = n_c images among N:
    t2i_r@k = 1 - C(N-R, k)/C(N, k); t2i_map@r = H_R/N + (R-1)/(N(N-1))·(R - H_R);
    t2i_map = H_N/N + (R-1)/(N(N-1))·(N - H_N); t2i values are averaged over the names.
    """
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, int | np.integer)
        or num_classes < 1
    ):
        raise LangDMLError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if isinstance(images_per_class, int | np.integer):
        sizes = [int(images_per_class)] * int(num_classes)
    else:
        sizes = [int(n) for n in images_per_class]
    if not sizes or min(sizes) < 1:
        raise LangDMLError(f"images_per_class must be >= 1 per class, got {images_per_class!r}")
    n_img = int(num_images) if num_images is not None else sum(sizes)
    if n_img < max(sizes):
        raise LangDMLError(f"num_images={n_img} is smaller than a class ({max(sizes)} images)")
    c = int(num_classes)
    out = {f"i2t_r@{k}": min(k, c) / c for k in I2T_KS}
    out["i2t_map"] = _harmonic(c) / c
    for k in T2I_KS:
        out[f"t2i_r@{k}"] = float(np.mean([_expected_recall(r, n_img, k) for r in sizes]))
    out["t2i_map@r"] = float(np.mean([_expected_ap(r, n_img, r) for r in sizes]))
    out["t2i_map"] = float(np.mean([_expected_ap(r, n_img, n_img) for r in sizes]))
    return out
