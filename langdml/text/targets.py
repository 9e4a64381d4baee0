"""A class's language target: its name, its descriptions, its pseudo-labels, or several of them.

Each source gives the classes one or more *views*, each a (C, d) matrix of unit rows:

- ``names``: the class name in the prompts (:func:`precompute_text_embeddings`), one view;
- ``descriptions``: the mean of the unit embeddings of the class's description rows, embedded
  as written (prompts do not apply), renormalised (:func:`description_embeddings`), one view;
- ``pseudo_labels``: PLG's top-k ImageNet names, k views.

The target is the one view itself, (C, d), or the views stacked in ``text.target`` order,
(C, V, d): language guidance then compares classes by the mean over views of the per-view
cosine (as it does for PLG's k pseudo-labels), and text-proxy losses use the renormalised mean of
the views. With ``names`` in the target, a class without description rows uses its name view as
its description view; without ``names``, every class needs a description.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langdml.errors import ConfigError, LangDMLError
from langdml.text.cache import (
    TextEmbeddings,
    cache_key,
    cache_path,
    default_cache_dir,
    save_embeddings,
    try_load_cached,
)
from langdml.text.descriptions import ClassDescriptions
from langdml.text.spec import model_identity, parse_text_model_spec

if TYPE_CHECKING:
    import numpy as np
    import torch

    from langdml.data import ImageDataset

SOURCES = ("names", "descriptions", "pseudo_labels")


def description_embeddings(
    class_names: Sequence[str],
    descriptions: ClassDescriptions,
    model: str = "minilm",
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 64,
    pooling: str | None = None,
    required: bool = True,
    force: bool = False,
) -> tuple[TextEmbeddings, np.ndarray]:
    """Embeddings of the distinct described ``class_names`` and, per class, its row (-1: the
    class has no description rows, allowed when not ``required``).

    Row of class c: ``normalize(mean_r normalize(f(text_r)))`` over its rows r. Cached under
    ``cache_dir`` by the text model, the described class names and the descriptions' content
    (:attr:`ClassDescriptions.sha256`); a hit builds no model.
    """
    import numpy as np

    from langdml.data.names import distinct_names
    from langdml.text.precompute import _base_meta, _check_model_paths

    spec = parse_text_model_spec(model, pooling=pooling)
    if spec.kind == "file":
        raise ConfigError(
            f"text.descriptions need a text model that embeds text; {model!r} holds fixed class "
            "embeddings (use minilm, mpnet, hf:, st: or clip:)"
        )
    _check_model_paths(spec)
    distinct, rows = distinct_names(list(class_names))
    texts = descriptions.for_classes(distinct, required=required)
    described = [n for n, t in zip(distinct, texts) if t]
    new_row = np.cumsum([bool(t) for t in texts]) - 1
    rows = np.where([bool(texts[r]) for r in rows], new_row[rows], -1)
    fields = {
        "kind": "descriptions",
        "model": spec.canonical,
        "pooling": spec.pooling,
        "model_identity": model_identity(spec),
        "class_names": described,
        "descriptions_sha256": descriptions.sha256,
    }
    key = cache_key(fields)
    path = cache_path(default_cache_dir(cache_dir), "descr", spec.describe(), key)
    hit = None if force else try_load_cached(path, key, described)
    if hit is not None:
        return hit, rows
    emb, used_device, versions = _embed_descriptions(
        spec, [t for t in texts if t], device, batch_size
    )
    meta = _base_meta(spec, [], key, used_device)
    meta.update(
        kind="descriptions",
        class_names=described,
        descriptions=descriptions.source,
        descriptions_sha256=descriptions.sha256,
        rows_per_class=[len(t) for t in texts if t],
        dim=int(emb.shape[-1]),
        shape=list(emb.shape),
        library_versions=versions,
    )
    save_embeddings(path, emb, meta)
    return TextEmbeddings(emb, described, path, meta, cache_hit=False), rows


def _embed_descriptions(spec, texts: list[list[str]], device: str, batch_size: int):
    """(len(texts), d) per-class unit means, the device used and library versions."""
    import torch

    from langdml.text import encoders
    from langdml.text.pooling import grouped_unit_mean
    from langdml.text.precompute import _versions, embed_with_prompts

    flat = [t for group in texts for t in group]
    unique = list(dict.fromkeys(flat))
    encoder = encoders.create_text_encoder(spec, device=device)
    emb = embed_with_prompts(encoder, unique, ["{}"], batch_size)  # the texts as written
    index = {t: i for i, t in enumerate(unique)}
    rows = emb[torch.tensor([index[t] for t in flat])]
    groups = torch.repeat_interleave(
        torch.arange(len(texts)), torch.tensor([len(g) for g in texts])
    )
    return grouped_unit_mean(rows, groups, len(texts)), encoder.device, _versions(encoder)


def check_target(target: Sequence[str]) -> list[str]:
    """The validated source list of ``text.target``."""
    target = list(target)
    bad = [s for s in target if s not in SOURCES]
    if not target or bad or len(set(target)) != len(target):
        raise ConfigError(
            f"text.target {target!r}: expected distinct sources from {', '.join(SOURCES)}"
        )
    return target


def class_text_target(
    dataset: ImageDataset,
    target: Sequence[str],
    descriptions: ClassDescriptions | None = None,
    pseudo_labels: dict[str, Any] | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """The (C, d) or (C, V, d) language target of ``dataset``'s classes (module docstring).

    ``kwargs`` (model, prompts, cache_dir, device) go to every embedding call;
    ``pseudo_labels`` holds PLG's own settings (k, image_size, classifier, crop_pct).
    """
    import torch

    from langdml.text.precompute import distinct_name_embeddings, pseudo_label_embeddings

    target = check_target(target)
    views: dict[str, torch.Tensor] = {}
    if "names" in target:
        found, rows = distinct_name_embeddings(dataset.class_names, **kwargs)
        views["names"] = found.embeddings.float()[torch.as_tensor(rows)]
    if "pseudo_labels" in target:
        found = pseudo_label_embeddings(
            dataset, allow_duplicates=dataset.shares_names, **(pseudo_labels or {}), **kwargs
        )
        views["pseudo_labels"] = found.embeddings.float()
    if "descriptions" in target:
        if descriptions is None:
            raise LangDMLError("text.target uses descriptions but text.descriptions is not set")
        views["descriptions"] = _description_view(dataset, descriptions, views, kwargs)
    stack = [
        v if v.ndim == 3 else v[:, None, :] for v in (views[s] for s in target)
    ]  # (C, V_s, d) per source, in target order
    out = torch.cat(stack, dim=1)
    return out[:, 0] if out.shape[1] == 1 else out


def _description_view(dataset, descriptions, views: dict, kwargs: dict) -> torch.Tensor:
    import torch

    fallback = views.get("names")
    found, rows = description_embeddings(
        dataset.class_names,
        descriptions,
        model=kwargs.get("model", "minilm"),
        cache_dir=kwargs.get("cache_dir"),
        device=kwargs.get("device", "cpu"),
        required=fallback is None,
    )
    rows = torch.as_tensor(rows)
    emb = found.embeddings.float()
    out = emb[rows.clamp(min=0)]
    if bool((rows < 0).any()):  # only with names in the target (else for_classes raised)
        out[rows < 0] = fallback[rows < 0]
    return out
