"""Evaluation embeddings collapsed to one point score chance by tie order; a run's evaluation
says so in one warning line instead of passing the numbers off as a result (a fine-tuned
Proxy Anchor run at lr 1e-3 saturated its trunk and scored R@1 0.002 without a word)."""

import warnings

import numpy as np
import pytest
import torch

from langdml.config import load_config
from langdml.errors import LangDMLError
from langdml.eval.collapse import embedding_spread, warn_if_collapsed
from langdml.experiment import evaluate_embeddings


def _cfg():
    return load_config(None, {"train.device": "cpu", "eval.clustering": False})


def _labels(n=60):
    return np.repeat(np.arange(n // 3), 3)


def test_constant_embeddings_warn_once_and_still_score():
    emb = np.tile(np.random.default_rng(0).normal(size=(1, 8)).astype(np.float32), (60, 1))
    with pytest.warns(RuntimeWarning, match=r"60 evaluation embeddings have collapsed") as rec:
        m = evaluate_embeddings(_cfg(), emb, _labels())
    assert len([w for w in rec if "collapsed" in str(w.message)]) == 1
    assert "recall@1" in m  # the numbers are still reported, flagged


@pytest.mark.parametrize("noise, collapsed", [(0.0, True), (1e-7, True), (1e-2, False)])
def test_spread_threshold(noise, collapsed):
    rng = np.random.default_rng(1)
    base = torch.from_numpy(rng.normal(size=(1, 16)).astype(np.float32)).repeat(50, 1)
    emb = base + noise * torch.from_numpy(rng.normal(size=(50, 16)).astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert warn_if_collapsed(emb) is collapsed


def test_spread_is_scale_free_and_cosine_ignores_norms():
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.normal(size=(40, 6)).astype(np.float32))
    assert embedding_spread(x) == pytest.approx(embedding_spread(3 * x), rel=1e-5)
    # the same direction at different norms is one point for cosine, not for euclidean
    scaled = x[:1] * torch.linspace(0.5, 4.0, 40)[:, None]
    assert embedding_spread(scaled, "cosine") < 1e-6
    assert embedding_spread(scaled, "euclidean") > 0.1


def test_spread_embeddings_do_not_warn():
    emb = np.random.default_rng(3).normal(size=(60, 8)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate_embeddings(_cfg(), emb, _labels())


def test_nan_embeddings_are_refused_not_scored():
    emb = np.random.default_rng(4).normal(size=(60, 8)).astype(np.float32)
    emb[5, 2] = np.nan
    with pytest.raises(LangDMLError, match="NaN or infinite"):
        evaluate_embeddings(_cfg(), emb, _labels())
