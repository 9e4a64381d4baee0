"""Training: m-per-class sampling, the trainer with checkpoints and exact resume.

``train`` is the full training entry (the loop plus the post-training steps the config asks
for: :func:`langdml.pipeline.train_experiment`); ``langdml.train.trainer.train_run`` is the
bare loop.
"""

from langdml._lazy import lazy_getattr

_EXPORTS = {
    "MPerClassSampler": "langdml.train.sampler",
    "RunData": "langdml.experiment",
    "RunResult": "langdml.train.trainer",
    "load_run_config": "langdml.experiment",
    "prepare_data": "langdml.experiment",
    "train": "langdml.pipeline:train_experiment",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
