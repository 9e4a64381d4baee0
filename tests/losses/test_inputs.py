"""Bad inputs raise one clear ValueError; awkward but valid batches give finite values/grads."""

from __future__ import annotations

import pytest
import torch

from langdml import losses as L
from langdml.errors import LangDMLError

C, D = 6, 8


def text(c=C, d=5):
    return torch.randn(c, d, generator=torch.Generator().manual_seed(1))


def all_losses():
    return {
        "contrastive": L.ContrastiveLoss(),
        "triplet": L.TripletLoss(),
        "npair": L.NPairLoss(),
        "multi_similarity": L.MultiSimilarityLoss(),
        "ms_mined": L.MultiSimilarityLoss(miner=L.MultiSimilarityMiner()),
        "triplet_semihard": L.TripletLoss(miner=L.SemiHardMiner()),
        "triplet_hard": L.TripletLoss(miner=L.BatchHardMiner()),
        "contrastive_dw": L.ContrastiveLoss(miner=L.DistanceWeightedMiner()),
        "proxy_nca": L.ProxyNCALoss(C, D),
        "proxy_nca_paper": L.ProxyNCALoss(C, D, variant="paper"),
        "proxy_anchor": L.ProxyAnchorLoss(C, D),
        "proxy_gml": L.ProxyGMLLoss(C, D, proxies_per_class=3),
        "language": L.LanguageGuidanceLoss(text()),
        "language_plg": L.LanguageGuidanceLoss(torch.randn(C, 3, 5)),
        "direction_orth_all": L.DirectionRegularizer(form="orthogonal", positives="all"),
        "direction_orth": L.DirectionRegularizer(form="orthogonal"),
    }


@pytest.mark.parametrize("name", sorted(all_losses()))
@pytest.mark.parametrize(
    "embeddings,labels,needle",
    [
        (torch.randn(4, D), torch.tensor([0, 1, 2]), "3 labels for 4 embeddings"),
        (torch.randn(4, D), torch.tensor([0.0, 1.0, 2.0, 3.0]), "integer dtype"),
        (torch.randn(4), torch.tensor([0, 1, 2, 3]), "2-D"),
        (torch.randn(4, D), torch.tensor([[0, 1, 2, 3]]), "1-D"),
        (torch.tensor([[float("nan")] * D] * 4), torch.tensor([0, 1, 2, 3]), "NaN"),
        (torch.randn(4, D), torch.tensor([0, -1, 2, 3]), ">= 0"),
    ],
)
def test_bad_inputs_raise_value_error(name, embeddings, labels, needle):
    loss = all_losses()[name]
    with pytest.raises(LangDMLError, match=needle) as info:
        loss(embeddings, labels)
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["proxy_nca", "proxy_anchor", "proxy_gml", "language"])
def test_label_beyond_num_classes_raises(name):
    with pytest.raises(LangDMLError, match=f"label {C} >= num_classes={C}"):
        all_losses()[name](torch.randn(3, D), torch.tensor([0, 1, C]))


def test_proxy_loss_rejects_wrong_embedding_size():
    with pytest.raises(LangDMLError, match="expected embedding_size=8"):
        L.ProxyAnchorLoss(C, D)(torch.randn(3, D + 1), torch.tensor([0, 1, 2]))


def test_text_matrix_rows_must_match_classes():
    with pytest.raises(LangDMLError, match="has 6 rows, expected one per class \\(7\\)"):
        L.LanguageGuidanceLoss(text(), num_classes=7)
    with pytest.raises(LangDMLError, match="float \\(C, d\\) or \\(C, k, d\\)"):
        L.LanguageGuidanceLoss(torch.randn(5))


def test_bad_options_raise():
    with pytest.raises(LangDMLError, match="direction must be one of"):
        L.LanguageGuidanceLoss(text(), direction="sideways")
    with pytest.raises(LangDMLError, match="form must be one of"):
        L.DirectionRegularizer(form="nope")
    with pytest.raises(LangDMLError, match="variant must be"):
        L.ProxyNCALoss(C, D, variant="x")
    with pytest.raises(LangDMLError, match="num_classes must be an int >= 1"):
        L.ProxyAnchorLoss(0, D)


def _batches():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, D, generator=g)
    dup = x.clone()
    dup[1] = dup[0]
    dup[5] = dup[4]
    zeros = x.clone()
    zeros[2] = 0
    zeros[3] = 0
    return {
        "all_equal_labels": (x, torch.zeros(8, dtype=torch.long)),
        "all_distinct_labels": (x, torch.arange(8) % C),
        "duplicate_embeddings": (dup, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])),
        "identical_batch": (x[:1].repeat(8, 1), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])),
        "zero_vectors": (zeros, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])),
        "single_sample": (x[:1], torch.tensor([2])),
    }


@pytest.mark.parametrize("batch", sorted(_batches()))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(all_losses()))
def test_finite_values_and_gradients(name, dtype, batch):
    x, y = _batches()[batch]
    x = x.to(dtype).requires_grad_(True)
    loss = all_losses()[name]
    value = loss(x, y)
    assert value.dtype == torch.float32 and value.ndim == 0
    value.backward()
    assert bool(torch.isfinite(value)), (name, batch, float(value))
    assert x.grad is not None and x.grad.dtype == dtype
    assert bool(torch.isfinite(x.grad).all()), (name, batch)
    for p in loss.parameters():
        if p.grad is not None:
            assert bool(torch.isfinite(p.grad).all())


def test_fp16_matches_fp32_closely():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(32, D, generator=g)
    y = torch.arange(32) // 4
    for name in ("multi_similarity", "triplet", "contrastive"):
        loss = all_losses()[name]
        ref = float(loss(x, y))
        half = float(loss(x.half(), y))
        assert half == pytest.approx(ref, rel=2e-2), name


def test_large_margins_and_scales_stay_finite():
    x = torch.randn(16, D)
    y = torch.arange(16) // 2
    for loss in (
        L.MultiSimilarityLoss(alpha=200, beta=500),
        L.ProxyAnchorLoss(C * 3, D, alpha=500),
        L.ProxyNCALoss(C * 3, D, softmax_scale=500),
        L.ProxyGMLLoss(C * 3, D, scale=500),
    ):
        x1 = x.clone().requires_grad_(True)
        value = loss(x1, y)
        value.backward()
        assert bool(torch.isfinite(value)) and bool(torch.isfinite(x1.grad).all())
