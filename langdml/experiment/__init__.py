"""The assembly layer: an experiment config → data split (+ frozen features), text embeddings,
model and loss; embeddings and metrics of a run; and :func:`open_run`, the one way to reopen a
finished run.

Every stage that needs these pieces — the trainer (``langdml.train``), ``evaluate``, ``xmodal``,
the ablation runner — asks here, so they all see the same images, classes, text and weights.
This package imports the library layers (data, text, models, losses) and nothing above them.
"""

from langdml.experiment.assemble import build_model, build_run_loss, text_proxy_loss, trunk
from langdml.experiment.class_text import (
    class_text_embeddings,
    needs_text,
    shuffled_classes,
    uses_text_proxies,
)
from langdml.experiment.embedding import (
    embed,
    embed_train,
    image_loader,
    run_transform,
)
from langdml.experiment.evaluate import (
    RunEvaluation,
    evaluate_embeddings,
    evaluate_run_embeddings,
    final_details,
)
from langdml.experiment.preprocessing import image_normalisation, run_preprocessing
from langdml.experiment.reopen import Run, load_run_config, open_run
from langdml.experiment.run_data import (
    NO_BEST,
    RunData,
    eval_group_codes,
    feature_spec,
    has_validation,
    prepare_data,
    run_class_splits,
)

__all__ = [
    "NO_BEST",
    "Run",
    "RunData",
    "RunEvaluation",
    "build_model",
    "build_run_loss",
    "class_text_embeddings",
    "embed",
    "embed_train",
    "eval_group_codes",
    "evaluate_embeddings",
    "evaluate_run_embeddings",
    "feature_spec",
    "final_details",
    "has_validation",
    "image_loader",
    "image_normalisation",
    "load_run_config",
    "needs_text",
    "open_run",
    "prepare_data",
    "run_class_splits",
    "run_preprocessing",
    "run_transform",
    "shuffled_classes",
    "text_proxy_loss",
    "trunk",
    "uses_text_proxies",
]
