"""Training: batch samplers, the trainer with checkpoints and exact resume, its callbacks.

``train`` is the full training entry (the loop plus the post-training steps the config asks
for: :func:`langdml.pipeline.train_experiment`); ``langdml.train.trainer.train_run`` is the
bare loop.
"""

from langdml._lazy import lazy_getattr

_EXPORTS = {
    "Callback": "langdml.train.callbacks",
    "ClassBalancedSampler": "langdml.train.sampler",
    "HierarchicalSampler": "langdml.train.sampler",
    "MPerClassSampler": "langdml.train.sampler",
    "PostTrainCallback": "langdml.train.callbacks",
    "RunInfo": "langdml.train.callbacks",
    "RunData": "langdml.experiment",
    "RunResult": "langdml.train.trainer",
    "load_run_config": "langdml.experiment",
    "prepare_data": "langdml.experiment",
    "train": "langdml.pipeline:train_experiment",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
