"""Training: m-per-class sampling, the trainer with checkpoints and exact resume."""

from langdml._lazy import lazy_getattr

_EXPORTS = {
    "MPerClassSampler": "langdml.train.sampler",
    "RunData": "langdml.train.trainer",
    "RunResult": "langdml.train.trainer",
    "load_run_config": "langdml.train.trainer",
    "prepare_data": "langdml.train.trainer",
    "train": "langdml.train.trainer",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
