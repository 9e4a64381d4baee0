"""The image side of a cross-modal method: a trained run's embeddings (reopened through
:func:`langdml.experiment.open_run`) or frozen-trunk features, with the class-name texts."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from langdml.data import ImageDataset
from langdml.errors import LangDMLError
from langdml.losses.registry import TEXT_PROXY_BASES
from langdml.xmodal.config import XmodalConfig
from langdml.xmodal.data import ClassTexts, class_texts, split_features
from langdml.xmodal.metrics import crossmodal_metrics


def result_record(
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


def evaluate_texts(
    image_emb: torch.Tensor, test: ImageDataset, texts: ClassTexts, text_emb: torch.Tensor, device
) -> dict[str, float]:
    return crossmodal_metrics(image_emb, texts.image_labels(test.labels), text_emb, device=device)


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
    opened: Any = None  # the langdml.experiment.Run it came from


def run_embeddings(
    run_dir: str | Path,
    checkpoint: str = "last",
    device: str | None = None,
    split: str | None = None,
) -> RunEmbeddings:
    """Embed the train classes' and the held-out classes' images with a run's model (frozen
    trunk: from the feature cache). ``split``: None = the run's own evaluation split (its
    validation classes when ``data.validation_fraction`` > 0, so tuning never sees test
    classes), "test" = the test classes, "val" = the validation classes (an error if none)."""
    from langdml.experiment import embed, embed_train, open_run
    from langdml.experiment.run_files import checkpoint_word

    checkpoint = checkpoint_word(checkpoint)  # "final": the old word for "last"
    if checkpoint not in ("last", "best"):
        raise LangDMLError(f"checkpoint must be 'last' or 'best', got {checkpoint!r}")
    run = open_run(run_dir, checkpoint, split=split, device=device)
    cfg, data = run.config, run.data
    return RunEmbeddings(
        cfg,
        data.train,
        data.eval,
        embed_train(run.model, cfg, data),
        embed(run.model, cfg, data),
        run.loss_state,
        run.epoch,
        data.eval_split,
        run,
    )


def run_projection(run: RunEmbeddings) -> torch.nn.Module | None:
    """The text projection a run trained as its proxies (base loss text_proxy_*), else None;
    the loss rebuilds itself from the checkpoint (no guessing at state-dict keys here)."""
    if run.config.loss.base.name not in TEXT_PROXY_BASES:
        return None
    if run.opened is not None:
        return run.opened.text_projection()
    from langdml.experiment import text_proxy_loss

    return text_proxy_loss(run.config, run.loss_state).text_projection().eval()


@dataclass
class Inputs:
    """What a trained cross-modal method works on, with the text settings resolved."""

    cfg: XmodalConfig
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

    def texts(self, split: str) -> ClassTexts:
        """Class-name embeddings of the "train" or "test" classes with these text settings."""
        names = (self.train if split == "train" else self.test).class_names
        return class_texts(
            names,
            self.text_model,
            self.prompts,
            self.dataset,
            self.cache_dir,
            self.cfg.device,
            self.cfg.text_embeddings,
        )

    def evaluate(self, model: Any, texts: ClassTexts) -> dict[str, float]:
        """Cross-modal metrics of a trained model on the test images and ``texts``."""
        image_emb, text_emb = model.embed_images(self.x_test), model.embed_texts(texts.embeddings)
        return evaluate_texts(image_emb, self.test, texts, text_emb, self.cfg.device)

    def result(self, texts: ClassTexts, metrics: dict, t0: float, **info: Any) -> dict[str, Any]:
        run_dir = self.cfg.run_dir
        return result_record(
            self.cfg.method,
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


def _run_inputs(cfg: XmodalConfig) -> Inputs:
    run = run_embeddings(cfg.run_dir, cfg.checkpoint, cfg.device, cfg.split)
    run_dataset = run.config.data.dataset
    if cfg.dataset is not None and cfg.dataset != run_dataset:
        raise LangDMLError(
            f"--dataset {cfg.dataset!r} differs from run {str(cfg.run_dir)!r}'s dataset "
            f"{run_dataset!r}; omit --dataset to use the run's"
        )
    text = run.config.text  # the run's text side is the default
    return Inputs(
        cfg,
        run_dataset,
        cfg.text_model or text.text_model,
        cfg.prompts if cfg.prompts is not None else text.prompts,
        run.train,
        run.test,
        run.train_embeddings,
        run.test_embeddings,
        run.eval_split,
        cfg.cache_dir if cfg.cache_dir is not None else run.config.data.cache_dir,
        run,
    )


def image_inputs(cfg: XmodalConfig) -> Inputs:
    """A run's fixed embeddings (with its text settings as defaults), or frozen features."""
    if cfg.run_dir is not None:
        return _run_inputs(cfg)
    dataset = cfg.dataset or "emoji"
    feats = split_features(
        dataset,
        cfg.image_size,
        train_fraction=cfg.train_fraction,
        cache_dir=cfg.cache_dir,
        device=cfg.device,
    )
    return Inputs(
        cfg,
        dataset,
        cfg.text_model or "minilm",
        cfg.prompts,
        feats.train,
        feats.test,
        feats.train_features,
        feats.test_features,
        "test",
        cfg.cache_dir,
    )
