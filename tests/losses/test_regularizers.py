"""Language guidance and direction regularisation: loop references, toy geometry, sign checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from langdml import losses as L

# ---- language guidance -----------------------------------------------------------------------


def language_reference(x, y, text, temperature, shift, direction):
    """docs/references.md "Language guidance", one row at a time."""
    z = F.normalize(x, dim=1)
    e = F.normalize(text if text.ndim == 3 else text[:, None, :], dim=-1)
    top = torch.tensor(1.0 + shift)
    total = 0.0
    for i in range(len(y)):
        s_img, s_lang = [], []
        for j in range(len(y)):
            if y[i] == y[j]:
                s_img.append(top)
                s_lang.append(top)
            else:
                s_img.append(z[i] @ z[j])
                cos = [e[y[i], t] @ e[y[j], t] for t in range(e.shape[1])]
                s_lang.append(torch.stack(cos).mean() + shift)
        p_img = torch.softmax(torch.stack(s_img) / temperature, 0)
        p_lang = torch.softmax(torch.stack(s_lang) / temperature, 0).detach()
        if direction == "backward":
            total = total + (p_img * (p_img.log() - p_lang.log())).sum()
        else:
            total = total + (p_lang * (p_lang.log() - p_img.log())).sum()
    return total * temperature**2 / len(y)


@pytest.mark.parametrize("direction", ["backward", "forward"])
@pytest.mark.parametrize("k", [None, 3])
@pytest.mark.parametrize("temperature,shift", [(1.0, 1.0), (0.3, 0.5)])
def test_language_guidance_matches_loop_reference(direction, k, temperature, shift):
    g = torch.Generator().manual_seed(0)
    c = 5
    text = torch.randn(c, 6, generator=g) if k is None else torch.randn(c, k, 6, generator=g)
    x = torch.randn(12, 4, generator=g)
    y = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 1, 0, 3, 3])
    loss = L.LanguageGuidanceLoss(text, temperature=temperature, shift=shift, direction=direction)
    x1 = x.clone().requires_grad_(True)
    value = loss(x1, y)
    value.backward()
    x2 = x.clone().requires_grad_(True)
    ref = language_reference(x2, y, text, temperature, shift, direction)
    ref.backward()
    torch.testing.assert_close(value, ref, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-7)
    assert float(value.detach()) > 0


def test_language_guidance_is_zero_when_image_matches_language():
    """Images laid out exactly like the text embeddings (and T = 1): KL = 0."""
    text = F.normalize(torch.randn(4, 6), dim=1)
    y = torch.tensor([0, 1, 2, 3])
    value = L.LanguageGuidanceLoss(text, shift=0.0)(text.clone(), y)
    assert float(value) == pytest.approx(0.0, abs=1e-6)


def test_language_guidance_proxy_mode_uses_proxies():
    g = torch.Generator().manual_seed(1)
    text = torch.randn(4, 6, generator=g)
    proxies = torch.randn(8, 5, generator=g, requires_grad=True)
    proxy_labels = torch.arange(4).repeat_interleave(2)
    loss = L.LanguageGuidanceLoss(text, mode="proxy")
    batch = torch.randn(3, 5)
    value = loss(batch, torch.tensor([0, 1, 2]), proxies=proxies, proxy_labels=proxy_labels)
    value.backward()
    ref_p = proxies.detach().clone().requires_grad_(True)
    ref = language_reference(ref_p, proxy_labels, text, 1.0, 1.0, "backward")
    ref.backward()
    torch.testing.assert_close(value, ref, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(proxies.grad, ref_p.grad, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="mode='proxy' needs"):
        loss(batch, torch.tensor([0, 1, 2]))


def _train_toy(weight, steps=120):
    """2-D embeddings of 3 classes, 2 samples each, starting 120 degrees apart (symmetric)."""
    torch.manual_seed(0)
    # names: 0 "cat", 1 "kitten" (similar), 2 "truck" (dissimilar to both)
    text = torch.tensor([[1.0, 0.0, 0.0], [0.95, 0.31, 0.0], [0.0, 0.1, 1.0]])
    angles = torch.tensor([0.0, 0.05, 2.09, 2.14, 4.19, 4.24])
    points = torch.nn.Parameter(torch.stack([angles.cos(), angles.sin()], dim=1))
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    base = L.MultiSimilarityLoss()
    lang = L.LanguageGuidanceLoss(text)
    opt = torch.optim.Adam([points], lr=0.04)
    for _ in range(steps):
        loss = base(points, y) + weight * lang(points, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    z = F.normalize(points.detach(), dim=1)
    means = F.normalize(torch.stack([z[y == c].mean(0) for c in range(3)]), dim=1)
    angle = lambda i, j: math.degrees(math.acos(float((means[i] @ means[j]).clamp(-1, 1))))  # noqa: E731
    return angle(0, 1), angle(0, 2), angle(1, 2)


def test_language_guidance_pulls_similar_names_together_2d():
    ab, ac, bc = _train_toy(weight=5.0)
    assert ab < ac - 15 and ab < bc - 15, (ab, ac, bc)
    # control: without language guidance the layout stays symmetric
    ab0, ac0, bc0 = _train_toy(weight=0.0)
    assert abs(ab0 - ac0) < 5 and abs(ab0 - bc0) < 5, (ab0, ac0, bc0)


# ---- direction regularisation, form "orthogonal" (our additive penalty) ----------------------
# The integrated forms (DR-Triplet, DR-ProxyNCA, DR-MS) are tested in test_direction_integrated.py.


def _orthogonal_term(a, p, n):
    """((n - c)·(p - a))² / ‖n - c‖² from explicit vectors; None where n - c is undefined."""
    c = (a + p) / 2
    w, v = n - c, p - a
    if float((w @ w).detach()) < 1e-6:
        return None
    return (w @ v) ** 2 / (w @ w)


def direction_reference(x, y, positives, proxies=None, proxy_labels=None):
    """Explicit vectors a, p, n, c for every triplet (no similarity identities)."""
    z = F.normalize(x, dim=1)
    if proxies is None:
        refs, ref_labels = z, y
    else:
        refs, ref_labels = F.normalize(proxies, dim=1), proxy_labels
    terms = []
    for a in range(len(y)):
        pos = [
            j
            for j in range(len(ref_labels))
            if ref_labels[j] == y[a] and (proxies is not None or j != a)
        ]
        neg = [j for j in range(len(ref_labels)) if ref_labels[j] != y[a]]
        if not pos:
            continue
        if positives == "hardest":
            pos = [min(pos, key=lambda j: float((z[a] @ refs[j]).detach()))]
        for p in pos:
            for n in neg:
                t = _orthogonal_term(z[a], refs[p], refs[n])
                if t is not None:
                    terms.append(t)
    return torch.stack(terms).mean() if terms else torch.tensor(0.0)


@pytest.mark.parametrize("positives", ["hardest", "all"])
def test_direction_pairs_matches_loop_reference(positives):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(11, 5, generator=g)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4])  # class 2 and 4 are singletons
    reg = L.DirectionRegularizer(form="orthogonal", mode="pairs", positives=positives)
    x1 = x.clone().requires_grad_(True)
    value = reg(x1, y)
    value.backward()
    x2 = x.clone().requires_grad_(True)
    ref = direction_reference(x2, y, positives)
    ref.backward()
    torch.testing.assert_close(value, ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("positives,per_class", [("hardest", 1), ("hardest", 3), ("all", 3)])
def test_direction_proxies_matches_loop_reference(positives, per_class):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 5, generator=g)
    y = torch.tensor([0, 1, 1, 2, 3, 3, 0])
    proxies = torch.randn(4 * per_class, 5, generator=g)
    proxy_labels = torch.arange(4).repeat_interleave(per_class)
    reg = L.DirectionRegularizer(form="orthogonal", positives=positives)  # auto -> proxies
    x1 = x.clone().requires_grad_(True)
    p1 = proxies.clone().requires_grad_(True)
    value = reg(x1, y, proxies=p1, proxy_labels=proxy_labels)
    value.backward()
    x2 = x.clone().requires_grad_(True)
    p2 = proxies.clone().requires_grad_(True)
    ref = direction_reference(x2, y, positives, p2, proxy_labels)
    ref.backward()
    torch.testing.assert_close(value, ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-3, atol=1e-6)


def test_direction_rejects_removed_and_integrated_forms():
    with pytest.raises(ValueError, match="not the reproductions' form.*'integrated'.*'orthogonal'"):
        L.DirectionRegularizer(form="reproduction")
    with pytest.raises(ValueError, match="not an additive term"):
        L.DirectionRegularizer(form="integrated")


def _unit2(deg):
    r = math.radians(deg)
    return torch.tensor([math.cos(r), math.sin(r)])


def _single_triplet_update(a, p, n):
    """Descent direction on the negative n for one triplet (sample a, proxies p and n)."""
    n_param = n.clone().requires_grad_(True)
    reg = L.DirectionRegularizer(form="orthogonal", mode="proxies", positives="hardest")
    proxies = torch.stack([p, n_param])
    value = reg(a[None], torch.tensor([0]), proxies=proxies, proxy_labels=torch.tensor([0, 1]))
    value.backward()
    return -n_param.grad


def test_direction_orthogonal_sign_in_2d():
    """The orthogonality penalty moves the negative toward the bisector of a and p."""
    a, p, n = _unit2(0), _unit2(60), _unit2(150)
    c = (a + p) / 2
    step = _single_triplet_update(a, p, n)
    moved = F.normalize(n + 0.05 * step / step.norm(), dim=0)
    before = abs(float(F.cosine_similarity(n - c, p - a, dim=0)))
    after = abs(float(F.cosine_similarity(moved - c, p - a, dim=0)))
    assert after < before
    # on the circle the bisector point is at 210 degrees: n turns that way
    assert float((moved - _unit2(210)).norm()) < float((n - _unit2(210)).norm())


def _orthogonal_grad_norm(gap, scale_free):
    """‖∂R/∂x‖ for a, p with ‖p - a‖ ≈ gap and a fixed negative; scale_free=True is the old
    cos²∠(n - c, p - a) (explicit vectors, float64), else DirectionRegularizer."""
    x = torch.tensor(
        [[1.0, 0.0, 0.0], [1.0, gap, 0.0], [0.2, -0.5, 0.8]], dtype=torch.float64
    ).requires_grad_(True)
    if scale_free:
        a, p, n = F.normalize(x, dim=1)
        w, v = n - (a + p) / 2, p - a
        value = (w @ v) ** 2 / ((w @ w) * (v @ v))
    else:
        reg = L.DirectionRegularizer(form="orthogonal", mode="pairs", positives="all")
        value = reg(x, torch.tensor([0, 0, 1]))
    value.backward()
    return float(x.grad.norm())


def test_direction_orthogonal_gradient_stays_bounded_as_pair_tightens():
    gaps = [1e-1, 1e-2, 1e-3, 1e-4]
    norms = [_orthogonal_grad_norm(gap, scale_free=False) for gap in gaps]
    assert all(math.isfinite(g) for g in norms)
    for before, after in zip(norms, norms[1:]):
        assert after <= before * 1.01 + 1e-6, norms
    # the scale-free ratio it replaces blows up like 1/‖p - a‖ (so this test can tell them apart)
    old = [_orthogonal_grad_norm(gap, scale_free=True) for gap in gaps]
    assert old[2] > 50 * old[0], old


def _push_negative(weight, steps=100):
    """Anchor and positive fixed on the unit sphere, the negative pushed by an all-triplets loss
    (anchors a and p) plus weight × orthogonal direction regularizer."""
    a = torch.tensor([1.0, 0.0, 0.0])
    p = torch.tensor([math.cos(math.radians(50)), math.sin(math.radians(50)), 0.0])
    n = torch.nn.Parameter(F.normalize(torch.tensor([0.6, -0.3, 0.75]), dim=0))
    triplet = L.TripletLoss(margin=2.0)
    reg = L.DirectionRegularizer(form="orthogonal", mode="pairs", positives="all")
    y = torch.tensor([0, 0, 1])
    opt = torch.optim.SGD([n], lr=0.02)
    for _ in range(steps):
        before = n.detach().clone()
        x = torch.stack([a, p, n])
        loss = triplet(x, y) + weight * reg(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            n.copy_(F.normalize(n, dim=0))
    update = n.detach() - before
    c = (a + p) / 2
    return (
        abs(float(F.cosine_similarity(update, p - a, dim=0))),
        abs(float(F.cosine_similarity(n.detach() - c, p - a, dim=0))),
    )


def test_direction_regularizer_makes_negative_update_orthogonal_to_anchor_positive_axis():
    update_cos, layout_cos = _push_negative(weight=3.0)
    assert update_cos < 0.05 and layout_cos < 0.01, (update_cos, layout_cos)
    update_cos0, layout_cos0 = _push_negative(weight=0.0)
    assert update_cos0 > 0.15 and layout_cos0 > 0.15, (update_cos0, layout_cos0)
