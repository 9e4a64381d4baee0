"""Language–vision agreement: does a text model's notion of class similarity match what looks alike?

On the TRAIN classes only (the class-disjoint split's train classes, minus the validation
classes of a fraction or fold, as training), two C × C cosine-similarity matrices are compared:

- names: the class-name text embeddings (``langdml precompute``, same prompts and cache);
- images: the class centroids of the frozen trunk's features (each image feature L2-normalised,
  averaged per class, renormalised), from the feature cache training uses.

Reported: the Spearman rank correlation of the two matrices' off-diagonal upper triangles (global
agreement), the mean overlap |N_k^names(c) ∩ N_k^images(c)| / k of each class's k nearest other
classes (local agreement; chance k / (C − 1)), and both numbers for the shuffled-names control (a
seeded permutation of the text rows over the classes, averaged over several seeds), which keeps the
name matrix's spectrum but destroys its meaning.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langdml.errors import LangDMLError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from langdml.data import ImageDataset
    from langdml.models import FeatureSpec

DEFAULT_K = 10
DEFAULT_SEEDS = 5
__all__ = [
    "Agreement",
    "AgreementRequest",
    "agreement",
    "agreement_of",
    "class_centroids",
    "diagnose",
    "format_table",
    "knn_overlap",
    "nearest_classes",
    "spearman_upper",
    "train_classes",
    "train_features",
]


@dataclass(frozen=True)
class Agreement:
    """How well name similarity matches image (centroid) similarity over ``num_classes``."""

    num_classes: int
    k: int
    spearman: float
    overlap: float  # mean fraction of each class's k nearest classes shared by both matrices
    shuffled_spearman: float  # mean over ``seeds`` permutations of the names
    shuffled_overlap: float
    shuffled_spearman_std: float
    shuffled_overlap_std: float
    chance_overlap: float  # k / (C - 1): expected overlap of two random neighbour sets
    seeds: int
    model: str = ""
    dataset: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def class_centroids(
    features: torch.Tensor, labels: Sequence[int], num_classes: int
) -> torch.Tensor:
    """(C, D) unit rows: the renormalised mean of each class's unit feature vectors."""
    import torch
    import torch.nn.functional as F

    feats = F.normalize(torch.as_tensor(features).double(), dim=1)
    labels = torch.as_tensor(labels, dtype=torch.long)
    counts = torch.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        empty = torch.nonzero(counts == 0).flatten().tolist()
        raise LangDMLError(f"classes {empty[:10]} have no images; cannot form their centroids")
    sums = torch.zeros(num_classes, feats.shape[1], dtype=torch.float64)
    return F.normalize(sums.index_add_(0, labels, feats), dim=1)


def cosine_matrix(x: torch.Tensor) -> np.ndarray:
    import torch.nn.functional as F

    x = F.normalize(x.double(), dim=-1)
    return (x @ x.T).numpy()


def rank_matrix(sim: np.ndarray) -> np.ndarray:
    """Symmetric matrix of the ranks (ties averaged) of the strictly upper-triangular entries.

    Permuting the classes permutes the entries, not their ranks, so a shuffled-names matrix's
    ranks are ``rank_matrix(sim)[p][:, p]``: ranking once serves every permutation.
    """
    import numpy as np
    from scipy.stats import rankdata

    iu = np.triu_indices(sim.shape[0], k=1)
    ranks = np.zeros(sim.shape, dtype=np.float64)
    ranks[iu] = rankdata(sim[iu])
    return ranks + ranks.T


def _pearson_upper(a: np.ndarray, b: np.ndarray) -> float:
    import numpy as np

    iu = np.triu_indices(a.shape[0], k=1)
    x, y = a[iu], b[iu]
    if x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def spearman_upper(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of the strictly upper-triangular entries of two square matrices."""
    return _pearson_upper(rank_matrix(a), rank_matrix(b))


def nearest_classes(sim: np.ndarray, k: int) -> np.ndarray:
    """(C, k) indices of each row's k most similar other classes (ties: lower index first)."""
    import numpy as np

    s = sim.astype(np.float64, copy=True)
    np.fill_diagonal(s, -np.inf)
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def knn_overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Mean over classes of |kNN_a(c) ∩ kNN_b(c)| / k."""
    return _overlap(nearest_classes(a, k), nearest_classes(b, k))


def _overlap(na: np.ndarray, nb: np.ndarray) -> float:
    shared = sum(len(set(x) & set(y)) for x, y in zip(na.tolist(), nb.tolist()))
    return shared / (na.shape[1] * len(na))


def agreement(
    text_embeddings: torch.Tensor,
    features: torch.Tensor,
    labels: Sequence[int] | None = None,
    k: int = DEFAULT_K,
    seeds: int = DEFAULT_SEEDS,
    seed: int = 0,
) -> Agreement:
    """Agreement between class-name embeddings (C, d) and image features.

    ``features`` are per-image features (N, D) with ``labels`` in [0, C), or, with ``labels=None``,
    class centroids (C, D) already. ``k`` is clamped to C − 1. The shuffled control averages
    ``seeds`` permutations drawn from ``numpy.random.default_rng(seed + s)``.
    """
    import numpy as np
    import torch

    text = torch.as_tensor(text_embeddings)
    if text.ndim != 2:
        raise LangDMLError(f"expected (C, d) class-name embeddings, got shape {tuple(text.shape)}")
    num = text.shape[0]
    if num < 3:
        raise LangDMLError(f"the agreement needs at least 3 classes, got {num}")
    if labels is None:
        centroids = torch.as_tensor(features).double()
    else:
        centroids = class_centroids(features, labels, num)
    if centroids.shape[0] != num:
        raise LangDMLError(f"{num} text embeddings but {centroids.shape[0]} image classes")
    if seeds < 1:
        raise LangDMLError(f"seeds must be ≥ 1, got {seeds}")
    k = max(1, min(int(k), num - 1))
    s_text, s_img = cosine_matrix(text), cosine_matrix(centroids)
    r_text, r_img = rank_matrix(s_text), rank_matrix(s_img)
    nn_img = nearest_classes(s_img, k)
    shuffled = []
    for i in range(seeds):
        order = np.random.default_rng(seed + i).permutation(num)
        perm = np.ix_(order, order)  # class c gets the name of class order[c]
        nn_perm = nearest_classes(s_text[perm], k)
        shuffled.append((_pearson_upper(r_text[perm], r_img), _overlap(nn_perm, nn_img)))
    sh = np.asarray(shuffled)
    return Agreement(
        num_classes=num,
        k=k,
        spearman=_pearson_upper(r_text, r_img),
        overlap=_overlap(nearest_classes(s_text, k), nn_img),
        shuffled_spearman=float(sh[:, 0].mean()),
        shuffled_overlap=float(sh[:, 1].mean()),
        shuffled_spearman_std=float(sh[:, 0].std(ddof=1)) if seeds > 1 else 0.0,
        shuffled_overlap_std=float(sh[:, 1].std(ddof=1)) if seeds > 1 else 0.0,
        chance_overlap=k / (num - 1),
        seeds=seeds,
    )


def train_classes(
    dataset: ImageDataset,
    train_fraction: float = 0.5,
    validation_fraction: float = 0.0,
    folds: int = 0,
    fold: int = 0,
) -> ImageDataset:
    """The classes training sees (``data.splits.class_splits``): the split's train classes,
    minus the validation classes (a fraction, or fold ``fold`` of ``folds``) if any."""
    from langdml.data import class_splits

    return class_splits(dataset, train_fraction, validation_fraction, folds, fold).train


def train_features(
    dataset: ImageDataset,
    train: ImageDataset,
    spec: FeatureSpec,
    cache_dir: str | Path | None,
    device: str,
    progress: bool,
) -> torch.Tensor:
    """Clean-view trunk features of ``train``'s images, extracted (and cached) for all of
    ``dataset`` under the same key as training, so either one fills the cache for the other."""
    import torch

    from langdml.models import extract_features

    feats = extract_features(dataset, spec, cache_dir=cache_dir, device=device, progress=progress)
    row = {item: i for i, item in enumerate(dataset.images.items)}
    return feats.features[0, torch.as_tensor([row[i] for i in train.images.items])]


def diagnose(
    dataset: str,
    models: Sequence[str] = ("minilm",),
    feature_spec: FeatureSpec | None = None,
    cache_dir: str | Path | None = None,
    train_fraction: float = 0.5,
    validation_fraction: float = 0.0,
    k: int = DEFAULT_K,
    seeds: int = DEFAULT_SEEDS,
    prompts: Sequence[str] | None = None,
    device: str = "cpu",
    progress: bool = True,
    folds: int = 0,
    fold: int = 0,
) -> list[Agreement]:
    """:func:`agreement` of each text model on the TRAIN classes of dataset SPEC, one per model.

    Features and text embeddings come from (and go to) the caches under ``cache_dir`` (default
    ``$LANGDML_CACHE`` or ``./cache``) that training uses; the trunk defaults to the config's
    (packaged EfficientNet-Lite0 at 128 px).
    """
    from langdml.data import load_dataset
    from langdml.models import FeatureSpec

    if not models:
        raise LangDMLError("give at least one text model")
    full = load_dataset(dataset, cache_dir=cache_dir)
    train = train_classes(full, train_fraction, validation_fraction, folds, fold)
    # Classes may share a name (SOP super-classes): each distinct name is embedded once. Text
    # first, so a name mismatch (file: embeddings) is reported before any feature extraction.
    prompt_tuple = None if prompts is None else tuple(prompts)
    texts = [
        _class_text(train, AgreementRequest(dataset, model, prompt_tuple), cache_dir, device)
        for model in models
    ]
    feats = train_features(full, train, feature_spec or FeatureSpec(), cache_dir, device, progress)
    centroids = class_centroids(feats, train.labels, train.num_classes)
    out = []
    for model, text in zip(models, texts):
        result = agreement(text, centroids, k=k, seeds=seeds)
        out.append(dataclasses.replace(result, model=model, dataset=dataset))
    return out


@dataclass(frozen=True)
class AgreementRequest:
    """One agreement to compute, in plain values (so it hashes to a stable cache key): the dataset
    and train classes a run sees, its frozen trunk and its text side. ``pseudo_labels``: the text
    of a class is the mean of its ``top_k`` PLG pseudo-label embeddings (renormalised)."""

    dataset: str
    text_model: str
    prompts: tuple[str, ...] | None = None
    pseudo_labels: bool = False
    top_k: int = 5
    backbone: str = "tf_efficientnet_lite0"
    weights: str = "packaged"
    image_size: int = 128
    crop_pct: float | None = None
    # the run's other FeatureSpec fields that differ from their defaults, as (name, value) pairs
    feature_extra: tuple[tuple[str, Any], ...] | None = None
    # The run's extra augmented views, only so the feature cache key is training's; view 0 (the
    # clean one) is what the centroids use.
    augment_views: int = 0
    train_fraction: float = 0.5
    validation_fraction: float = 0.0
    k: int = DEFAULT_K
    seeds: int = DEFAULT_SEEDS
    folds: int = 0  # data.folds / data.fold: the validation fold left out of the train classes
    fold: int = 0
    # text.target and text.descriptions; None: names (or PLG with pseudo_labels), as before
    target: tuple[str, ...] | None = None
    descriptions: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["prompts"] = None if self.prompts is None else list(self.prompts)
        if not self.folds:  # without folds, the key of the requests cached before folds existed
            del out["folds"], out["fold"]
        for key in ("target", "descriptions", "feature_extra"):  # likewise without these
            if out[key] is None:
                del out[key]
        return out

    def key(self) -> str:
        from langdml.io import stable_hash

        return stable_hash(self.as_dict())

    def identity(self) -> dict[str, Any]:
        """What the request's names do not pin down, read without loading anything: the text
        model's weights (``text.spec.model_identity``) and a trunk weight file's size and mtime."""
        from langdml.text.spec import model_identity, parse_text_model_spec

        out: dict[str, Any] = {"text": model_identity(parse_text_model_spec(self.text_model))}
        if self.descriptions is not None:  # the file's content, not its name
            from langdml.text.descriptions import load_descriptions

            out["descriptions"] = load_descriptions(self.descriptions).sha256
        weights = Path(self.weights).expanduser()
        if weights.is_file():
            stat = weights.stat()
            out["weights"] = [str(weights.resolve()), stat.st_size, stat.st_mtime_ns]
        return out

    def feature_spec(self) -> FeatureSpec:
        from langdml.models import FeatureSpec

        basic = (self.backbone, self.weights, self.image_size, self.augment_views, self.crop_pct)
        return FeatureSpec(*basic, **dict(self.feature_extra or ()))


def _class_text(
    train: ImageDataset, request: AgreementRequest, cache_dir: str | Path | None, device: str
) -> torch.Tensor:
    """(C, d) text rows of ``train``'s classes, from the cache files training uses; a target of
    several views (pseudo-labels, names + descriptions) is their renormalised mean."""
    from langdml.io import text_cache_dir
    from langdml.text.descriptions import load_descriptions
    from langdml.text.pooling import unit_mean
    from langdml.text.targets import class_text_target

    sources = request.target or (["pseudo_labels"] if request.pseudo_labels else ["names"])
    found = class_text_target(
        train,
        sources,
        descriptions=request.descriptions and load_descriptions(request.descriptions),
        pseudo_labels=dict(k=request.top_k),
        model=request.text_model,
        prompts=None if request.prompts is None else list(request.prompts),
        cache_dir=text_cache_dir(cache_dir),
        device=device,
    )
    return unit_mean(found, dim=1) if found.ndim == 3 else found.float()


def agreement_of(
    request: AgreementRequest,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> Agreement:
    """:func:`agreement` for one :class:`AgreementRequest` (what ``langdml diagnose`` computes
    for one text model), reading and filling the dataset, feature and text caches under
    ``cache_dir``."""
    from langdml.data import load_dataset

    full = load_dataset(request.dataset, cache_dir=cache_dir)
    train = train_classes(
        full, request.train_fraction, request.validation_fraction, request.folds, request.fold
    )
    text = _class_text(train, request, cache_dir, device)
    spec = request.feature_spec()
    feats = train_features(full, train, spec, cache_dir, device, progress)
    result = agreement(text, feats, train.labels, k=request.k, seeds=request.seeds)
    return dataclasses.replace(result, model=request.text_model, dataset=request.dataset)


def format_table(results: Sequence[Agreement]) -> str:
    """A Markdown table, one row per text model."""
    if not results:
        return ""
    k = results[0].k
    lines = [
        f"| text model | classes | Spearman | shuffled Spearman | {k}-NN overlap | "
        "shuffled overlap | chance overlap |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.model} | {r.num_classes} | {r.spearman:.3f} | "
            f"{r.shuffled_spearman:.3f} ± {r.shuffled_spearman_std:.3f} | "
            f"{100 * r.overlap:.1f} % | "
            f"{100 * r.shuffled_overlap:.1f} ± {100 * r.shuffled_overlap_std:.1f} % | "
            f"{100 * r.chance_overlap:.1f} % |"
        )
    return "\n".join(lines)
