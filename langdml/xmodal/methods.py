"""One Python function per cross-modal method, each returning a flat JSON-able dict of metrics.

All evaluate on the TEST classes of the class-disjoint split (never seen in training):

- :func:`xmodal_clip` — an open_clip model's image tower and text tower (no training here);
- :func:`xmodal_aligned` — learned alignment: a text projection head trained on the train classes
  against a trained run's image embeddings, or jointly with an image head on frozen features;
- :func:`xmodal_text_proxies` — language as proxies: the image head trained with a text-proxy
  loss (or the projection of a run trained with one), test names projected into proxies;
- :func:`xmodal_zeroshot` — the packaged ImageNet classifier mapped into the text space;
- :func:`xmodal_for_run` — the cross-modal numbers of a finished ``langdml train`` run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from langdml.data import ImageDataset
from langdml.errors import LangDMLError
from langdml.losses.vocab import TEXT_PROXY_BASES
from langdml.xmodal.data import ClassTexts, class_texts, split_features
from langdml.xmodal.metrics import crossmodal_metrics

METHODS = ("clip", "aligned", "text_proxies", "zeroshot")


def _result(
    method: str,
    dataset: str,
    test: ImageDataset,
    texts: ClassTexts,
    metrics: dict[str, float],
    **info: Any,
) -> dict[str, Any]:
    return {
        "method": method,
        "dataset": dataset,
        "num_test_classes": int(test.num_classes),
        "num_test_names": len(texts.names),
        "num_test_images": len(test),
        **{k: v for k, v in info.items() if v is not None},
        **metrics,
    }


def _evaluate(
    image_emb: torch.Tensor, test: ImageDataset, texts: ClassTexts, text_emb: torch.Tensor, device
) -> dict[str, float]:
    return crossmodal_metrics(image_emb, texts.image_labels(test.labels), text_emb, device=device)


# ---------------------------------------------------------------------------------------------
# trained runs


@dataclass
class RunEmbeddings:
    """A finished run's image embeddings of the train and test halves, and its settings."""

    config: Any
    train: ImageDataset
    test: ImageDataset
    train_embeddings: torch.Tensor
    test_embeddings: torch.Tensor
    loss_state: dict[str, torch.Tensor]
    epoch: int
    eval_split: str = "test"  # which held-out classes ``test`` holds: "test" or "val"
    opened: Any = None  # the langdml.experiment.OpenRun it came from


def run_embeddings(
    run_dir: str | Path,
    checkpoint: str = "final",
    device: str | None = None,
    split: str | None = None,
) -> RunEmbeddings:
    """Embed the train classes' and the held-out classes' images with a run's model (frozen
    trunk: from the feature cache). ``split``: None = the run's own evaluation split (its
    validation classes when ``data.validation_fraction`` > 0, so tuning never sees test
    classes), "test" = the test classes, "val" = the validation classes (an error if none)."""
    from langdml.experiment import embed, embed_train, open_run

    if checkpoint not in ("final", "best"):
        raise LangDMLError(f"checkpoint must be 'final' or 'best', got {checkpoint!r}")
    run = open_run(run_dir, checkpoint, split=split, device=device)
    return RunEmbeddings(
        run.config,
        run.data.train,
        run.data.eval,
        embed_train(run.model, run.config, run.data),
        embed(run.model, run.config, run.data),
        run.loss_state,
        run.epoch,
        run.data.eval_split,
        run,
    )


def _check_dataset(dataset: str | None, run: RunEmbeddings, run_dir: Path) -> str:
    run_dataset = run.config.data.dataset
    if dataset is not None and dataset != run_dataset:
        raise LangDMLError(
            f"--dataset {dataset!r} differs from run {str(run_dir)!r}'s dataset {run_dataset!r}; "
            "omit --dataset to use the run's"
        )
    return run_dataset


def _run_text_model(run: RunEmbeddings, text_model: str | None, prompts) -> tuple[str, Any]:
    text = run.config.text
    return text_model or text.text_model, prompts if prompts is not None else text.prompts


def _run_projection(run: RunEmbeddings) -> torch.nn.Module | None:
    """The text projection a run trained as its proxies (base loss text_proxy_*), else None;
    the loss rebuilds itself from the checkpoint (no guessing at state-dict keys here)."""
    if run.config.loss.base.name not in TEXT_PROXY_BASES:
        return None
    if run.opened is not None:
        return run.opened.text_projection()
    from langdml.experiment import text_proxy_loss

    return text_proxy_loss(run.config, run.loss_state).text_projection().eval()


@dataclass
class _Inputs:
    dataset: str
    text_model: str
    prompts: Any
    train: ImageDataset
    test: ImageDataset
    x_train: torch.Tensor
    x_test: torch.Tensor
    eval_split: str
    cache_dir: str | Path | None
    run: RunEmbeddings | None = None

    def texts(self, split: str, device: str, text_embeddings: str | Path | None) -> ClassTexts:
        """Class-name embeddings of the "train" or "test" classes with these text settings."""
        names = (self.train if split == "train" else self.test).class_names
        return class_texts(
            names, self.text_model, self.prompts, self.dataset, self.cache_dir, device,
            text_embeddings,
        )  # fmt: skip

    def evaluate(self, model: Any, texts: ClassTexts, device: str) -> dict[str, float]:
        """Cross-modal metrics of a trained model on the test images and ``texts``."""
        image_emb, text_emb = model.embed_images(self.x_test), model.embed_texts(texts.embeddings)
        return _evaluate(image_emb, self.test, texts, text_emb, device)

    def result(
        self, method: str, texts: ClassTexts, metrics: dict, run_dir: Any, t0: float, **info: Any
    ) -> dict[str, Any]:
        return _result(
            method,
            self.dataset,
            self.test,
            texts,
            metrics,
            text_model=self.text_model,
            run_dir=None if run_dir is None else str(run_dir),
            split=self.eval_split,
            **info,
            num_train_classes=int(self.train.num_classes),
            seconds=round(time.perf_counter() - t0, 2),
        )


def _image_inputs(
    dataset,
    run_dir,
    checkpoint,
    split,
    text_model,
    prompts,
    image_size,
    train_fraction,
    cache_dir,
    device,
) -> _Inputs:
    """A run's fixed embeddings (with its text settings as defaults), or frozen features."""
    if run_dir is not None:
        run = run_embeddings(run_dir, checkpoint, device, split)
        text_model, prompts = _run_text_model(run, text_model, prompts)
        return _Inputs(
            _check_dataset(dataset, run, Path(run_dir)),
            text_model,
            prompts,
            run.train,
            run.test,
            run.train_embeddings,
            run.test_embeddings,
            run.eval_split,
            cache_dir if cache_dir is not None else run.config.data.cache_dir,
            run,
        )
    if split not in (None, "test"):
        raise LangDMLError(
            f"split {split!r} needs a run (--run); without one the test split is used"
        )
    dataset = dataset or "emoji"
    feats = split_features(
        dataset, image_size, train_fraction=train_fraction, cache_dir=cache_dir, device=device
    )
    return _Inputs(
        dataset,
        text_model or "minilm",
        prompts,
        feats.train,
        feats.test,
        feats.train_features,
        feats.test_features,
        "test",
        cache_dir,
    )


# ---------------------------------------------------------------------------------------------
# the methods


def xmodal_zeroshot(
    dataset: str = "emoji",
    text_model: str = "minilm",
    prompts: str | Sequence[str] | None = None,
    image_size: int = 128,
    train_fraction: float = 0.5,
    temperature: float = 1.0,
    text_embeddings: str | Path | None = None,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Zero-shot baseline: ImageNet class probabilities → text space (see
    :mod:`langdml.xmodal.zeroshot`), compared with the test class-name embeddings."""
    from langdml.xmodal.data import text_cache_dir
    from langdml.xmodal.zeroshot import zeroshot_text_space

    feats = split_features(
        dataset, image_size, train_fraction=train_fraction, cache_dir=cache_dir, device=device
    )
    texts = class_texts(
        feats.test.class_names, text_model, prompts, dataset, cache_dir, device, text_embeddings
    )
    image_emb = zeroshot_text_space(
        feats.test_features, text_model, prompts, text_cache_dir(cache_dir), device, temperature
    )
    if image_emb.shape[1] != texts.embeddings.shape[1]:
        raise LangDMLError(
            f"text embeddings are {texts.embeddings.shape[1]}-d but text model {text_model!r} "
            f"gives {image_emb.shape[1]}-d ImageNet name embeddings; the file passed as text "
            "embeddings must come from the same text model"
        )
    metrics = _evaluate(image_emb, feats.test, texts, texts.embeddings, device)
    return _result(
        "zeroshot",
        dataset,
        feats.test,
        texts,
        metrics,
        text_model=text_model,
        image_size=image_size,
    )


def xmodal_aligned(
    dataset: str | None = "emoji",
    run_dir: str | Path | None = None,
    text_model: str | None = None,
    prompts: str | Sequence[str] | None = None,
    *,
    checkpoint: str = "final",
    split: str | None = None,
    image_size: int = 128,
    train_fraction: float = 0.5,
    image_head: str = "linear",
    embedding_dim: int = 128,
    text_head: str = "linear",
    temperature: float = 0.2,
    epochs: int = 40,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    text_embeddings: str | Path | None = None,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Learned alignment (:func:`langdml.xmodal.align.train_alignment`) on the train classes,
    evaluated on the test classes.

    With ``run_dir``: the run's image embeddings stay fixed and only the text head learns
    (``image_head`` is ignored; text model and prompts default to the run's language settings).
    Without: frozen trunk features of ``dataset`` at ``image_size``, and an image head
    (``image_head``, ``embedding_dim``) learns jointly with the text head.
    """
    from langdml.xmodal.align import train_alignment

    t0 = time.perf_counter()
    kwargs = dict(
        text_head=text_head,
        temperature=temperature,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        seed=seed,
        device=device,
    )
    inp = _image_inputs(
        dataset,
        run_dir,
        checkpoint,
        split,
        text_model,
        prompts,
        image_size,
        train_fraction,
        cache_dir,
        device,
    )
    if inp.run is not None:
        kwargs["image_head"] = "none"
    else:
        kwargs.update(image_head=image_head, embedding_dim=embedding_dim)
    train_texts = inp.texts("train", device, text_embeddings)
    test_texts = inp.texts("test", device, text_embeddings)
    model = train_alignment(
        inp.x_train, train_texts.image_labels(inp.train.labels), train_texts.embeddings, **kwargs
    )
    metrics = inp.evaluate(model, test_texts, device)
    return inp.result("aligned", test_texts, metrics, run_dir, t0, image_head=kwargs["image_head"])


def xmodal_text_proxies(
    dataset: str | None = "emoji",
    run_dir: str | Path | None = None,
    text_model: str | None = None,
    prompts: str | Sequence[str] | None = None,
    *,
    loss: str = "text_proxy_anchor",
    loss_kwargs: dict[str, Any] | None = None,
    checkpoint: str = "final",
    split: str | None = None,
    image_size: int = 128,
    train_fraction: float = 0.5,
    image_head: str = "linear",
    embedding_dim: int = 128,
    projection: str = "linear",
    epochs: int = 40,
    batch_size: int = 128,
    lr: float = 1e-3,
    proxy_lr_multiplier: float = 10.0,
    weight_decay: float = 1e-4,
    seed: int = 0,
    text_embeddings: str | Path | None = None,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Language as proxies (:func:`langdml.xmodal.align.train_text_proxies`): text→image queries
    for unseen classes are their projected names.

    With ``run_dir`` of a run trained with base loss ``text_proxy_anchor``/``text_proxy_nca``,
    that run's own projection is used (no training here); with another run, a projection is
    fitted to its fixed embeddings with ``loss``; without a run, an image head on frozen features
    and the projection are trained together with ``loss``.
    """
    from langdml.xmodal.align import CrossModalModel, train_text_proxies

    t0 = time.perf_counter()
    fitted = False
    inp = _image_inputs(
        dataset,
        run_dir,
        checkpoint,
        split,
        text_model,
        prompts,
        image_size,
        train_fraction,
        cache_dir,
        device,
    )
    if inp.run is not None:
        projection_module, head = _run_projection(inp.run), "none"
    else:
        projection_module, head = None, image_head
    test_texts = inp.texts("test", device, text_embeddings)
    if projection_module is not None:
        model = CrossModalModel(projection_module.to(device))
        source = "run"
    else:
        train_texts = inp.texts("train", device, text_embeddings)
        model = train_text_proxies(
            inp.x_train,
            train_texts.image_labels(inp.train.labels),
            train_texts.embeddings,
            loss=loss,
            loss_kwargs=loss_kwargs,
            image_head=head,
            embedding_dim=embedding_dim,
            projection=projection,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            proxy_lr_multiplier=proxy_lr_multiplier,
            weight_decay=weight_decay,
            seed=seed,
            device=device,
        )
        fitted, source = True, loss
    metrics = inp.evaluate(model, test_texts, device)
    return inp.result(
        "text_proxies",
        test_texts,
        metrics,
        run_dir,
        t0,
        loss=source,
        image_head=head if fitted else "run",
    )


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
    from langdml.data import class_disjoint_split, load_dataset
    from langdml.text import create_clip_model
    from langdml.text.precompute import embed_with_prompts
    from langdml.text.prompts import check_prompts, clean_names

    clip = create_clip_model(model, device=device)
    test = class_disjoint_split(load_dataset(dataset, cache_dir=cache_dir), train_fraction).test
    names, text_of_class = test.distinct_class_names()
    cleaned = clean_names(names, "default")
    text_emb = embed_with_prompts(clip, cleaned, check_prompts(prompts), batch_size)
    chunks = []
    for start in range(0, len(test), batch_size):  # a batch of decoded images at a time
        images = [test.image(i) for i in range(start, min(start + batch_size, len(test)))]
        chunks.append(clip.encode_images(images, batch_size=batch_size))
    return test, torch.cat(chunks), ClassTexts(names, text_emb, text_of_class)


def xmodal_clip(
    dataset: str = "emoji",
    model: str = "clip:ViT-B-32/openai",
    prompts: str | Sequence[str] | None = None,
    train_fraction: float = 0.5,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 64,
) -> dict[str, Any]:
    """CLIP: the image tower embeds the test images, the text tower the test class names (with
    ``prompts``, default "a photo of a {}"), both from the one open_clip model ``model``
    (``clip:ARCH/PRETRAINED``, ``clip:ARCH@CHECKPOINT`` or ``clip:DIR``). Nothing is trained,
    so the train classes are unused; the split only fixes which classes are evaluated."""
    test, image_emb, texts = clip_test_embeddings(
        dataset, model, prompts, train_fraction, cache_dir, device, batch_size
    )
    metrics = _evaluate(image_emb, test, texts, texts.embeddings, device)
    return _result("clip", dataset, test, texts, metrics, text_model=model)


def xmodal_for_run(
    run_dir: str | Path,
    text_model: str | None = None,
    checkpoint: str = "final",
    device: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Cross-modal metrics of a finished run: its own text projection when it was trained with a
    text-proxy base loss, else a learned-alignment text head fitted to its train embeddings.

    Evaluated on the run's own held-out split (its validation classes when it was tuned with
    ``data.validation_fraction`` > 0; ``split="test"`` forces the test classes). The text model
    and prompts default to the run's ``loss.language`` settings. ``kwargs`` go to
    :func:`xmodal_aligned` / :func:`xmodal_text_proxies` (e.g. ``epochs``, ``seed``, ``split``).
    Cost: the run's images are embedded again (frozen trunk: from the feature cache, seconds).
    """
    from langdml.experiment import load_run_config

    cfg = load_run_config(run_dir)
    device = device or cfg.train.device
    if cfg.loss.base.name in TEXT_PROXY_BASES:
        return xmodal_text_proxies(
            None, run_dir, text_model, checkpoint=checkpoint, device=device, **kwargs
        )
    return xmodal_aligned(None, run_dir, text_model, checkpoint=checkpoint, device=device, **kwargs)


def run_method(method: str, **kwargs: Any) -> dict[str, Any]:
    """Dispatch by method name (``clip``, ``aligned``, ``text_proxies``, ``zeroshot``)."""
    funcs = {
        "clip": xmodal_clip,
        "aligned": xmodal_aligned,
        "text_proxies": xmodal_text_proxies,
        "zeroshot": xmodal_zeroshot,
    }
    if method not in funcs:
        raise LangDMLError(f"unknown cross-modal method {method!r}; expected one of {METHODS}")
    return funcs[method](**kwargs)


__all__ = [
    "METHODS",
    "RunEmbeddings",
    "run_embeddings",
    "run_method",
    "xmodal_aligned",
    "xmodal_clip",
    "xmodal_for_run",
    "xmodal_text_proxies",
    "xmodal_zeroshot",
]
