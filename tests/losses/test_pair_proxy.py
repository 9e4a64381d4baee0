"""Our pair and proxy losses against pytorch-metric-learning 2.9 (default hyperparameters and
reducers): same value and same gradients (embeddings and proxies) on the same inputs."""

from __future__ import annotations

import pytest
import torch
from losskit import LAYOUTS, make_batch

from langdml import losses as L

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")

RTOL = 1e-5

SIZES = [2, 3, 8, 33, 96]


def assert_close_rel(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    torch.testing.assert_close(
        ours, ref, rtol=RTOL, atol=RTOL * max(scale, 1e-6), msg=lambda m: f"{what}: {m}"
    )


def value_and_grads(loss, x, y, *params, **kwargs):
    x = x.clone().requires_grad_(True)
    for p in params:
        p.grad = None
    value = loss(x, y, **kwargs)
    value.backward()
    return value.detach(), x.grad, [p.grad.clone() for p in params]


PAIR_CASES = {
    "contrastive": (L.ContrastiveLoss, pml_losses.ContrastiveLoss),
    "triplet": (L.TripletLoss, pml_losses.TripletMarginLoss),
    "multi_similarity": (L.MultiSimilarityLoss, pml_losses.MultiSimilarityLoss),
    "npair": (L.NPairLoss, pml_losses.NPairsLoss),
}


@pytest.mark.parametrize("name", sorted(PAIR_CASES))
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("batch", SIZES)
def test_pair_loss_matches_pml(name, layout, batch):
    ours_cls, pml_cls = PAIR_CASES[name]
    x, y = make_batch(batch, layout)
    v1, g1, _ = value_and_grads(ours_cls(), x, y)
    v2, g2, _ = value_and_grads(pml_cls(), x, y)
    assert_close_rel(v1, v2.to(v1.dtype), f"{name} value")
    assert_close_rel(g1, g2, f"{name} grad")


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("contrastive", {"pos_margin": 0.2, "neg_margin": 0.8}),
        ("triplet", {"margin": 0.3}),
        ("multi_similarity", {"alpha": 3.0, "beta": 40.0, "base": 0.6}),
        # exponents up to 100: the max-shifted log-sum-exp path instead of the direct one
        ("multi_similarity", {"alpha": 10.0, "beta": 200.0, "base": 0.5}),
    ],
)
def test_pair_loss_matches_pml_with_other_hyperparameters(name, kwargs):
    ours_cls, pml_cls = PAIR_CASES[name]
    x, y = make_batch(64, "random", seed=3)
    v1, g1, _ = value_and_grads(ours_cls(**kwargs), x, y)
    v2, g2, _ = value_and_grads(pml_cls(**kwargs), x, y)
    assert_close_rel(v1, v2, f"{name} value")
    assert_close_rel(g1, g2, f"{name} grad")


PROXY_CASES = {
    "proxy_nca": (L.ProxyNCALoss, pml_losses.ProxyNCALoss),
    "proxy_anchor": (L.ProxyAnchorLoss, pml_losses.ProxyAnchorLoss),
}


@pytest.mark.parametrize("name", sorted(PROXY_CASES))
@pytest.mark.parametrize("layout", ["m_per_class", "singletons", "no_positive", "one_class"])
@pytest.mark.parametrize("batch", [1, 3, 16, 96])
def test_proxy_loss_matches_pml(name, layout, batch):
    ours_cls, pml_cls = PROXY_CASES[name]
    x, y = make_batch(batch, layout)
    num_classes = int(y.max()) + 3
    ours = ours_cls(num_classes=num_classes, embedding_size=x.shape[1])
    ref = pml_cls(num_classes=num_classes, embedding_size=x.shape[1])
    with torch.no_grad():
        ref.proxies.copy_(ours.proxies)
    v1, g1, (p1,) = value_and_grads(ours, x, y, ours.proxies)
    v2, g2, (p2,) = value_and_grads(ref, x, y, ref.proxies)
    assert_close_rel(v1, v2, f"{name} value")
    assert_close_rel(g1, g2, f"{name} embedding grad")
    assert_close_rel(p1, p2, f"{name} proxy grad")


@pytest.mark.parametrize(
    "name,kwargs,seed",
    [
        ("proxy_nca", {"softmax_scale": 3.0}, 5),
        # alpha = 64 takes the max-shifted log-sum-exp path
        ("proxy_anchor", {"margin": 0.2, "alpha": 64.0}, 6),
    ],
)
def test_proxy_loss_matches_pml_with_other_hyperparameters(name, kwargs, seed):
    ours_cls, pml_cls = PROXY_CASES[name]
    x, y = make_batch(40, "random", seed=seed)
    kwargs = {"num_classes": 20, "embedding_size": x.shape[1], **kwargs}
    ours, ref = ours_cls(**kwargs), pml_cls(**kwargs)
    with torch.no_grad():
        ref.proxies.copy_(ours.proxies)
    v1, g1, (p1,) = value_and_grads(ours, x, y, ours.proxies)
    v2, g2, (p2,) = value_and_grads(ref, x, y, ref.proxies)
    assert_close_rel(v1, v2, "value")
    assert_close_rel(g1, g2, "grad")
    assert_close_rel(p1, p2, "proxy grad")


def test_proxy_nca_paper_variant_excludes_target_from_denominator():
    x, y = make_batch(12, "random", seed=7)
    loss = L.ProxyNCALoss(num_classes=6, embedding_size=x.shape[1], variant="paper")
    z = torch.nn.functional.normalize(x, dim=1)
    p = torch.nn.functional.normalize(loss.proxies.detach(), dim=1)
    expected = []
    for i in range(len(y)):
        d2 = ((z[i] - p) ** 2).sum(dim=1)
        others = [torch.exp(-d2[c]) for c in range(6) if c != int(y[i])]
        expected.append(-torch.log(torch.exp(-d2[y[i]]) / torch.stack(others).sum()))
    torch.testing.assert_close(loss(x, y), torch.stack(expected).mean(), rtol=1e-5, atol=1e-6)


def test_proxy_anchor_init_is_kaiming_normal_like_pml():
    torch.manual_seed(0)
    loss = L.ProxyAnchorLoss(num_classes=400, embedding_size=64)
    # kaiming normal, fan_out = num_classes: std = sqrt(2 / 400)
    assert abs(float(loss.proxies.detach().std()) - (2 / 400) ** 0.5) < 0.005
    assert loss.proxies.shape == (400, 64)


# ---- losses fed with mined indices: same indices into ours and PML's -------------------------

miners = pytest.importorskip("pytorch_metric_learning.miners")


@pytest.mark.parametrize(
    "name,pml_miner",
    [
        ("triplet", lambda: miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")),
        ("triplet", lambda: miners.MultiSimilarityMiner()),
        ("triplet", lambda: miners.BatchHardMiner()),
        ("contrastive", lambda: miners.TripletMarginMiner(margin=0.2, type_of_triplets="all")),
        ("contrastive", lambda: miners.MultiSimilarityMiner()),
        ("multi_similarity", lambda: miners.MultiSimilarityMiner()),
        ("npair", lambda: miners.MultiSimilarityMiner()),
    ],
)
def test_losses_with_mined_indices_match_pml(name, pml_miner):
    ours_cls, pml_cls = PAIR_CASES[name]
    x, y = make_batch(48, "m_per_class", seed=11)
    indices = pml_miner()(x, y)
    assert len(indices[0]) > 1
    v1, g1, _ = value_and_grads(ours_cls(), x, y, indices_tuple=indices)
    v2, g2, _ = value_and_grads(pml_cls(), x, y, indices_tuple=indices)
    assert_close_rel(v1, v2, f"{name} value")
    assert_close_rel(g1, g2, f"{name} grad")


def test_loss_with_miner_argument_uses_the_miner():
    x, y = make_batch(48, "m_per_class", seed=12)
    ms = L.MultiSimilarityLoss(miner=L.MultiSimilarityMiner(epsilon=0.1))
    ref = pml_losses.MultiSimilarityLoss()
    v1, g1, _ = value_and_grads(ms, x, y)
    v2, g2, _ = value_and_grads(ref, x, y, indices_tuple=miners.MultiSimilarityMiner(0.1)(x, y))
    assert_close_rel(v1, v2, "value")
    assert_close_rel(g1, g2, "grad")
    plain = L.MultiSimilarityLoss()(x, y)
    assert abs(float(plain) - float(v1)) > 1e-4  # mining changes the value on this batch


def test_triplet_loss_large_batch_matches_pml():
    """B = 256 with 4 per class: 261k triplets through the closed form vs PML's explicit list."""
    x, y = make_batch(256, "m_per_class", dim=64, seed=2)
    v1, g1, _ = value_and_grads(L.TripletLoss(), x, y)
    v2, g2, _ = value_and_grads(pml_losses.TripletMarginLoss(), x, y)
    assert_close_rel(v1, v2, "value")
    assert_close_rel(g1, g2, "grad")


def test_npair_pairs_without_a_mask_equal_the_row_major_first_pairs():
    from langdml.losses.npair import first_pair_of_each_label

    g = torch.Generator().manual_seed(11)
    for batch in (1, 2, 7, 64, 300):
        labels = torch.randint(0, max(1, batch // 3), (batch,), generator=g)
        expected = {}  # label -> first (i, j), i != j, same label, in row-major order
        for i in range(batch):
            for j in range(batch):
                if i != j and labels[i] == labels[j] and int(labels[i]) not in expected:
                    expected[int(labels[i])] = (i, j)
        a, p = first_pair_of_each_label(labels)
        got = {int(labels[x]): (int(x), int(y)) for x, y in zip(a, p, strict=True)}
        assert got == expected and len(a) == len(expected)
