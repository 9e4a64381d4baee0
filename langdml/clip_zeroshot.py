"""The zero-shot baseline of a run whose trunk is an open_clip image tower.

Before any training, the tower's own image embeddings of the evaluation images (the run's eval
preprocessing) are scored two ways:

- retrieval: the run's metrics (Recall@k, MAP@R, ...) of the raw, L2-normalised CLIP image
  embeddings — the zero-shot CLIP number DML papers report beside their fine-tuned ones;
- classification: the same model's text tower embeds each evaluation class name in the run's
  prompts (``text.prompts``, mean over prompts, as for language guidance); an image is assigned
  the class whose name embedding has the highest cosine similarity, and ``zeroshot_accuracy`` is
  the fraction assigned their own class (CLIP's zero-shot classifier, restricted to the
  evaluation classes; classes sharing a name count as one).

The trainer records it as ``baselines["clip_zeroshot"]`` in ``metrics.json``.
"""

from __future__ import annotations

import numpy as np
import torch

from langdml.config import ExperimentConfig
from langdml.data.roles import eval_roles
from langdml.experiment import RunData, embed, evaluate_embeddings, trunk
from langdml.io import text_cache_dir
from langdml.models import EmbeddingHead, EmbeddingModel
from langdml.models.clip_tower import clip_spec, is_open_clip


def clip_zeroshot_baseline(cfg: ExperimentConfig, data: RunData) -> dict[str, float] | None:
    """Zero-shot retrieval metrics and ``zeroshot_accuracy`` of an open_clip trunk on the run's
    evaluation split (module docstring); None for any other trunk or a randomly initialised one."""
    m = cfg.model
    if not is_open_clip(m.backbone) or m.weights == "none":
        return None
    from langdml.text.precompute import distinct_name_embeddings

    if m.frozen_trunk and data.eval_features is not None:  # the tower's cached outputs
        images = torch.nn.functional.normalize(data.eval_features.float(), dim=-1)
    else:
        tower, info = trunk(cfg)
        head = EmbeddingHead(info.feature_dim, info.feature_dim, "identity")
        model = EmbeddingModel(head, tower).to(cfg.train.device)
        images = embed(model, cfg, RunData(data.train, data.eval, "baseline"))
    metrics = evaluate_embeddings(cfg, images, data.eval.labels, eval_roles(data.eval))
    found, rows = distinct_name_embeddings(
        data.eval.class_names,
        model=clip_spec(m.backbone, m.weights).raw,
        prompts=cfg.text.prompts,
        cache_dir=text_cache_dir(cfg.data.cache_dir),
        device=cfg.train.device,
    )
    names = torch.nn.functional.normalize(found.embeddings.float(), dim=-1)
    predicted = torch.argmax(images @ names.T, dim=1).numpy()
    own = np.asarray(rows)[np.asarray(data.eval.labels)]
    return {**metrics, "zeroshot_accuracy": float(np.mean(predicted == own))}
