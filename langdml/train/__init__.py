"""Training: m-per-class sampling, the trainer with checkpoints and exact resume."""

from langdml.train.sampler import MPerClassSampler
from langdml.train.trainer import RunData, RunResult, load_run_config, prepare_data, train

__all__ = ["MPerClassSampler", "RunData", "RunResult", "load_run_config", "prepare_data", "train"]
