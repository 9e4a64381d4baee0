"""Margin, Circle, ArcFace, CosFace, NormalizedSoftmax, SoftTriple against pytorch-metric-learning
2.9 (value and gradients: embeddings, class weights, β), ProxyNCA++ against a loop reference,
their config names, proxy wiring and argument checks, and the `pml:` adapter's nested objects."""

from __future__ import annotations

import math

import pytest
import torch
from losskit import LAYOUTS, make_batch

from langdml import losses as L
from langdml.errors import ConfigError, LangDMLError

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
pml_miners = pytest.importorskip("pytorch_metric_learning.miners")

RTOL = 1e-5


def assert_close_rel(ours, ref, what: str, floor: float = 1e-6) -> None:
    if ref is None or ours is None:  # no graph reached it (e.g. β without triplets): both None
        assert ours is None and ref is None, what
        return
    ref = ref.to(ours.dtype)
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    torch.testing.assert_close(
        ours, ref, rtol=RTOL, atol=max(RTOL * scale, floor), msg=lambda m: f"{what}: {m}"
    )


def value_and_grads(loss, x, y, *params, **kwargs):
    x = x.clone().requires_grad_(True)
    for p in params:
        p.grad = None
    value = loss(x, y, **kwargs)
    value.backward()
    grads = [None if p.grad is None else p.grad.clone() for p in params]
    return value.detach(), x.grad, grads


# ---- losses with class weights -----------------------------------------------------------------

# ours, PML's, PML's weight attribute (a (d, rows) tensor = our proxies transposed)
WEIGHT_CASES = {
    "arcface": (L.ArcFaceLoss, pml_losses.ArcFaceLoss, "W"),
    "cosface": (L.CosFaceLoss, pml_losses.CosFaceLoss, "W"),
    "normalized_softmax": (L.NormalizedSoftmaxLoss, pml_losses.NormalizedSoftmaxLoss, "W"),
    "soft_triple": (L.SoftTripleLoss, pml_losses.SoftTripleLoss, "fc"),
}


def weight_pair(name, num_classes, dim, **kwargs):
    ours_cls, pml_cls, attr = WEIGHT_CASES[name]
    ours = ours_cls(num_classes=num_classes, embedding_size=dim, **kwargs)
    ref = pml_cls(num_classes=num_classes, embedding_size=dim, **kwargs)
    with torch.no_grad():
        getattr(ref, attr).copy_(ours.proxies.T)
    return ours, ref, getattr(ref, attr)


# Cross-entropy over logits of magnitude s (up to 64) is exact in float32 only to ~s·1.2e-7
# absolute, in PML as in ours: a nearly solved sample's loss (~1e-6) differs by that much.
CE_FLOOR = 2e-5


def check_weight_loss(name, x, y, num_classes, kwargs=None, **call):
    ours, ref, ref_w = weight_pair(name, num_classes, x.shape[1], **(kwargs or {}))
    v1, g1, (w1,) = value_and_grads(ours, x, y, ours.proxies, **call)
    v2, g2, (w2,) = value_and_grads(ref, x, y, ref_w, **call)
    assert_close_rel(v1, v2, f"{name} value", CE_FLOOR)
    assert_close_rel(g1, g2, f"{name} embedding grad", CE_FLOOR)
    assert_close_rel(w1, w2.T, f"{name} weight grad", CE_FLOOR)


@pytest.mark.parametrize("name", sorted(WEIGHT_CASES))
@pytest.mark.parametrize("layout", ["m_per_class", "singletons", "no_positive", "one_class"])
@pytest.mark.parametrize("batch", [1, 3, 16, 96])
def test_class_weight_loss_matches_pml(name, layout, batch):
    x, y = make_batch(batch, layout)
    check_weight_loss(name, x, y, int(y.max()) + 3)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("arcface", {"margin": 45.0, "scale": 30.0}),
        ("cosface", {"margin": 0.2, "scale": 30.0}),
        ("normalized_softmax", {"temperature": 0.2}),
        ("soft_triple", {"centers_per_class": 3, "la": 10.0, "gamma": 0.2, "margin": 0.05}),
        ("soft_triple", {"centers_per_class": 1}),
    ],
)
def test_class_weight_loss_matches_pml_with_other_hyperparameters(name, kwargs):
    x, y = make_batch(40, "random", seed=4)
    check_weight_loss(name, x, y, 20, kwargs)


def test_arcface_past_pi_minus_margin_matches_pml():
    """Embeddings opposite their class weight: θ > π - m takes the cos θ - m·sin m branch."""
    ours, ref, ref_w = weight_pair("arcface", 5, 8, margin=40.0)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    g = torch.Generator().manual_seed(1)
    x = -ours.proxies.detach()[y] + 0.3 * torch.randn(6, 8, generator=g)
    cos = torch.nn.functional.cosine_similarity(x, ours.proxies.detach()[y])
    assert bool((cos < -math.cos(math.radians(40.0))).any())
    v1, g1, (w1,) = value_and_grads(ours, x, y, ours.proxies)
    v2, g2, (w2,) = value_and_grads(ref, x, y, ref_w)
    assert_close_rel(v1, v2, "value")
    assert_close_rel(g1, g2, "grad")
    assert_close_rel(w1, w2.T, "weight grad")


@pytest.mark.parametrize("name", sorted(WEIGHT_CASES))
def test_class_weight_loss_with_mined_indices_matches_pml(name):
    x, y = make_batch(32, "m_per_class", seed=9)
    # repeats weigh samples up to 1, samples never named get 0
    a, p, n = (
        torch.tensor([0, 0, 2, 5, 0]),
        torch.tensor([1, 1, 3, 4, 7]),
        torch.tensor([8, 9, 8, 10, 11]),
    )
    check_weight_loss(name, x, y, 12, indices_tuple=(a, p, n))
    check_weight_loss(name, x, y, 12, indices_tuple=pml_miners.MultiSimilarityMiner()(x, y))


@pytest.mark.parametrize("name", sorted(WEIGHT_CASES))
def test_class_weights_are_drawn_like_pml(name):
    ours_cls, pml_cls, attr = WEIGHT_CASES[name]
    torch.manual_seed(3)
    ours = ours_cls(num_classes=7, embedding_size=5)
    torch.manual_seed(3)
    ref = pml_cls(num_classes=7, embedding_size=5)
    torch.testing.assert_close(ours.proxies.detach(), getattr(ref, attr).detach().T)


@pytest.mark.parametrize("name", sorted(WEIGHT_CASES) + ["proxy_nca_pp"])
def test_class_weights_are_proxies_for_the_trainer_and_language_guidance(name):
    num_classes, dim = 6, 8
    text = torch.randn(num_classes, 5)
    cfg = {"base": name, "regularizers": [{"name": "language", "weight": 1.0, "mode": "proxy"}]}
    loss = L.build_loss(
        cfg, num_classes=num_classes, embedding_size=dim, class_text_embeddings=text
    )
    base = loss.base
    rows = base.proxies.shape[0]
    per_class = rows // num_classes
    assert loss.proxy_parameters() == [base.proxies] and loss.proxies is base.proxies
    assert (
        base.proxy_labels.tolist()
        == torch.arange(num_classes).repeat_interleave(per_class).tolist()
    )
    x, y = make_batch(12, "random", dim=dim, seed=5)
    loss(x, y).backward()
    expected = L.LanguageGuidanceLoss(text, mode="proxy")(
        x, y, proxies=base.proxies, proxy_labels=base.proxy_labels
    )
    assert loss.last_terms["language"] == pytest.approx(float(expected.detach()), rel=1e-5)
    assert float(base.proxies.grad.abs().sum()) > 0


def test_soft_triple_center_regularizer_matches_loop_reference():
    loss = L.SoftTripleLoss(num_classes=4, embedding_size=6, centers_per_class=3, tau=0.2)
    plain = L.SoftTripleLoss(num_classes=4, embedding_size=6, centers_per_class=3)
    with torch.no_grad():
        plain.proxies.copy_(loss.proxies)
    x, y = make_batch(10, "random", dim=6, seed=2)
    w = torch.nn.functional.normalize(loss.proxies.detach(), dim=1).view(4, 3, 6)
    reg = sum(
        math.sqrt(2 + 1e-5 - 2 * float(w[c, i] @ w[c, j]))
        for c in range(4)
        for i in range(3)
        for j in range(i + 1, 3)
    ) / (4 * 3 * 2)
    expected = float(plain(x, y)) + 0.2 * reg
    assert float(loss(x, y)) == pytest.approx(expected, rel=1e-5)


# ---- pair losses: Margin, Circle ---------------------------------------------------------------

PAIR_CASES = {
    "margin": (L.MarginLoss, pml_losses.MarginLoss),
    "circle": (L.CircleLoss, pml_losses.CircleLoss),
}


@pytest.mark.parametrize("name", sorted(PAIR_CASES))
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("batch", [2, 3, 8, 33, 96])
def test_pair_loss_matches_pml(name, layout, batch):
    ours_cls, pml_cls = PAIR_CASES[name]
    x, y = make_batch(batch, layout)
    v1, g1, _ = value_and_grads(ours_cls(), x, y)
    v2, g2, _ = value_and_grads(pml_cls(), x, y)
    assert_close_rel(v1, v2, f"{name} value")
    assert_close_rel(g1, g2, f"{name} grad")


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("margin", {"margin": 0.1, "beta": 0.8}),
        ("circle", {"m": 0.25, "gamma": 256.0}),
        ("circle", {"m": 0.4, "gamma": 10.0}),
    ],
)
def test_pair_loss_matches_pml_with_other_hyperparameters(name, kwargs):
    ours_cls, pml_cls = PAIR_CASES[name]
    x, y = make_batch(48, "random", seed=6)
    v1, g1, _ = value_and_grads(ours_cls(**kwargs), x, y)
    v2, g2, _ = value_and_grads(pml_cls(**kwargs), x, y)
    assert_close_rel(v1, v2, "value")
    assert_close_rel(g1, g2, "grad")


@pytest.mark.parametrize("per_class", [False, True])
@pytest.mark.parametrize("layout", ["m_per_class", "random", "no_positive"])
def test_margin_learned_beta_matches_pml(per_class, layout):
    x, y = make_batch(40, layout, seed=8)
    kwargs = {"learn_beta": True, "nu": 0.1}
    if per_class:
        kwargs["num_classes"] = int(y.max()) + 2
    ours, ref = L.MarginLoss(**kwargs), pml_losses.MarginLoss(**kwargs)
    with torch.no_grad():  # distinct β per class
        ours.beta.add_(torch.linspace(-0.3, 0.3, ours.beta.numel()))
        ref.beta.copy_(ours.beta)
    v1, g1, (b1,) = value_and_grads(ours, x, y, ours.beta)
    v2, g2, (b2,) = value_and_grads(ref, x, y, ref.beta)
    assert_close_rel(v1, v2, "value")
    assert_close_rel(g1, g2, "grad")
    assert_close_rel(b1, b2, "beta grad")
    assert ours.proxy_parameters() == [ours.beta]


@pytest.mark.parametrize(
    "name,miner",
    [
        ("margin", lambda: L.DistanceWeightedMiner(generator=torch.Generator().manual_seed(0))),
        ("margin", lambda: pml_miners.MultiSimilarityMiner()),  # pairs, joined into triplets
        ("margin", lambda: pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")),
        ("circle", lambda: pml_miners.MultiSimilarityMiner()),
        ("circle", lambda: L.BatchHardMiner()),
    ],
)
def test_pair_loss_with_mined_indices_matches_pml(name, miner):
    ours_cls, pml_cls = PAIR_CASES[name]
    x, y = make_batch(48, "m_per_class", seed=11)
    indices = miner()(x, y)
    assert len(indices[0]) > 1
    kwargs = {"learn_beta": True, "num_classes": 12, "nu": 0.05} if name == "margin" else {}
    ours, ref = ours_cls(**kwargs), pml_cls(**kwargs)
    params = (ours.beta,) if name == "margin" else ()
    ref_params = (ref.beta,) if name == "margin" else ()
    v1, g1, b1 = value_and_grads(ours, x, y, *params, indices_tuple=indices)
    v2, g2, b2 = value_and_grads(ref, x, y, *ref_params, indices_tuple=indices)
    assert_close_rel(v1, v2, f"{name} value")
    assert_close_rel(g1, g2, f"{name} grad")
    for a, b in zip(b1, b2, strict=True):
        assert_close_rel(a, b, "beta grad")


def test_circle_single_mined_pairs_give_zero_like_pml():
    x, y = make_batch(6, "m_per_class")
    indices = (torch.tensor([0]), torch.tensor([1]), torch.tensor([0]), torch.tensor([5]))
    assert float(L.CircleLoss()(x, y, indices_tuple=indices)) == 0.0
    assert float(pml_losses.CircleLoss()(x, y, indices_tuple=indices)) == 0.0


def test_margin_with_distance_weighted_miner_and_sampled_triplets():
    x, y = make_batch(32, "m_per_class", seed=3)
    miner = L.DistanceWeightedMiner(generator=torch.Generator().manual_seed(4))
    loss = L.MarginLoss(miner=miner, learn_beta=True, num_classes=8)
    expected = L.MarginLoss(learn_beta=True, num_classes=8)(
        x,
        y,
        indices_tuple=L.DistanceWeightedMiner(generator=torch.Generator().manual_seed(4))(x, y),
    )
    assert float(loss(x, y)) == pytest.approx(float(expected), rel=1e-6)
    torch.manual_seed(0)
    sampled = L.MarginLoss(triplets_per_anchor=5, learn_beta=True)
    _, grad, (beta_grad,) = value_and_grads(sampled, x, y, sampled.beta)
    assert torch.isfinite(grad).all() and beta_grad is not None


# ---- ProxyNCA++ ----------------------------------------------------------------------------------


def proxy_nca_pp_loop(x, y, proxies, temperature):
    z = torch.nn.functional.normalize(x, dim=1)
    p = torch.nn.functional.normalize(proxies, dim=1)
    terms = []
    for i in range(len(y)):
        logits = [-float(((z[i] - p[c]) ** 2).sum()) / temperature for c in range(len(p))]
        numerator = math.exp(logits[int(y[i])])
        terms.append(-math.log(numerator / sum(math.exp(v) for v in logits)))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("temperature", [1.0 / 9.0, 0.5, 1.0])
@pytest.mark.parametrize("layout,batch", [("m_per_class", 16), ("singletons", 9), ("one_class", 4)])
def test_proxy_nca_pp_matches_the_paper_formula(temperature, layout, batch):
    x, y = make_batch(batch, layout, dim=10)
    num_classes = int(y.max()) + 2
    loss = L.ProxyNCAPlusPlusLoss(num_classes, 10, temperature=temperature)
    expected = proxy_nca_pp_loop(x.double(), y, loss.proxies.detach().double(), temperature)
    assert float(loss(x, y)) == pytest.approx(expected, rel=1e-5)
    # the same objective is PML's ProxyNCALoss at softmax_scale = 1 / T (gradients included)
    ref = pml_losses.ProxyNCALoss(num_classes, 10, softmax_scale=1.0 / temperature)
    with torch.no_grad():
        ref.proxies.copy_(loss.proxies)
    v1, g1, (p1,) = value_and_grads(loss, x, y, loss.proxies)
    v2, g2, (p2,) = value_and_grads(ref, x, y, ref.proxies)
    assert_close_rel(v1, v2, "value")
    assert_close_rel(g1, g2, "grad")
    assert_close_rel(p1, p2, "proxy grad")


def test_proxy_nca_pp_defaults():
    torch.manual_seed(0)
    loss = L.ProxyNCAPlusPlusLoss(num_classes=300, embedding_size=64)
    assert loss.temperature == pytest.approx(1 / 9) and loss.softmax_scale == pytest.approx(9.0)
    assert abs(float(loss.proxies.detach().std()) - 1 / 8) < 0.005  # N(0, 1) / 8
    assert loss.proxy_parameters() == [loss.proxies]


# ---- config, validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry,cls",
    [
        ("margin", L.MarginLoss),
        ({"name": "margin", "learn_beta": True, "num_classes": "auto"}, L.MarginLoss),
        ({"name": "margin", "miner": "distance_weighted"}, L.MarginLoss),
        ("circle", L.CircleLoss),
        ("arcface", L.ArcFaceLoss),
        ("cosface", L.CosFaceLoss),
        ("normalized_softmax", L.NormalizedSoftmaxLoss),
        ({"name": "soft_triple", "centers_per_class": 2}, L.SoftTripleLoss),
        ({"name": "proxy_nca_pp", "temperature": 0.2}, L.ProxyNCAPlusPlusLoss),
    ],
)
def test_new_bases_build_from_config(entry, cls):
    loss = L.build_loss({"base": entry}, num_classes=8, embedding_size=6)
    assert type(loss.base) is cls
    x, y = make_batch(16, "m_per_class", dim=6)
    value = loss(x.requires_grad_(True), y)
    value.backward()
    assert torch.isfinite(value) and x.grad is not None
    if isinstance(entry, dict) and entry.get("num_classes") == "auto":
        assert loss.base.beta.shape == (8,) and loss.proxy_parameters() == [loss.base.beta]


def test_inputs_are_checked_and_half_precision_runs_in_fp32():
    loss = L.ArcFaceLoss(num_classes=4, embedding_size=6)
    with pytest.raises(LangDMLError, match="label 4 >= num_classes=4"):
        loss(torch.randn(3, 6), torch.tensor([0, 1, 4]))
    with pytest.raises(LangDMLError, match="label 5 >= num_classes=3"):
        L.MarginLoss(num_classes=3)(torch.randn(4, 6), torch.tensor([0, 0, 5, 5]))
    x, y = make_batch(8, "m_per_class", dim=6)
    for fn in (loss, L.CircleLoss(), L.MarginLoss()):
        half = fn(x.half(), y % 4)
        assert half.dtype == torch.float32 and torch.isfinite(half)


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda: L.MarginLoss(margin=-0.1), "margin and nu must be >= 0"),
        (lambda: L.MarginLoss(triplets_per_anchor=0), "triplets_per_anchor"),
        (lambda: L.MarginLoss(beta=float("nan")), "beta must be a finite"),
        (lambda: L.MarginLoss(num_classes=0), "num_classes"),
        (lambda: L.CircleLoss(gamma=0), "gamma must be"),
        (lambda: L.ArcFaceLoss(4, 6, margin=180), "margin must be in"),
        (lambda: L.ArcFaceLoss(4, 6, scale=-1), "scale must be"),
        (lambda: L.CosFaceLoss(4, 6, margin=float("inf")), "margin must be a finite"),
        (lambda: L.NormalizedSoftmaxLoss(4, 6, temperature=0), "temperature must be"),
        (lambda: L.SoftTripleLoss(4, 6, centers_per_class=0), "proxies_per_class"),
        (lambda: L.SoftTripleLoss(4, 6, gamma=0), "gamma must be"),
        (lambda: L.SoftTripleLoss(4, 6, tau=-1), "tau must be"),
        (lambda: L.ProxyNCAPlusPlusLoss(4, 6, temperature=0), "temperature must be"),
        (lambda: L.ArcFaceLoss(0, 6), "num_classes must be"),
    ],
)
def test_bad_values_raise_one_line_errors(make, needle):
    with pytest.raises(LangDMLError, match=needle) as info:
        make()
    assert "\n" not in str(info.value)


def test_margin_auto_classes_need_the_builder():
    with pytest.raises(ConfigError, match="num_classes='auto' needs"):
        L.build_loss({"base": {"name": "margin", "num_classes": "auto"}})


# ---- pml: adapter with nested objects -----------------------------------------------------------


def test_pml_adapter_builds_nested_miner_and_distance():
    distances = pytest.importorskip("pytorch_metric_learning.distances")
    cfg = {
        "base": {
            "name": "pml:TripletMarginLoss",
            "margin": 0.5,
            "miner": {"name": "pml:MultiSimilarityMiner", "epsilon": 0.1},
            "distance": {"name": "pml:CosineSimilarity"},
        }
    }
    loss = L.build_loss(cfg)
    adapter = loss.base
    assert isinstance(adapter.miner, pml_miners.MultiSimilarityMiner)
    assert adapter.miner.epsilon == 0.1
    assert isinstance(adapter.loss.distance, distances.CosineSimilarity)
    x, y = make_batch(32, "m_per_class", seed=2)
    ref = pml_losses.TripletMarginLoss(margin=0.5, distance=distances.CosineSimilarity())
    indices = pml_miners.MultiSimilarityMiner(epsilon=0.1)(x, y)
    v1, g1, _ = value_and_grads(loss, x, y)
    v2, g2, _ = value_and_grads(ref, x, y, indices_tuple=indices)
    assert_close_rel(v1, v2, "value")
    assert_close_rel(g1, g2, "grad")
    unmined = pml_losses.TripletMarginLoss(margin=0.5, distance=distances.CosineSimilarity())
    assert abs(float(unmined(x, y)) - float(v1)) > 1e-4  # the miner is really used


def test_pml_adapter_nested_reducer_nested_distance_in_miner_and_our_miner():
    reducers = pytest.importorskip("pytorch_metric_learning.reducers")
    cfg = {
        "base": {
            "name": "pml:ContrastiveLoss",
            "reducer": "pml:MeanReducer",
            "miner": {
                "name": "pml:TripletMarginMiner",
                "distance": {"name": "pml:LpDistance", "power": 2},
            },
        }
    }
    adapter = L.build_loss(cfg).base
    # PML copies the reducer once per sub-loss (pos_loss, neg_loss)
    assert isinstance(adapter.loss.reducer.reducers["pos_loss"], reducers.MeanReducer)
    assert adapter.miner.distance.power == 2
    ours_miner = L.build_loss({"base": {"name": "pml:TripletMarginLoss", "miner": "semihard"}}).base
    assert isinstance(ours_miner.miner, L.SemiHardMiner)
    x, y = make_batch(16, "m_per_class")
    assert torch.isfinite(ours_miner(x, y))


@pytest.mark.parametrize(
    "base,needle",
    [
        ({"name": "pml:ContrastiveLoss", "distance": "pml:NoSuchDistance"}, "no such distance"),
        ({"name": "pml:ContrastiveLoss", "miner": {"name": "pml:BatchHardMiner", "x": 1}}, "bad"),
        ({"name": "pml:ContrastiveLoss", "miner": {"name": "pml:CosineSimilarity"}}, "no such"),
    ],
)
def test_pml_adapter_nested_errors(base, needle):
    with pytest.raises(ConfigError, match=needle) as info:
        L.build_loss({"base": base})
    assert "\n" not in str(info.value)
