"""CrossBatchMemory (XBM) against pytorch-metric-learning 2.9's CrossBatchMemory over consecutive
calls (the queue filling, wrapping, varying batch sizes), and its options, state and config."""

from __future__ import annotations

import pytest
import torch

from langdml import losses as L
from langdml.errors import ConfigError, LangDMLError

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")

RTOL = 1e-5
DIM = 16
INNER = {
    "contrastive": (L.ContrastiveLoss, pml_losses.ContrastiveLoss),
    "multi_similarity": (L.MultiSimilarityLoss, pml_losses.MultiSimilarityLoss),
    "triplet": (L.TripletLoss, pml_losses.TripletMarginLoss),
    "margin": (L.MarginLoss, pml_losses.MarginLoss),
    "circle": (L.CircleLoss, pml_losses.CircleLoss),
}
# batch sizes of consecutive calls: the 40-slot queue fills, wraps mid-batch and wraps again
SIZES = [12, 16, 8, 12, 16, 4, 40, 7]


def batches(seed: int = 0, sizes=SIZES, classes: int = 6):
    g = torch.Generator().manual_seed(seed)
    for b in sizes:
        yield torch.randn(b, DIM, generator=g), torch.randint(0, classes, (b,), generator=g)


def close(ours, ref, what):
    if ours is None or ref is None:
        assert ours is None and ref is None, what
        return
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    torch.testing.assert_close(
        ours, ref.to(ours.dtype), rtol=RTOL, atol=RTOL * max(scale, 1e-6), msg=lambda m: what + m
    )


def step(loss, x, y, *params):
    x = x.clone().requires_grad_(True)
    for p in params:
        p.grad = None
    value = loss(x, y)
    value.backward()
    return value.detach(), x.grad, [None if p.grad is None else p.grad.clone() for p in params]


@pytest.mark.parametrize("name", sorted(INNER))
def test_xbm_matches_pml_over_consecutive_calls(name):
    ours_cls, pml_cls = INNER[name]
    ours = L.CrossBatchMemory(ours_cls(), DIM, memory_size=40)
    ref = pml_losses.CrossBatchMemory(pml_cls(), DIM, memory_size=40)
    for i, (x, y) in enumerate(batches()):
        v1, g1, _ = step(ours, x, y)
        v2, g2, _ = step(ref, x, y)
        close(v1, v2, f"{name} call {i} value: ")
        close(g1, g2, f"{name} call {i} grad: ")
    stored, labels = ours.memory()
    torch.testing.assert_close(stored, ref.embedding_memory)
    assert torch.equal(labels, ref.label_memory)


@pytest.mark.parametrize("pos_margin,neg_margin", [(0.5, 1.2), (0.9, 0.3), (0.0, 2.5)])
def test_xbm_contrastive_with_other_margins_matches_pml(pos_margin, neg_margin):
    # the memory's contrastive kernel tests only the pairs past the margins' cosines
    kwargs = {"pos_margin": pos_margin, "neg_margin": neg_margin}
    ours = L.CrossBatchMemory(L.ContrastiveLoss(**kwargs), DIM, memory_size=40)
    ref = pml_losses.CrossBatchMemory(pml_losses.ContrastiveLoss(**kwargs), DIM, memory_size=40)
    for i, (x, y) in enumerate(batches(seed=2)):
        v1, g1, _ = step(ours, x, y)
        v2, g2, _ = step(ref, x, y)
        close(v1, v2, f"call {i} value: ")
        close(g1, g2, f"call {i} grad: ")


def test_xbm_with_learned_per_class_margin_beta_matches_pml():
    kwargs = {"learn_beta": True, "num_classes": 6, "nu": 0.1}
    inner, ref_inner = L.MarginLoss(**kwargs), pml_losses.MarginLoss(**kwargs)
    ours = L.CrossBatchMemory(inner, DIM, memory_size=30)
    ref = pml_losses.CrossBatchMemory(ref_inner, DIM, memory_size=30)
    assert ours.proxy_parameters() == [inner.beta]
    for i, (x, y) in enumerate(batches(seed=1, sizes=[10, 10, 10, 10])):
        v1, g1, (b1,) = step(ours, x, y, inner.beta)
        v2, g2, (b2,) = step(ref, x, y, ref_inner.beta)
        close(v1, v2, f"call {i} value: ")
        close(g1, g2, f"call {i} grad: ")
        close(b1, b2, f"call {i} beta grad: ")


def test_start_iteration_batch_weight_and_eval_mode():
    ours = L.CrossBatchMemory(L.MultiSimilarityLoss(), DIM, memory_size=32, start_iteration=2)
    ref = pml_losses.CrossBatchMemory(pml_losses.MultiSimilarityLoss(), DIM, memory_size=32)
    data = list(batches(seed=2, sizes=[8, 8, 8, 8]))
    for x, y in data[:2]:  # warm-up calls: the in-batch loss, nothing stored
        assert float(ours(x, y)) == pytest.approx(float(L.MultiSimilarityLoss()(x, y)), rel=1e-6)
    assert ours.memory()[0].shape[0] == 0
    for i, (x, y) in enumerate(data[2:]):
        close(ours(x, y).detach(), ref(x, y).detach(), f"call {i}: ")
    ours.eval()
    x, y = data[0]
    before = ours.embedding_memory.clone(), ours.queue_state.clone()
    assert float(ours(x, y)) == pytest.approx(float(L.MultiSimilarityLoss()(x, y)), rel=1e-6)
    assert torch.equal(ours.embedding_memory, before[0])
    assert torch.equal(ours.queue_state, before[1])
    # batch_weight adds the in-batch loss to the memory loss
    weighted = L.CrossBatchMemory(L.ContrastiveLoss(), DIM, memory_size=32, batch_weight=0.5)
    plain = L.CrossBatchMemory(L.ContrastiveLoss(), DIM, memory_size=32)
    for x, y in data:
        expected = float(plain(x, y)) + 0.5 * float(L.ContrastiveLoss()(x, y))
        assert float(weighted(x, y)) == pytest.approx(expected, rel=1e-5)


def test_queue_state_survives_state_dict():
    a = L.CrossBatchMemory(L.TripletLoss(), DIM, memory_size=24)
    data = list(batches(seed=3, sizes=[10, 10, 10, 6]))
    for x, y in data[:3]:
        a(x, y)
    b = L.CrossBatchMemory(L.TripletLoss(), DIM, memory_size=24)
    b.load_state_dict(a.state_dict())
    x, y = data[3]
    assert float(b(x, y)) == pytest.approx(float(a(x, y)), rel=1e-6)
    a.reset_queue()
    assert a.memory()[0].shape[0] == 0


def test_xbm_from_config():
    cfg = {"base": {"name": "multi_similarity", "beta": 40, "xbm": {"memory_size": 64}}}
    loss = L.build_loss(cfg, embedding_size=DIM)
    xbm = loss.base
    assert isinstance(xbm, L.CrossBatchMemory) and xbm.memory_size == 64
    assert isinstance(xbm.loss, L.MultiSimilarityLoss) and xbm.loss.beta == 40
    x, y = next(batches())
    assert torch.isfinite(loss(x, y))
    default = L.build_loss({"base": {"name": "contrastive", "xbm": True}}, embedding_size=DIM)
    assert default.base.memory_size == 1024 and default.base.start_iteration == 0


@pytest.mark.parametrize(
    "cfg,kwargs,needle",
    [
        ({"name": "proxy_anchor", "xbm": {}}, {"num_classes": 4}, "xbm wraps the pair losses"),
        ({"name": "npair", "xbm": {}}, {}, "NPairLoss not supported"),
        ({"name": "triplet", "xbm": {"memory": 5}}, {}, "bad arguments"),
        ({"name": "triplet", "xbm": {"memory_size": 0}}, {}, "memory_size must be"),
        ({"name": "triplet", "miner": "semihard", "xbm": {}}, {}, "miner is not supported"),
        ({"name": "triplet", "xbm": 3}, {}, "expected a mapping"),
    ],
)
def test_bad_xbm_configs(cfg, kwargs, needle):
    with pytest.raises(ConfigError, match=needle) as info:
        L.build_loss({"base": cfg}, embedding_size=DIM, **kwargs)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="needs embedding_size"):
        L.build_loss({"base": {"name": "triplet", "xbm": {}}})


def test_bad_xbm_inputs():
    xbm = L.CrossBatchMemory(L.ContrastiveLoss(), DIM, memory_size=8)
    with pytest.raises(LangDMLError, match="exceeds memory_size=8"):
        xbm(torch.randn(9, DIM), torch.zeros(9, dtype=torch.long))
    with pytest.raises(LangDMLError, match="expected embedding_size=16"):
        xbm(torch.randn(4, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(LangDMLError, match="indices_tuple"):
        xbm(torch.randn(4, DIM), torch.zeros(4, dtype=torch.long), indices_tuple=())
    with pytest.raises(LangDMLError, match="DRTripletLoss not supported"):
        L.CrossBatchMemory(L.DRTripletLoss(), DIM)
