"""S2SDLoss: the similarity distillation term against a loop reference written from the paper's
formula, the full objective, gradients (teacher side detached), feature delay, build and errors."""

from __future__ import annotations

import math

import pytest
import torch

from langdml import losses as L
from langdml.errors import LangDMLError
from langdml.losses.s2sd import similarity_distillation


def loop_kl(student, teacher, t):
    """(T²/B) Σ_i Σ_j p_t[i,j] log(p_t[i,j] / p_s[i,j]), softmax rows of cosine matrices / T."""
    b = len(student)

    def cos(u, v):
        return float(u @ v) / (float(u.norm()) * float(v.norm()))

    total = 0.0
    for i in range(b):
        s_row = [cos(student[i], student[j]) / t for j in range(b)]
        t_row = [cos(teacher[i], teacher[j]) / t for j in range(b)]
        zs = sum(math.exp(v) for v in s_row)
        zt = sum(math.exp(v) for v in t_row)
        for j in range(b):
            p_t, p_s = math.exp(t_row[j]) / zt, math.exp(s_row[j]) / zs
            total += p_t * math.log(p_t / p_s)
    return total * t * t / b


@pytest.mark.parametrize("t", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("b", [1, 5, 17])
def test_distillation_term_matches_loop_reference(t, b):
    g = torch.Generator().manual_seed(b)
    student, teacher = torch.randn(b, 8, generator=g), torch.randn(b, 32, generator=g)
    got = similarity_distillation(student, teacher, t)
    assert float(got) == pytest.approx(loop_kl(student.double(), teacher.double(), t), abs=1e-6)


def test_distillation_trains_the_student_only():
    g = torch.Generator().manual_seed(0)
    student = torch.randn(10, 8, generator=g, requires_grad=True)
    teacher = torch.randn(10, 32, generator=g, requires_grad=True)
    similarity_distillation(student, teacher, 1.0).backward()
    assert teacher.grad is None and float(student.grad.abs().sum()) > 0
    # identical similarity structure: zero loss
    same = similarity_distillation(teacher.detach(), teacher.detach(), 1.0)
    assert abs(float(same)) < 1e-6


def make_inputs(seed=0, b=12):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(b) // 3
    return (
        torch.randn(b, 8, generator=g),
        [torch.randn(b, 16, generator=g), torch.randn(b, 24, generator=g)],
        y,
        torch.randn(b, 40, generator=g),
    )


def test_objective_is_half_dml_plus_weighted_distillation_and_feature_delay():
    target, aux, y, feats = make_inputs()
    loss = L.S2SDLoss(
        L.MultiSimilarityLoss(),
        [L.MultiSimilarityLoss(), L.MultiSimilarityLoss()],
        temperature=1.0,
        weight=50.0,
        feature_weight=20.0,
        feature_delay=1,
    )
    ms = L.MultiSimilarityLoss()
    dml = 0.5 * (float(ms(target, y)) + (float(ms(aux[0], y)) + float(ms(aux[1], y))) / 2)
    kl = (loop_kl(target.double(), aux[0].double(), 1.0) + loop_kl(target, aux[1], 1.0)) / 2
    first = loss(target, aux, y, features=feats)  # call 0 < feature_delay: no feature term
    assert float(first) == pytest.approx(dml + 50.0 * kl, rel=1e-5)
    assert set(loss.last_terms) == {"target", "heads", "distill", "total"}
    second = loss(target, aux, y, features=feats)
    expected = dml + 50.0 * kl + 20.0 * loop_kl(target.double(), feats.double(), 1.0)
    assert float(second) == pytest.approx(expected, rel=1e-5)
    assert "feature_distill" in loss.last_terms and int(loss.calls) == 2


def test_gradients_reach_target_and_heads_through_their_own_terms():
    target, aux, y, feats = make_inputs(1)
    target.requires_grad_(True)
    aux = [a.requires_grad_(True) for a in aux]
    feats.requires_grad_(True)
    loss = L.S2SDLoss(L.TripletLoss(), [L.TripletLoss(), L.TripletLoss()], feature_delay=0)
    loss(target, aux, y, features=feats).backward()
    assert feats.grad is None
    # a head's gradient is exactly half its own DML loss's gradient (the KL is detached there)
    a0 = aux[0].detach().clone().requires_grad_(True)
    (0.5 * 0.5 * L.TripletLoss()(a0, y)).backward()
    torch.testing.assert_close(aux[0].grad, a0.grad)
    assert float(target.grad.abs().sum()) > 0


def test_build_makes_one_loss_per_embedding_size_and_collects_proxies():
    loss = L.S2SDLoss.build(
        {"name": "proxy_anchor", "margin": 0.2}, 8, [16, 24], num_classes=4, weight=10.0
    )
    assert [lo.embedding_size for lo in (loss.target_loss, *loss.auxiliary_losses)] == [8, 16, 24]
    assert all(lo.margin == 0.2 for lo in (loss.target_loss, *loss.auxiliary_losses))
    assert len(loss.proxy_parameters()) == 3 and loss.weight == 10.0
    assert loss.proxies is loss.target_loss.proxies
    assert loss.proxy_labels.tolist() == [0, 1, 2, 3]
    target, aux, y, _ = make_inputs(2)
    assert torch.isfinite(loss(target, aux, y % 4))


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda: L.S2SDLoss(L.TripletLoss(), []), "at least one auxiliary"),
        (lambda: L.S2SDLoss(L.TripletLoss(), [L.TripletLoss()], temperature=0), "temperature"),
        (lambda: L.S2SDLoss(L.TripletLoss(), [L.TripletLoss()], weight=-1), "weight"),
        (lambda: L.S2SDLoss(L.TripletLoss(), [L.TripletLoss()], feature_delay=-1), "delay"),
    ],
)
def test_bad_arguments(make, needle):
    with pytest.raises(LangDMLError, match=needle):
        make()


def test_bad_inputs():
    target, aux, y, _ = make_inputs()
    loss = L.S2SDLoss(L.TripletLoss(), [L.TripletLoss(), L.TripletLoss()])
    with pytest.raises(LangDMLError, match="list of 2 auxiliary"):
        loss(target, aux[:1], y)
    with pytest.raises(LangDMLError, match="auxiliary head 1"):
        loss(target, [aux[0], aux[1][:5]], y)
