"""Integrated direction regularisation (DR-Triplet, DR-ProxyNCA, DR-MS): loop references written
from the formulas with explicit vectors, γ = 0 against the base losses, a hand-derived 2-D
gradient, and build_loss routing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from langdml import losses as L
from langdml.errors import ConfigError

SEEDS = [0, 1, 2]
LABELS = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4, 1])  # classes 2 and 4 are singletons
D = 5


def _data(seed, classes=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(LABELS), D, generator=g), torch.randn(classes, D, generator=g)


def _cos(a, p, n):
    """cos∠(n - a, p - a) from the vectors themselves; 0 where an edge is shorter than 1e-3."""
    u, v = n - a, p - a
    if float((u @ u).detach()) < 1e-6 or float((v @ v).detach()) < 1e-6:
        return torch.zeros((), dtype=a.dtype)
    return (u @ v) / (u.norm() * v.norm())


def _pair_sets(y, indices_tuple):
    """Per-anchor positive and negative index lists, as the base losses read labels / miners."""
    b = len(y)
    if indices_tuple is None:
        pos = {(i, j) for i in range(b) for j in range(b) if i != j and y[i] == y[j]}
        neg = {(i, j) for i in range(b) for j in range(b) if y[i] != y[j]}
    else:
        t = [x.tolist() for x in indices_tuple]
        a1, p, a2, n = (t[0], t[1], t[0], t[2]) if len(t) == 3 else t
        pos, neg = set(zip(a1, p, strict=True)), set(zip(a2, n, strict=True))
    return (
        [sorted(j for i2, j in pos if i2 == i) for i in range(b)],
        [sorted(j for i2, j in neg if i2 == i) for i in range(b)],
    )


def dr_triplet_reference(x, y, margin, gamma, indices_tuple=None):
    z = F.normalize(x, dim=1)
    if indices_tuple is not None and len(indices_tuple) == 3:
        triplets = list(zip(*(t.tolist() for t in indices_tuple), strict=True))
    else:
        pos, neg = _pair_sets(y, indices_tuple)
        triplets = [(a, p, n) for a in range(len(y)) for p in pos[a] for n in neg[a]]
    active = []
    for a, p, n in triplets:
        d_ap, d_an = (z[a] - z[p]).norm(), (z[a] - z[n]).norm()
        term = torch.relu(d_ap - d_an + margin - gamma * _cos(z[a], z[p], z[n]))
        if float(term.detach()) > 0:
            active.append(term)
    return torch.stack(active).mean() if active else (x * 0).sum()


def dr_proxy_nca_reference(x, y, proxies, scale, variant, gamma, indices_tuple=None):
    z, proxy = F.normalize(x, dim=1), F.normalize(proxies, dim=1)
    weight = [1.0] * len(y)
    if indices_tuple is not None:  # ProxyNCALoss's reading: times i is an anchor / the most
        anchors = indices_tuple[0].tolist()
        anchors += indices_tuple[2].tolist() if len(indices_tuple) == 4 else []
        weight = [anchors.count(i) / max(anchors.count(j) for j in anchors) for i in range(len(y))]
    total = 0.0
    for i in range(len(y)):
        yi = int(y[i])
        dist = [scale * ((z[i] - proxy[c]) ** 2).sum() for c in range(len(proxy))]
        exponents = []
        for c in range(len(proxy)):
            if c != yi:
                exponents.append(-(dist[c] + gamma * _cos(z[i], proxy[yi], proxy[c])))
            elif variant == "pml":
                exponents.append(-dist[c])
        total = total - weight[i] * (-dist[yi] - torch.logsumexp(torch.stack(exponents), dim=0))
    return total / len(y)


def dr_ms_reference(x, y, alpha, beta, lam, gamma, indices_tuple=None):
    z = F.normalize(x, dim=1)
    pos, neg = _pair_sets(y, indices_tuple)
    total = 0.0
    for i in range(len(y)):
        pos_sum = sum(torch.exp(-alpha * (z[i] @ z[k] - lam)) for k in pos[i])
        hard = min(pos[i], key=lambda k: float((z[i] @ z[k]).detach())) if pos[i] else None
        neg_sum = 0.0
        for n in neg[i]:
            cos = _cos(z[i], z[hard], z[n]) if hard is not None else 0.0
            neg_sum = neg_sum + torch.exp(beta * (z[i] @ z[n] - lam - gamma * cos))
        total = total + torch.log(1 + pos_sum + 0 * z[i, 0]) / alpha
        total = total + torch.log(1 + neg_sum + 0 * z[i, 0]) / beta
    return total / len(y)


def _miner(name):
    return {
        None: None,
        "ms": L.MultiSimilarityMiner(epsilon=0.1),
        "batch_hard": L.BatchHardMiner(),
        "semihard": L.SemiHardMiner(margin=0.3),
    }[name]


def _compare(loss, reference, x, extra=(), rtol=1e-4):
    """Value and gradients (x and the tensors in extra, e.g. proxies) of loss(x) vs reference.
    The reference runs in float64 from the same numbers."""
    x32 = x.clone().requires_grad_(True)
    value = loss(x32)
    value.backward()
    x64 = x.double().requires_grad_(True)
    ext64 = [e.detach().double().requires_grad_(True) for e in extra]
    ref = reference(x64, *ext64)
    ref.backward()
    assert float(ref.detach()) != 0.0
    torch.testing.assert_close(value.double(), ref.detach(), rtol=rtol, atol=1e-6)
    torch.testing.assert_close(x32.grad.double(), x64.grad, rtol=1e-3, atol=1e-6)
    for e32, e64 in zip(extra, ext64, strict=True):
        torch.testing.assert_close(e32.grad.double(), e64.grad, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("miner", [None, "ms", "batch_hard", "semihard"])
def test_dr_triplet_matches_loop_reference(seed, miner):
    x, _ = _data(seed)
    loss = L.DRTripletLoss(margin=0.3, gamma=0.5)
    tup = None if miner is None else _miner(miner)(x, LABELS)
    _compare(
        lambda v: loss(v, LABELS, tup),
        lambda v: dr_triplet_reference(v, LABELS, 0.3, 0.5, tup),
        x,
    )
    # a miner given at construction picks the same tuple
    if miner is not None:
        built = L.DRTripletLoss(margin=0.3, gamma=0.5, miner=_miner(miner))
        torch.testing.assert_close(built(x, LABELS), loss(x, LABELS, tup))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("variant", ["pml", "paper"])
@pytest.mark.parametrize("miner", [None, "ms", "batch_hard"])
def test_dr_proxy_nca_matches_loop_reference(seed, variant, miner):
    x, proxies = _data(seed)
    loss = L.DRProxyNCALoss(5, D, softmax_scale=3.0, variant=variant, gamma=0.5)
    with torch.no_grad():
        loss.proxies.copy_(proxies)
    tup = None if miner is None else _miner(miner)(x, LABELS)
    _compare(
        lambda v: loss(v, LABELS, tup),
        lambda v, p: dr_proxy_nca_reference(v, LABELS, p, 3.0, variant, 0.5, tup),
        x,
        extra=[loss.proxies],
    )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("miner", [None, "ms", "batch_hard"])
@pytest.mark.parametrize("alpha,beta,lam,gamma", [(2.0, 10.0, 0.2, 0.5), (2.0, 50.0, 0.7, 0.3)])
def test_dr_ms_matches_loop_reference(seed, miner, alpha, beta, lam, gamma):
    x, _ = _data(seed)
    loss = L.DRMultiSimilarityLoss(alpha=alpha, beta=beta, base=lam, gamma=gamma)
    tup = None if miner is None else _miner(miner)(x, LABELS)
    _compare(
        lambda v: loss(v, LABELS, tup),
        lambda v: dr_ms_reference(v, LABELS, alpha, beta, lam, gamma, tup),
        x,
    )
    if miner is not None:
        built = L.DRMultiSimilarityLoss(alpha, beta, lam, gamma, miner=_miner(miner))
        torch.testing.assert_close(built(x, LABELS), loss(x, LABELS, tup))


def _value_and_grads(loss, x, *params):
    x = x.clone().requires_grad_(True)
    value = loss(x)
    grads = torch.autograd.grad(value, [x, *params])
    return value.detach(), grads


def _assert_same(loss_a, loss_b, x, params_a=(), params_b=()):
    va, ga = _value_and_grads(loss_a, x, *params_a)
    vb, gb = _value_and_grads(loss_b, x, *params_b)
    torch.testing.assert_close(va, vb, rtol=1e-6, atol=1e-7)
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("miner", [None, "ms", "batch_hard"])
def test_gamma_zero_equals_triplet_and_ms(seed, miner):
    x, _ = _data(seed)
    x = x.repeat(3, 1) + 0.1 * torch.randn(
        3 * len(x), D, generator=torch.Generator().manual_seed(9)
    )
    y = LABELS.repeat(3)
    pairs = [
        (L.TripletLoss(margin=0.2, miner=_miner(miner)), L.DRTripletLoss(margin=0.2, gamma=0.0)),
        (L.TripletLoss(miner=_miner(miner)), L.DRTripletLoss()),  # default margins agree
        (L.MultiSimilarityLoss(miner=_miner(miner)), L.DRMultiSimilarityLoss()),
    ]
    for base, dr in pairs:
        dr.miner = _miner(miner)
        _assert_same(lambda v, b=base: b(v, y), lambda v, d=dr: d(v, y), x)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("variant", ["pml", "paper"])
@pytest.mark.parametrize("miner", [None, "ms"])
def test_gamma_zero_equals_proxy_nca(seed, variant, miner):
    x, proxies = _data(seed)
    base = L.ProxyNCALoss(5, D, softmax_scale=2.0, variant=variant)
    dr = L.DRProxyNCALoss(5, D, softmax_scale=2.0, variant=variant, gamma=0.0)
    with torch.no_grad():
        base.proxies.copy_(proxies)
        dr.proxies.copy_(proxies)
    tup = None if miner is None else _miner(miner)(x, LABELS)
    _assert_same(
        lambda v: base(v, LABELS, tup),
        lambda v: dr(v, LABELS, tup),
        x,
        [base.proxies],
        [dr.proxies],
    )


def test_dr_triplet_gradient_on_negative_matches_hand_derivation_2d():
    """One explicit triplet of unit vectors in 2-D. For f(n) = ‖a - p‖ - ‖n - a‖ + m - γ cos θ,
    u = n - a, v = p - a: ∂‖u‖/∂n = û and ∂cos θ/∂n = (v̂ - cos θ û) / ‖u‖, so
    ∇f = -û - γ (v̂ - cos θ û) / ‖u‖. The loss normalises n; at ‖n‖ = 1 its gradient is ∇f
    projected on the circle's tangent, (I - n nᵀ) ∇f."""
    margin, gamma = 1.5, 0.5
    deg = (0.0, 60.0, 150.0)
    (ax, ay), (px, py), (nx, ny) = (
        (math.cos(math.radians(t)), math.sin(math.radians(t))) for t in deg
    )
    ux, uy, vx, vy = nx - ax, ny - ay, px - ax, py - ay
    nu, nv = math.hypot(ux, uy), math.hypot(vx, vy)
    cos = (ux * vx + uy * vy) / (nu * nv)
    assert math.hypot(ax - px, ay - py) - nu + margin - gamma * cos > 0  # the hinge is active
    gx = -ux / nu - gamma * (vx / nv - cos * ux / nu) / nu
    gy = -uy / nu - gamma * (vy / nv - cos * uy / nu) / nu
    radial = gx * nx + gy * ny
    expected = torch.tensor([gx - radial * nx, gy - radial * ny])

    x = torch.tensor([[ax, ay], [px, py], [nx, ny]], requires_grad=True)
    loss = L.DRTripletLoss(margin=margin, gamma=gamma)
    one = (torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
    loss(x, torch.tensor([0, 0, 1]), one).backward()
    torch.testing.assert_close(x.grad[2], expected, rtol=1e-5, atol=1e-6)
    # descending the γ term alone turns n toward the a→p direction (the reproductions' sign)
    hx, hy = -gamma * (vx / nv - cos * ux / nu) / nu, -gamma * (vy / nv - cos * uy / nu) / nu
    moved = F.normalize(torch.tensor([nx - 0.01 * hx, ny - 0.01 * hy]), dim=0)
    a, p = torch.tensor([ax, ay]), torch.tensor([px, py])
    assert float(F.cosine_similarity(moved - a, p - a, dim=0)) > cos


def test_undefined_angles_contribute_no_cos_term():
    """A positive that coincides with its anchor: ‖p - a‖ = 0, so cos θ is 0 and γ has no
    effect on those triplets."""
    x = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    y = torch.tensor([0, 0, 1, 2])
    values = [float(L.DRTripletLoss(margin=1.5, gamma=g)(x, y)) for g in (0.0, 0.7)]
    assert values[0] == pytest.approx(values[1], abs=1e-7)
    grad_x = x.clone().requires_grad_(True)
    L.DRMultiSimilarityLoss(gamma=0.7)(grad_x, y).backward()
    assert bool(torch.isfinite(grad_x.grad).all())


# ---- build_loss routing ----------------------------------------------------------------------


def _direction(base, weight=0.3, **extra):
    return {"base": base, "regularizers": [{"name": "direction", "weight": weight, **extra}]}


@pytest.mark.parametrize(
    "base,cls,attrs",
    [
        ({"name": "triplet", "margin": 0.28}, L.DRTripletLoss, {"margin": 0.28}),
        (
            {"name": "multi_similarity", "base": 0.7, "miner": {"name": "multi_similarity"}},
            L.DRMultiSimilarityLoss,
            {"base": 0.7},
        ),
        ({"name": "proxy_nca", "variant": "paper"}, L.DRProxyNCALoss, {"variant": "paper"}),
        ("triplet", L.DRTripletLoss, {"margin": 0.05}),
    ],
)
def test_build_loss_selects_integrated_forms(base, cls, attrs):
    cfg = _direction(base, weight=0.3, form="integrated")
    torch.manual_seed(4)
    loss = L.build_loss(cfg, num_classes=5, embedding_size=D)
    assert type(loss.base) is cls and loss.base.gamma == pytest.approx(0.3)
    for key, value in attrs.items():
        assert getattr(loss.base, key) == value
    if isinstance(base, dict) and "miner" in base:
        assert isinstance(loss.base.miner, L.MultiSimilarityMiner)
    x, _ = _data(5)
    total = loss(x, LABELS)
    # no separate additive term: the total is the DR loss itself
    assert float(total.detach()) == pytest.approx(float(loss.base(x, LABELS).detach()), rel=1e-6)
    terms = loss.last_terms
    assert set(terms) == {"base", "direction", "total"}
    assert terms["total"] == pytest.approx(terms["base"], rel=1e-6)
    assert -1.0 <= terms["direction"] <= 1.0
    if cls is L.DRProxyNCALoss:  # same proxies as building the plain base under the same seed
        torch.manual_seed(4)
        plain = L.build_loss({"base": base}, num_classes=5, embedding_size=D)
        torch.testing.assert_close(loss.base.proxies, plain.base.proxies)
        assert loss.proxy_parameters() == [loss.base.proxies]
        assert len(list(loss.parameters())) == 1


def test_integrated_is_the_default_form():
    loss = L.build_loss(_direction("multi_similarity", weight=0.0))
    assert type(loss.base) is L.DRMultiSimilarityLoss
    x, _ = _data(6)
    expected = L.MultiSimilarityLoss()(x, LABELS)
    torch.testing.assert_close(loss(x, LABELS), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("base", ["proxy_anchor", "contrastive", "npair", "proxy_gml"])
def test_integrated_form_rejects_other_bases(base):
    with pytest.raises(ConfigError, match="exists only for bases") as info:
        L.build_loss(_direction(base), num_classes=5, embedding_size=D)
    assert all(n in str(info.value) for n in ("triplet", "proxy_nca", "multi_similarity"))
    assert "form 'orthogonal'" in str(info.value) and "\n" not in str(info.value)
    # the orthogonal penalty is the additive alternative for any base
    loss = L.build_loss(_direction(base, form="orthogonal"), num_classes=5, embedding_size=D)
    assert isinstance(loss.regularizers[0], L.DirectionRegularizer)


@pytest.mark.parametrize(
    "cfg,needle",
    [
        (_direction("triplet", form="reproduction"), "not the reproductions' form.*'integrated'"),
        (_direction("triplet", form="integrated", mode="pairs"), "takes only 'weight'"),
        (
            {"base": "triplet", "regularizers": ["direction", "direction"]},
            "given twice",
        ),
    ],
)
def test_bad_direction_configs(cfg, needle):
    with pytest.raises(ConfigError, match=needle) as info:
        L.build_loss(cfg)
    assert "\n" not in str(info.value)
