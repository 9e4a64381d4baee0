"""Training: m-per-class sampling, the trainer with checkpoints and exact resume.

Names are imported lazily so that ``langdml --help`` does not pay for torch/timm imports.
"""

from importlib import import_module

_EXPORTS = {
    "MPerClassSampler": "langdml.train.sampler",
    "RunData": "langdml.train.trainer",
    "RunResult": "langdml.train.trainer",
    "load_run_config": "langdml.train.trainer",
    "prepare_data": "langdml.train.trainer",
    "train": "langdml.train.trainer",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'langdml.train' has no attribute {name!r}")
