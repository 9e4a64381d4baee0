"""CombinedLoss and build_loss: registry, wiring of extra inputs, logging terms, errors."""

from __future__ import annotations

import pytest
import torch

from langdml import losses as L
from langdml.errors import ConfigError

C, D = 8, 6


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, D, generator=g), torch.arange(16) % C


def test_exports_are_exactly_the_contract():
    assert set(L.__all__) == {
        "ContrastiveLoss",
        "TripletLoss",
        "NPairLoss",
        "MultiSimilarityLoss",
        "ProxyNCALoss",
        "ProxyAnchorLoss",
        "ProxyGMLLoss",
        "MarginLoss",
        "CircleLoss",
        "ArcFaceLoss",
        "CosFaceLoss",
        "NormalizedSoftmaxLoss",
        "SoftTripleLoss",
        "ProxyNCAPlusPlusLoss",
        "CrossBatchMemory",
        "S2SDLoss",
        "LanguageGuidanceLoss",
        "DirectionRegularizer",
        "DRTripletLoss",
        "DRProxyNCALoss",
        "DRMultiSimilarityLoss",
        "AllTripletsMiner",
        "SemiHardMiner",
        "BatchHardMiner",
        "DistanceWeightedMiner",
        "MultiSimilarityMiner",
        "TripletMarginMiner",
        "CombinedLoss",
        "build_loss",
        "build_base",
        "build_miner",
        "LossConfig",
        "LOSSES",
        "MINERS",
        "REGULARIZERS",
        "BASE_LOSSES",
        "TextProxyAnchorLoss",
        "TextProxyNCALoss",
        "TEXT_PROXY_LOSSES",
    }


@pytest.mark.parametrize(
    "name,cls",
    [
        ("contrastive", L.ContrastiveLoss),
        ("triplet", L.TripletLoss),
        ("npair", L.NPairLoss),
        ("multi_similarity", L.MultiSimilarityLoss),
        ("proxy_nca", L.ProxyNCALoss),
        ("proxy_anchor", L.ProxyAnchorLoss),
        ("proxy_gml", L.ProxyGMLLoss),
    ],
)
def test_every_registered_base_builds_and_runs(name, cls):
    loss = L.build_loss({"base": {"name": name}}, num_classes=C, embedding_size=D)
    assert isinstance(loss, L.CombinedLoss) and isinstance(loss.base, cls)
    x, y = batch()
    x.requires_grad_(True)
    value = loss(x, y)
    value.backward()
    assert float(value.detach()) == pytest.approx(float(loss.base(x, y).detach()), rel=1e-6)
    assert loss.last_terms.keys() == {"base", "total"}
    if name.startswith("proxy"):
        assert loss.proxy_parameters() == [loss.base.proxies]
        assert loss.proxies is loss.base.proxies
    else:
        assert loss.proxy_parameters() == []


def test_total_is_base_plus_weighted_regularizers_and_terms_are_logged():
    text = torch.randn(C, 3, 5)
    cfg = {
        "base": {"name": "multi_similarity", "alpha": 2, "beta": 40, "base": 0.5},
        "regularizers": [
            {"name": "language", "weight": 5.0, "temperature": 1.0},
            {"name": "direction", "weight": 0.3, "form": "orthogonal"},
        ],
    }
    loss = L.build_loss(cfg, num_classes=C, embedding_size=D, class_text_embeddings=text)
    x, y = batch(1)
    total = loss(x, y)
    base = L.MultiSimilarityLoss(beta=40)(x, y)
    lang = L.LanguageGuidanceLoss(text)(x, y)
    direc = L.DirectionRegularizer(form="orthogonal")(x, y)
    expected = base + 5.0 * lang + 0.3 * direc
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=1e-6)
    terms = loss.last_terms
    assert set(terms) == {"base", "language", "direction", "total"}
    assert all(isinstance(v, float) for v in terms.values())
    assert terms["language"] == pytest.approx(float(lang.detach()), rel=1e-5)
    assert terms["total"] == pytest.approx(float(total.detach()), rel=1e-6)


def test_proxy_base_passes_its_proxies_to_proxy_mode_regularizers():
    text = torch.randn(C, 5)
    cfg = {
        "base": "proxy_anchor",
        "regularizers": [
            {"name": "language", "weight": 1.0, "mode": "proxy"},
            {"name": "direction", "weight": 1.0, "form": "orthogonal"},
        ],
    }
    loss = L.build_loss(cfg, num_classes=C, embedding_size=D, class_text_embeddings=text)
    x, y = batch(2)
    loss(x, y)
    proxies = loss.base.proxies
    lang = L.LanguageGuidanceLoss(text, mode="proxy")(
        x, y, proxies=proxies, proxy_labels=torch.arange(C)
    )
    direc = L.DirectionRegularizer(mode="proxies")(
        x, y, proxies=proxies, proxy_labels=torch.arange(C)
    )
    assert loss.last_terms["language"] == pytest.approx(float(lang.detach()), rel=1e-5)
    assert loss.last_terms["direction"] == pytest.approx(float(direc.detach()), rel=1e-5)
    # the regularizers train the proxies too
    loss.zero_grad()
    loss.regularizers[0](x, y, proxies=proxies, proxy_labels=torch.arange(C)).backward()
    assert float(proxies.grad.abs().sum()) > 0
    # proxies are registered once, so an optimizer sees them once
    assert len(list(loss.parameters())) == 1


def test_miner_from_config():
    loss = L.build_loss({"base": {"name": "triplet", "miner": {"name": "semihard", "margin": 0.3}}})
    assert isinstance(loss.base.miner, L.SemiHardMiner) and loss.base.miner.margin == 0.3
    loss = L.build_loss({"base": {"name": "multi_similarity", "miner": "multi_similarity"}})
    assert isinstance(loss.base.miner, L.MultiSimilarityMiner)


def test_pml_base_loss():
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    loss = L.build_loss({"base": "pml:ContrastiveLoss"})
    x, y = batch(3)
    assert float(loss(x, y)) == pytest.approx(float(pml.ContrastiveLoss()(x, y)), rel=1e-6)
    proxy = L.build_loss({"base": {"name": "pml:ProxyAnchorLoss", "margin": 0.2}}, C, D)
    assert proxy.proxy_parameters() == [proxy.base.loss.proxies]
    value = proxy(x, y)
    assert torch.isfinite(value)


@pytest.mark.parametrize(
    "cfg,kwargs,needle",
    [
        ({"base": {"name": "sphereface"}}, {}, "unknown base loss 'sphereface'"),
        ({"base": "proxy_anchor"}, {}, "needs num_classes="),
        ({"base": {"name": "triplet", "margn": 0.1}}, {}, "bad arguments"),
        (
            {"base": "triplet", "regularizers": [{"name": "language"}]},
            {},
            "needs class_text_embeddings",
        ),
        (
            {"base": "triplet", "regularizers": [{"name": "dropout"}]},
            {},
            "unknown regularizer 'dropout'",
        ),
        (
            {"base": "triplet", "regularizers": [{"name": "direction", "weight": "x"}]},
            {},
            "weight must be",
        ),
        ({"base": "triplet", "losses": []}, {}, "unknown keys"),
        ({"regularizers": []}, {}, "missing 'base'"),
        ({"base": {"name": "triplet", "miner": "nope"}}, {}, "unknown miner 'nope'"),
        ({"base": "pml:NotALoss"}, {}, "no such loss"),
        (
            {"base": "triplet", "regularizers": [{"name": "language"}]},
            {"num_classes": C + 1, "class_text_embeddings": torch.randn(C, 4)},
            "has 8 rows, expected one per class \\(9\\)",
        ),
        (
            {"base": "triplet", "regularizers": [{"name": "direction", "form": "x"}]},
            {},
            "form must",
        ),
    ],
)
def test_bad_configs_raise_config_error(cfg, kwargs, needle):
    with pytest.raises(ConfigError, match=needle) as info:
        L.build_loss(cfg, **kwargs)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_config_is_not_mutated():
    cfg = {"base": {"name": "triplet", "miner": {"name": "semihard"}}, "regularizers": []}
    snapshot = repr(cfg)
    L.build_loss(cfg)
    assert repr(cfg) == snapshot


def test_combined_loss_state_dict_round_trip():
    a = L.build_loss({"base": "proxy_gml"}, num_classes=C, embedding_size=D)
    b = L.build_loss({"base": "proxy_gml"}, num_classes=C, embedding_size=D)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a.base.proxies, b.base.proxies)


def test_zero_weight_regularizer_is_logged_but_not_trained():
    cfg = {"base": "triplet", "regularizers": [{"name": "direction", "weight": 0.0}]}
    loss = L.build_loss(cfg)
    x, y = batch(4)
    x.requires_grad_(True)
    total = loss(x, y)
    assert float(total.detach()) == pytest.approx(float(L.TripletLoss()(x, y).detach()), rel=1e-6)
    assert loss.last_terms["direction"] > 0
