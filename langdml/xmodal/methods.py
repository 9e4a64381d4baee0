"""One Python function per cross-modal method, each returning a flat JSON-able dict of metrics.

All evaluate on the TEST classes of the class-disjoint split (never seen in training):

- :func:`xmodal_clip` — an open_clip model's image tower and text tower (no training here);
- :func:`xmodal_aligned` — learned alignment: a text projection head trained on the train classes
  against a trained run's image embeddings, or jointly with an image head on frozen features;
- :func:`xmodal_text_proxies` — language as proxies: the image head trained with a text-proxy
  loss (or the projection of a run trained with one), test names projected into proxies;
- :func:`xmodal_zeroshot` — the packaged ImageNet classifier mapped into the text space;
- :func:`xmodal_for_run` — the cross-modal numbers of a finished ``langdml train`` run.

Keyword settings are those of :class:`langdml.xmodal.config.XmodalConfig` (defaults, checks and
did-you-mean errors live there).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from langdml.data import ImageDataset
from langdml.errors import LangDMLError
from langdml.losses.registry import TEXT_PROXY_BASES
from langdml.xmodal.config import XmodalConfig, xmodal_config
from langdml.xmodal.data import ClassTexts, class_texts, split_features
from langdml.xmodal.inputs import (
    evaluate_texts,
    image_inputs,
    result_record,
    run_projection,
)


def _zeroshot(cfg: XmodalConfig) -> dict[str, Any]:
    from langdml.io import text_cache_dir
    from langdml.xmodal.zeroshot import zeroshot_text_space

    dataset, text_model = cfg.dataset or "emoji", cfg.get("text_model")
    feats = split_features(
        dataset,
        cfg.image_size,
        train_fraction=cfg.train_fraction,
        cache_dir=cfg.cache_dir,
        device=cfg.device,
    )
    texts = class_texts(
        feats.test.class_names,
        text_model,
        cfg.prompts,
        dataset,
        cfg.cache_dir,
        cfg.device,
        cfg.text_embeddings,
    )
    image_emb = zeroshot_text_space(
        feats.test_features,
        text_model,
        cfg.prompts,
        text_cache_dir(cfg.cache_dir),
        cfg.device,
        cfg.get("temperature"),
    )
    if image_emb.shape[1] != texts.embeddings.shape[1]:
        raise LangDMLError(
            f"text embeddings are {texts.embeddings.shape[1]}-d but text model {text_model!r} "
            f"gives {image_emb.shape[1]}-d ImageNet name embeddings; the file passed as text "
            "embeddings must come from the same text model"
        )
    metrics = evaluate_texts(image_emb, feats.test, texts, texts.embeddings, cfg.device)
    return result_record(
        "zeroshot",
        dataset,
        feats.test,
        texts,
        metrics,
        text_model=text_model,
        image_size=cfg.image_size,
    )


def _aligned(cfg: XmodalConfig) -> dict[str, Any]:
    from langdml.xmodal.align import ALIGN_OPTIONS, options_from, train_alignment

    t0 = time.perf_counter()
    inp = image_inputs(cfg)
    kwargs = options_from(cfg, ALIGN_OPTIONS)
    if inp.run is not None:  # the run's embeddings stay fixed; only the text head learns
        kwargs.update(image_head="none", embedding_dim=None)
    train_texts, test_texts = inp.texts("train"), inp.texts("test")
    model = train_alignment(
        inp.x_train, train_texts.image_labels(inp.train.labels), train_texts.embeddings, **kwargs
    )
    metrics = inp.evaluate(model, test_texts)
    return inp.result(test_texts, metrics, t0, image_head=kwargs["image_head"])


def _text_proxies(cfg: XmodalConfig) -> dict[str, Any]:
    from langdml.xmodal.align import (
        PROXY_OPTIONS,
        CrossModalModel,
        options_from,
        train_text_proxies,
    )

    t0 = time.perf_counter()
    inp = image_inputs(cfg)
    projection = run_projection(inp.run) if inp.run is not None else None
    head = "none" if inp.run is not None else cfg.image_head
    test_texts = inp.texts("test")
    if projection is not None:  # a run trained with a text-proxy loss: its own projection
        model, source, head_info = CrossModalModel(projection.to(cfg.device)), "run", "run"
    else:
        train_texts = inp.texts("train")
        model = train_text_proxies(
            inp.x_train,
            train_texts.image_labels(inp.train.labels),
            train_texts.embeddings,
            **{**options_from(cfg, PROXY_OPTIONS), "image_head": head},
        )
        source, head_info = cfg.loss, head
    metrics = inp.evaluate(model, test_texts)
    return inp.result(test_texts, metrics, t0, loss=source, image_head=head_info)


def clip_test_embeddings(
    dataset: str = "emoji",
    model: str = "clip:ViT-B-32/openai",
    prompts: str | Sequence[str] | None = None,
    train_fraction: float = 0.5,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 64,
) -> tuple[ImageDataset, torch.Tensor, ClassTexts]:
    """(test split, (N, d) CLIP image embeddings, test class names with CLIP text embeddings)."""
    from langdml.data import class_splits, load_dataset
    from langdml.text import create_clip_model
    from langdml.text.precompute import embed_with_prompts
    from langdml.text.prompts import check_prompts, clean_names

    clip = create_clip_model(model, device=device)
    test = class_splits(load_dataset(dataset, cache_dir=cache_dir), train_fraction).test
    names, text_of_class = test.distinct_class_names()
    cleaned = clean_names(names, "default")
    text_emb = embed_with_prompts(clip, cleaned, check_prompts(prompts), batch_size)
    chunks = []
    for start in range(0, len(test), batch_size):  # a batch of decoded images at a time
        images = [test.image(i) for i in range(start, min(start + batch_size, len(test)))]
        chunks.append(clip.encode_images(images, batch_size=batch_size))
    return test, torch.cat(chunks), ClassTexts(names, text_emb, text_of_class)


def _clip(cfg: XmodalConfig) -> dict[str, Any]:
    dataset, model = cfg.dataset or "emoji", cfg.get("text_model")
    test, image_emb, texts = clip_test_embeddings(
        dataset,
        model,
        cfg.prompts,
        cfg.train_fraction,
        cfg.cache_dir,
        cfg.device,
        cfg.get("batch_size"),
    )
    metrics = evaluate_texts(image_emb, test, texts, texts.embeddings, cfg.device)
    return result_record("clip", dataset, test, texts, metrics, text_model=model)


_RUNNERS = {
    "clip": _clip,
    "aligned": _aligned,
    "text_proxies": _text_proxies,
    "zeroshot": _zeroshot,
}


def run_method(method: str, **settings: Any) -> dict[str, Any]:
    """Dispatch by method name (``clip``, ``aligned``, ``text_proxies``, ``zeroshot``) with
    XmodalConfig settings (``model`` is accepted for clip's ``text_model``)."""
    if method == "clip" and "model" in settings:
        settings["text_model"] = settings.pop("model")
    cfg = xmodal_config(method, **settings)
    return _RUNNERS[cfg.method](cfg)


def xmodal_zeroshot(
    dataset: str = "emoji", text_model: str = "minilm", prompts=None, **settings: Any
) -> dict[str, Any]:
    """Zero-shot baseline: ImageNet class probabilities → text space (see
    :mod:`langdml.xmodal.zeroshot`), compared with the test class-name embeddings."""
    return run_method(
        "zeroshot", dataset=dataset, text_model=text_model, prompts=prompts, **settings
    )


def _trained_method(method: str, doc: str):
    """The public function of a method trained on the train classes (aligned, text_proxies)."""

    def run(
        dataset: str | None = "emoji",
        run_dir: str | Path | None = None,
        text_model: str | None = None,
        prompts=None,
        **settings: Any,
    ) -> dict[str, Any]:
        return run_method(
            method,
            dataset=dataset,
            run_dir=run_dir,
            text_model=text_model,
            prompts=prompts,
            **settings,
        )

    run.__name__ = run.__qualname__ = f"xmodal_{method}"
    run.__doc__ = doc
    return run


xmodal_aligned = _trained_method(
    "aligned",
    """Learned alignment (:func:`langdml.xmodal.align.train_alignment`) on the train classes,
    evaluated on the test classes.

    With ``run_dir``: the run's image embeddings stay fixed and only the text head learns
    (``image_head`` is ignored; text model and prompts default to the run's text settings).
    Without: frozen trunk features of ``dataset`` at ``image_size``, and an image head
    (``image_head``, ``embedding_dim``) learns jointly with the text head.
    """,
)
xmodal_text_proxies = _trained_method(
    "text_proxies",
    """Language as proxies (:func:`langdml.xmodal.align.train_text_proxies`): text→image queries
    for unseen classes are their projected names.

    With ``run_dir`` of a run trained with base loss ``text_proxy_anchor``/``text_proxy_nca``,
    that run's own projection is used (no training here); with another run, a projection is
    fitted to its fixed embeddings with ``loss``; without a run, an image head on frozen features
    and the projection are trained together with ``loss``.
    """,
)


def xmodal_clip(
    dataset: str = "emoji", model: str = "clip:ViT-B-32/openai", prompts=None, **settings: Any
) -> dict[str, Any]:
    """CLIP: the image tower embeds the test images, the text tower the test class names (with
    ``prompts``, default "a photo of a {}"), both from the one open_clip model ``model``
    (``clip:ARCH/PRETRAINED``, ``clip:ARCH@CHECKPOINT`` or ``clip:DIR``). Nothing is trained,
    so the train classes are unused; the split only fixes which classes are evaluated."""
    return run_method("clip", dataset=dataset, text_model=model, prompts=prompts, **settings)


def xmodal_for_run(
    run_dir: str | Path,
    text_model: str | None = None,
    checkpoint: str = "last",
    device: str | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Cross-modal metrics of a finished run: its own text projection when it was trained with a
    text-proxy base loss, else a learned-alignment text head fitted to its train embeddings.

    Evaluated on the run's own held-out split (its validation classes when it was tuned with
    ``data.validation_fraction`` > 0; ``split="test"`` forces the test classes). The text model
    and prompts default to the run's ``text`` settings. ``settings`` go to
    :func:`xmodal_aligned` / :func:`xmodal_text_proxies` (e.g. ``epochs``, ``seed``, ``split``).
    Cost: the run's images are embedded again (frozen trunk: from the feature cache, seconds).
    """
    from langdml.experiment import load_run_config

    cfg = load_run_config(run_dir)
    method = "text_proxies" if cfg.loss.base.name in TEXT_PROXY_BASES else "aligned"
    return run_method(
        method,
        dataset=None,
        run_dir=run_dir,
        text_model=text_model,
        checkpoint=checkpoint,
        device=device or cfg.train.device,
        **settings,
    )
