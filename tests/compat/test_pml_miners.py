"""``langdml.compat.pml.miners`` against pytorch-metric-learning 2.9, and the two miner fixes:
margin conditions decided on exact distances (direct differences, in the input's dtype) and the
distance-weighted fallback as an explicit option.

Deterministic miners must return PML's index sets (as sets of tuples: PML's order is its own) on
seeded inputs, at float64 and float32 (at float16 ours computes in float32, so the oracle is PML
on the float16 inputs upcast to float32). The boundary cases are built with known distances.
"""

from __future__ import annotations

import math

import pytest
import torch

from langdml.compat.pml import distances, miners
from langdml.errors import LangDMLError
from langdml.losses import DistanceWeightedMiner as NativeDWM

pml_miners = pytest.importorskip("pytorch_metric_learning.miners")
pml_distances = pytest.importorskip("pytorch_metric_learning.distances")


def _batch(seed=0, b=20, d=6, classes=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g, dtype=torch.float64), torch.randint(
        0, classes, (b,), generator=g
    )


def _tuples(out) -> set:
    if len(out) == 3:
        return set(zip(*(t.tolist() for t in out)))
    return {("pos", *t) for t in zip(out[0].tolist(), out[1].tolist())} | {
        ("neg", *t) for t in zip(out[2].tolist(), out[3].tolist())
    }


def _cases():
    for kind in ("all", "hard", "semihard", "easy"):
        yield f"TripletMarginMiner-{kind}", {"margin": 0.3, "type_of_triplets": kind}
    yield "MultiSimilarityMiner", {"epsilon": 0.2}
    yield "BatchHardMiner", {}


CASES = dict(_cases())


def _make(key):
    name = key.split("-")[0]
    return getattr(pml_miners, name)(**CASES[key]), getattr(miners, name)(**CASES[key])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("key", sorted(CASES))
def test_index_sets_equal_pml(key, dtype):
    x, y = _batch()
    theirs, ours = _make(key)
    expected = _tuples(theirs(x.to(dtype), y))
    got = ours(x.to(dtype), y)
    assert all(t.dtype == torch.long for t in got)
    assert _tuples(got) == expected and len(expected) > 0


@pytest.mark.parametrize("key", sorted(CASES))
def test_float16_inputs_mine_as_pml_in_float32(key):
    x, y = _batch(1)
    x16 = x.half()
    theirs, ours = _make(key)
    assert _tuples(ours(x16, y)) == _tuples(theirs(x16.float(), y))


@pytest.mark.parametrize("key", sorted(CASES))
def test_ref_emb_equals_pml(key):
    x, y = _batch(2)
    r, ry = _batch(3, b=25)
    theirs, ours = _make(key)
    expected = _tuples(theirs(x, y, r, ry))
    assert _tuples(ours(x, y, r, ry)) == expected and len(expected) > 0


def _boundary_batch(dtype):
    """Anchor a, positive p at distance 0.002, negatives n1 at 0.002 + 5.2e-6 (semi-hard) and n2
    at 0.002 - 1.0e-5 (hard), in orthogonal planes through a, unit vectors. sqrt(2 - 2 cos) in
    float32 is off by ~3e-5 at this distance, more than either difference."""

    def at(distance, axis):
        theta = 2 * math.asin(distance / 2)  # chord length -> angle
        v = torch.zeros(4, dtype=torch.float64)
        v[0], v[axis] = math.cos(theta), math.sin(theta)
        return v

    a = torch.tensor([1.0, 0, 0, 0], dtype=torch.float64)
    x = torch.stack([a, at(0.002, 1), at(0.002 + 5.2e-6, 2), at(0.002 - 1.0e-5, 3)])
    return x.to(dtype), torch.tensor([0, 0, 1, 2])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_semihard_and_hard_are_decided_on_the_true_difference(dtype):
    x, y = _boundary_batch(dtype)
    semi = _tuples(miners.TripletMarginMiner(0.2, "semihard")(x, y))
    hard = _tuples(miners.TripletMarginMiner(0.2, "hard")(x, y))
    assert (0, 1, 2) in semi and (0, 1, 2) not in hard  # d_an - d_ap = +5.2e-6
    assert (0, 1, 3) in hard and (0, 1, 3) not in semi  # d_an - d_ap = -1.0e-5
    if dtype == torch.float64:
        for kind, got in (("semihard", semi), ("hard", hard)):
            assert got == _tuples(pml_miners.TripletMarginMiner(0.2, kind)(x, y))


def test_margin_boundary_is_inclusive_as_pml():
    # a margin equal to the computed difference d_an - d_ap: t <= margin keeps the triplet
    x, y = _boundary_batch(torch.float64)
    d = torch.cdist(x, x)
    margin = float(d[0, 2] - d[0, 1])
    got = _tuples(miners.TripletMarginMiner(margin, "semihard")(x, y))
    assert (0, 1, 2) in got
    assert got == _tuples(pml_miners.TripletMarginMiner(margin, "semihard")(x, y))


def _far_class_batch():
    """Class 0 near +e1, classes 1, 2 near -e1: every negative of class 0 is beyond 1.4."""
    g = torch.Generator().manual_seed(5)
    base = torch.zeros(12, 5, dtype=torch.float64)
    base[:4, 0], base[4:, 0] = 1.0, -1.0
    x = base + 0.05 * torch.randn(12, 5, generator=g, dtype=torch.float64)
    y = torch.tensor([0] * 4 + [1] * 4 + [2] * 4)
    return x, y


def test_distance_weighted_none_fallback_gives_pml_anchor_set():
    x, y = _far_class_batch()
    torch.manual_seed(0)
    pml_anchors = set(pml_miners.DistanceWeightedMiner()(x, y)[0].tolist())
    a, p, n = miners.DistanceWeightedMiner()(x, y)
    assert set(a.tolist()) == pml_anchors == set(range(4, 12))
    assert bool((y[a] != y[n]).all())


def test_distance_weighted_draws_follow_pml_distribution():
    x, y = _batch(6, b=12, d=5, classes=3)
    z = torch.nn.functional.normalize(x, dim=1)
    probs = miners.DistanceWeightedMiner().probabilities(z, y)
    counts = torch.zeros_like(probs)
    torch.manual_seed(1)
    theirs = pml_miners.DistanceWeightedMiner()
    for _ in range(300):
        a, _, n = theirs(x, y)
        counts.index_put_((a, n), torch.ones(len(a), dtype=counts.dtype), accumulate=True)
    freq = counts / counts.sum(dim=1, keepdim=True)
    assert float((freq - probs).abs().max()) < 0.08
    assert bool((counts[probs == 0] == 0).all())


def test_distance_weighted_fallbacks():
    x, y = _far_class_batch()
    gen = torch.Generator().manual_seed(0)
    a, _, n = NativeDWM(generator=gen)(x, y)  # default "negatives"
    stuck = a < 4
    assert bool(stuck.any()) and bool((y[n[stuck]] != 0).all())
    seen = set()
    for _ in range(60):
        a, _, n = NativeDWM(fallback="batch", generator=gen)(x, y)
        seen |= set(n[a < 4].tolist())
    assert seen & {0, 1, 2, 3}  # the whole batch, the anchor's own class included
    with pytest.raises(LangDMLError, match="fallback"):
        NativeDWM(fallback="uniform")


def test_distance_weighted_ref_emb_draws_reference_negatives():
    x, y = _batch(7, b=10)
    r, ry = _batch(8, b=14)
    a, p, n = miners.DistanceWeightedMiner()(x, y, r, ry)
    assert len(a) > 0 and bool((y[a] == ry[p]).all()) and bool((y[a] != ry[n]).all())


def test_unsupported_miner_arguments_raise_one_line():
    with pytest.raises(LangDMLError, match="distance=DotProductSimilarity.*not supported"):
        miners.TripletMarginMiner(distance=pml_distances.CosineSimilarity())
    with pytest.raises(LangDMLError, match="type_of_triplets"):
        miners.TripletMarginMiner(type_of_triplets="medium")
    with pytest.raises(LangDMLError, match=r"\['foo'\] not supported"):
        miners.BatchHardMiner(foo=1)
    miners.MultiSimilarityMiner(distance=distances.CosineSimilarity())
    x, y = _batch()
    with pytest.raises(LangDMLError, match="ref_labels"):
        miners.BatchHardMiner()(x, y, x)
