"""Miners against pytorch-metric-learning's miners (as sets of indices) or loop references."""

from __future__ import annotations

import math

import pytest
import torch

from langdml import losses as L

pml_miners = pytest.importorskip("pytorch_metric_learning.miners")
lmu = pytest.importorskip("pytorch_metric_learning.utils.loss_and_miner_utils")


def batch(b=40, dim=8, per_class=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, dim, generator=g)
    y = (torch.arange(b) // per_class)[torch.randperm(b, generator=g)]
    return x, y


def as_set(indices):
    return set(zip(*(t.tolist() for t in indices), strict=True))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_all_triplets_miner_matches_pml(seed):
    x, y = batch(seed=seed)
    ours = L.AllTripletsMiner()(x, y)
    ref = lmu.get_all_triplets_indices(y)
    assert as_set(ours) == as_set(ref)
    assert len(ours[0]) == len(ref[0])


@pytest.mark.parametrize("margin", [0.05, 0.2, 0.5])
@pytest.mark.parametrize("seed", [0, 1])
def test_semihard_miner_matches_pml(margin, seed):
    x, y = batch(seed=seed)
    ours = L.SemiHardMiner(margin=margin)(x, y)
    ref = pml_miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard")(x, y)
    assert len(ref[0]) > 0
    assert as_set(ours) == as_set(ref)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_hard_miner_matches_pml(seed):
    x, y = batch(seed=seed)
    y[:3] = 100 + torch.arange(3)  # singletons: no positive, must be dropped
    ours = L.BatchHardMiner()(x, y)
    ref = pml_miners.BatchHardMiner()(x, y)
    assert as_set(ours) == as_set(ref)
    assert not set(ours[0].tolist()) & {int(i) for i in torch.nonzero(y >= 100)}


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("seed", [0, 1])
def test_multi_similarity_miner_matches_pml(epsilon, seed):
    x, y = batch(seed=seed)
    a1, p, a2, n = L.MultiSimilarityMiner(epsilon=epsilon)(x, y)
    r1, rp, r2, rn = pml_miners.MultiSimilarityMiner(epsilon=epsilon)(x, y)
    assert as_set((a1, p)) == as_set((r1, rp))
    assert as_set((a2, n)) == as_set((r2, rn))
    assert 0 < len(a2) < int((y[:, None] != y[None, :]).sum())  # it really filters


def test_miners_on_batches_without_triplets_return_empty():
    x = torch.randn(6, 4)
    for labels in (torch.arange(6), torch.zeros(6, dtype=torch.long)):
        for miner in (
            L.AllTripletsMiner(),
            L.SemiHardMiner(),
            L.BatchHardMiner(),
            L.DistanceWeightedMiner(),
        ):
            out = miner(x, labels)
            assert all(len(t) == 0 for t in out), type(miner).__name__
        out = L.MultiSimilarityMiner()(x, labels)
        assert len(out[0]) == 0 or len(out[2]) == 0


def distance_weighted_reference(x, y, cutoff=0.5, nonzero_cutoff=1.4):
    """Per-anchor sampling probabilities by explicit loops (Wu et al. 2017, Sec. 4)."""
    z = torch.nn.functional.normalize(x.double(), dim=1)
    b, dim = z.shape
    probs = torch.zeros(b, b, dtype=torch.float64)
    for a in range(b):
        weights = {}
        for n in range(b):
            if y[n] == y[a]:
                continue
            d = max(float((z[a] - z[n]).norm()), cutoff)
            if d >= nonzero_cutoff:
                continue
            log_q = (dim - 2) * math.log(d) + (dim - 3) / 2 * math.log(1 - d * d / 4)
            weights[n] = -log_q
        if not weights:  # fall back to uniform over negatives, as the paper's code
            weights = {n: 0.0 for n in range(b) if y[n] != y[a]}
        if not weights:
            continue
        top = max(weights.values())
        total = sum(math.exp(w - top) for w in weights.values())
        for n, w in weights.items():
            probs[a, n] = math.exp(w - top) / total
    return probs


def test_distance_weighted_probabilities_match_loop_reference():
    x, y = batch(b=24, dim=6, seed=4)
    x[0] = -x[1]  # a far-apart pair beyond the nonzero-loss cutoff
    miner = L.DistanceWeightedMiner()
    z = torch.nn.functional.normalize(x, dim=1)
    ours = miner.probabilities(z, y)
    ref = distance_weighted_reference(x, y)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-4, atol=1e-6)


def test_distance_weighted_sampling_follows_probabilities():
    x, y = batch(b=16, dim=5, seed=5)
    gen = torch.Generator().manual_seed(0)
    miner = L.DistanceWeightedMiner(generator=gen)
    probs = miner.probabilities(torch.nn.functional.normalize(x, dim=1), y)
    counts = torch.zeros_like(probs)
    draws = 400
    for _ in range(draws):
        a, p, n = miner(x, y)
        assert bool((y[a] == y[p]).all()) and bool((y[a] != y[n]).all()) and bool((a != p).all())
        counts.index_put_((a, n), torch.ones(len(a)), accumulate=True)
    # one draw per (anchor, positive): 3 positives per anchor here
    freq = counts / counts.sum(dim=1, keepdim=True)
    assert float((freq - probs).abs().max()) < 0.06
    assert bool((counts[probs == 0] == 0).all())
