"""Proxy losses handed a mined indices_tuple: ProxyNCA and Proxy Anchor weight samples exactly as
pytorch-metric-learning 2.9 does (same value, same embedding and proxy gradients); ProxyGML
refuses the tuple with one line."""

from __future__ import annotations

import pytest
import torch

from langdml import losses as L
from langdml.errors import LangDMLError

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
pml_miners = pytest.importorskip("pytorch_metric_learning.miners")
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu  # noqa: E402

RTOL = 1e-5
DIM = 24


def make_batch(batch: int, seed: int, classes: int):
    g = torch.Generator().manual_seed(1000 * seed + batch)
    x = torch.randn(batch, DIM, generator=g)
    y = torch.randint(0, classes, (batch,), generator=g)
    return x, y, g


def assert_close_rel(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    torch.testing.assert_close(
        ours, ref, rtol=RTOL, atol=RTOL * max(scale, 1e-6), msg=lambda m: f"{what}: {m}"
    )


def value_and_grads(loss, x, y, proxies, indices_tuple=None):
    x = x.clone().requires_grad_(True)
    proxies.grad = None
    value = loss(x, y, indices_tuple)
    value.backward()
    return value.detach(), x.grad, proxies.grad.clone()


def hand_pairs(y: torch.Tensor, g: torch.Generator):
    """A few random (a1, p, a2, n) pairs with repeats, naming only part of the batch."""
    same = (y[:, None] == y[None, :]).fill_diagonal_(False)
    a1, p = torch.where(same)
    a2, n = torch.where(y[:, None] != y[None, :])
    keep_p = torch.randint(0, len(a1), (max(1, len(a1) // 3),), generator=g)
    keep_n = torch.randint(0, len(a2), (max(1, len(a2) // 20),), generator=g)
    return a1[keep_p], p[keep_p], a2[keep_n], n[keep_n]


def hand_triplets(y: torch.Tensor, g: torch.Generator):
    a, p, n = lmu.get_all_triplets_indices(y)
    keep = torch.randint(0, len(a), (max(1, len(a) // 50),), generator=g)
    return a[keep], p[keep], n[keep]


MINERS = {
    "multi_similarity": lambda x, y, g: pml_miners.MultiSimilarityMiner(epsilon=0.1)(x, y),
    "triplet_all": lambda x, y, g: pml_miners.TripletMarginMiner(margin=0.2)(x, y),
    "triplet_semihard": lambda x, y, g: pml_miners.TripletMarginMiner(
        margin=0.2, type_of_triplets="semihard"
    )(x, y),
    "hand_pairs": lambda x, y, g: hand_pairs(y, g),
    "hand_triplets": lambda x, y, g: hand_triplets(y, g),
}

CASES = {
    "proxy_nca": (L.ProxyNCALoss, pml_losses.ProxyNCALoss, {}),
    "proxy_nca_scale3": (L.ProxyNCALoss, pml_losses.ProxyNCALoss, {"softmax_scale": 3.0}),
    "proxy_anchor": (L.ProxyAnchorLoss, pml_losses.ProxyAnchorLoss, {}),
    # alpha = 64 takes the max-shifted log-sum-exp path
    "proxy_anchor_alpha64": (
        L.ProxyAnchorLoss,
        pml_losses.ProxyAnchorLoss,
        {"alpha": 64.0, "margin": 0.2},
    ),
}


def pair(name: str, num_classes: int):
    ours_cls, pml_cls, kwargs = CASES[name]
    kwargs = {"num_classes": num_classes, "embedding_size": DIM, **kwargs}
    ours, ref = ours_cls(**kwargs), pml_cls(**kwargs)
    with torch.no_grad():
        ref.proxies.copy_(ours.proxies)
    return ours, ref


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("miner", sorted(MINERS))
@pytest.mark.parametrize("seed,batch,classes", [(0, 16, 4), (1, 33, 8), (2, 64, 12)])
def test_mined_proxy_loss_matches_pml(name, miner, seed, batch, classes):
    x, y, g = make_batch(batch, seed, classes)
    indices_tuple = MINERS[miner](x, y, g)
    if all(len(t) == 0 for t in indices_tuple):
        pytest.skip("miner found nothing (covered by the empty-tuple test)")
    ours, ref = pair(name, classes + 2)
    v1, g1, p1 = value_and_grads(ours, x, y, ours.proxies, indices_tuple)
    v2, g2, p2 = value_and_grads(ref, x, y, ref.proxies, indices_tuple)
    assert_close_rel(v1, v2, f"{name}/{miner} value")
    assert_close_rel(g1, g2, f"{name}/{miner} embedding grad")
    assert_close_rel(p1, p2, f"{name}/{miner} proxy grad")
    # the tuple is honoured: the value is not the unmined one
    unmined = ours(x, y)
    assert not torch.allclose(v1, unmined, rtol=1e-4, atol=0.0)


def test_multi_similarity_tuple_changes_proxy_anchor_like_pml():
    """The reported case: with a multi-similarity miner's tuple PML and we agree, and both
    differ from the unmined value."""
    x, y, _ = make_batch(32, 3, 8)
    indices_tuple = pml_miners.MultiSimilarityMiner()(x, y)
    ours, ref = pair("proxy_anchor", 8)
    mined = ours(x, y, indices_tuple).detach()
    assert_close_rel(mined, ref(x, y, indices_tuple).detach(), "value")
    assert abs(float(mined) - float(ours(x, y).detach())) > 1e-3


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("size", [3, 4])
def test_empty_tuple_gives_pml_value_which_is_unmined(name, size):
    x, y, _ = make_batch(20, 4, 5)
    ours, ref = pair(name, 7)
    empty = tuple(torch.empty(0, dtype=torch.long) for _ in range(size))
    v1, g1, p1 = value_and_grads(ours, x, y, ours.proxies, empty)
    v2, g2, p2 = value_and_grads(ref, x, y, ref.proxies, empty)
    assert_close_rel(v1, v2, "value")
    assert_close_rel(g1, g2, "embedding grad")
    assert_close_rel(p1, p2, "proxy grad")
    assert torch.equal(v1, ours(x, y).detach())  # PML treats an empty tuple as no tuple


@pytest.mark.parametrize("name", sorted(CASES))
def test_unmined_matches_pml(name):
    x, y, _ = make_batch(24, 5, 6)
    ours, ref = pair(name, 6)
    v1, g1, p1 = value_and_grads(ours, x, y, ours.proxies)
    v2, g2, p2 = value_and_grads(ref, x, y, ref.proxies)
    assert_close_rel(v1, v2, "value")
    assert_close_rel(g1, g2, "embedding grad")
    assert_close_rel(p1, p2, "proxy grad")


@pytest.mark.parametrize("miner", ["multi_similarity", "hand_triplets"])
def test_proxy_nca_paper_variant_weights_samples_like_pml(miner):
    x, y, g = make_batch(30, 6, 6)
    indices_tuple = MINERS[miner](x, y, g)
    loss = L.ProxyNCALoss(num_classes=6, embedding_size=DIM, variant="paper")
    # PML's weights for a loss whose reference set is the proxies: anchors only
    w = lmu.convert_to_weights(indices_tuple, y, dtype=torch.float32, using_ref=True)
    assert 0 < int((w > 0).sum()) < len(y) or len(indices_tuple) == 4
    z = torch.nn.functional.normalize(x, dim=1)
    p = torch.nn.functional.normalize(loss.proxies.detach(), dim=1)
    d2 = torch.cdist(z, p) ** 2
    target = d2[torch.arange(len(y)), y]
    others = torch.exp(-d2).scatter(1, y[:, None], 0.0).sum(dim=1)
    expected = (w * (target + torch.log(others))).mean()
    torch.testing.assert_close(loss(x, y, indices_tuple), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "indices_tuple",
    [
        (torch.tensor([0]), torch.tensor([1])),
        (torch.tensor([0]), torch.tensor([1]), torch.tensor([2, 3])),
        (torch.tensor([0]), torch.tensor([1]), torch.tensor([0]), torch.tensor([99])),
        (torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([2.0])),
    ],
    ids=["two_entries", "mismatched_lengths", "out_of_batch", "float_indices"],
)
@pytest.mark.parametrize("cls", [L.ProxyNCALoss, L.ProxyAnchorLoss])
def test_malformed_tuple_raises_one_line(cls, indices_tuple):
    x, y, _ = make_batch(8, 7, 3)
    loss = cls(num_classes=3, embedding_size=DIM)
    with pytest.raises(LangDMLError, match="indices_tuple") as info:
        loss(x, y, indices_tuple)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("size", [3, 4])
def test_proxy_gml_refuses_mined_tuple_with_one_line(size):
    x, y, g = make_batch(16, 8, 4)
    loss = L.ProxyGMLLoss(num_classes=4, embedding_size=DIM, proxies_per_class=3)
    indices_tuple = hand_triplets(y, g) if size == 3 else hand_pairs(y, g)
    with pytest.raises(LangDMLError) as info:
        loss(x, y, indices_tuple)
    message = str(info.value)
    assert "\n" not in message
    assert "ProxyGMLLoss does not support mined tuples" in message
    assert torch.isfinite(loss(x, y))  # unmined still works


@pytest.mark.parametrize(
    "name,plain_cls",
    [("text_proxy_anchor", L.ProxyAnchorLoss), ("text_proxy_nca", L.ProxyNCALoss)],
)
def test_text_proxy_losses_pass_the_tuple_through(name, plain_cls):
    from langdml.xmodal.text_proxies import TEXT_PROXY_LOSSES

    x, y, g = make_batch(24, 9, 5)
    text = torch.nn.functional.normalize(torch.randn(5, 16, generator=g), dim=1)
    loss = TEXT_PROXY_LOSSES[name](text, embedding_size=DIM)
    plain = plain_cls(num_classes=5, embedding_size=DIM)
    with torch.no_grad():
        plain.proxies.copy_(loss.proxies)
    indices_tuple = pml_miners.MultiSimilarityMiner()(x, y)
    assert len(indices_tuple[0]) > 0
    mined = loss(x, y, indices_tuple)
    torch.testing.assert_close(mined, plain(x, y, indices_tuple), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(mined, loss(x, y), rtol=1e-4, atol=0.0)
