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


SIZES = [8, 16, 24]  # target, then one per head (make_inputs' widths)


def joined(target, aux, feats=None):
    """The one-tensor input every loss takes: [target | heads | features]."""
    return torch.cat([target, *aux, *([] if feats is None else [feats])], dim=1)


def test_objective_is_half_dml_plus_weighted_distillation_and_feature_delay():
    target, aux, y, feats = make_inputs()
    loss = L.S2SDLoss(
        L.MultiSimilarityLoss(),
        [L.MultiSimilarityLoss(), L.MultiSimilarityLoss()],
        embedding_sizes=SIZES,
        temperature=1.0,
        weight=50.0,
        feature_weight=20.0,
        feature_delay=1,
    )
    ms = L.MultiSimilarityLoss()
    dml = 0.5 * (float(ms(target, y)) + (float(ms(aux[0], y)) + float(ms(aux[1], y))) / 2)
    kl = (loop_kl(target.double(), aux[0].double(), 1.0) + loop_kl(target, aux[1], 1.0)) / 2
    first = loss(joined(target, aux, feats), y)  # call 0 < feature_delay: no feature term
    assert float(first) == pytest.approx(dml + 50.0 * kl, rel=1e-5)
    assert set(loss.last_terms) == {"target", "heads", "distill", "total"}
    second = loss(joined(target, aux, feats), y)
    expected = dml + 50.0 * kl + 20.0 * loop_kl(target.double(), feats.double(), 1.0)
    assert float(second) == pytest.approx(expected, rel=1e-5)
    assert "feature_distill" in loss.last_terms and int(loss.calls) == 2


def test_gradients_reach_target_and_heads_through_their_own_terms():
    target, aux, y, feats = make_inputs(1)
    x = joined(target, aux, feats).requires_grad_(True)
    loss = L.S2SDLoss(
        L.TripletLoss(), [L.TripletLoss(), L.TripletLoss()], embedding_sizes=SIZES, feature_delay=0
    )
    loss(x, y).backward()
    assert torch.count_nonzero(x.grad[:, sum(SIZES) :]) == 0  # the features are a teacher only
    # a head's gradient is exactly half its own DML loss's gradient (the KL is detached there)
    a0 = aux[0].detach().clone().requires_grad_(True)
    (0.5 * 0.5 * L.TripletLoss()(a0, y)).backward()
    torch.testing.assert_close(x.grad[:, 8:24], a0.grad)
    assert float(x.grad[:, :8].abs().sum()) > 0


def test_build_makes_one_loss_per_embedding_size_and_collects_proxies():
    spec = {"base": {"name": "proxy_anchor", "margin": 0.2}, "s2sd": {"dims": [16, 24]}}
    spec["s2sd"]["weight"] = 10.0
    loss = L.build_loss(spec, num_classes=4, embedding_size=8)
    assert isinstance(loss, L.S2SDLoss) and loss.embedding_sizes == [8, 16, 24]
    target = loss.target_loss.base  # the target's loss is the CombinedLoss around the base
    assert [lo.embedding_size for lo in (target, *loss.auxiliary_losses)] == [8, 16, 24]
    assert all(lo.margin == 0.2 for lo in (target, *loss.auxiliary_losses))
    assert len(loss.proxy_parameters()) == 3 and loss.weight == 10.0
    assert loss.proxies is target.proxies
    assert loss.proxy_labels.tolist() == [0, 1, 2, 3]
    target, aux, y, _ = make_inputs(2)
    assert torch.isfinite(loss(joined(target, aux), y % 4))


TWO = {"embedding_sizes": [8, 16]}


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda: L.S2SDLoss(L.TripletLoss(), [], embedding_sizes=[8]), "at least one auxiliary"),
        (lambda: L.S2SDLoss(L.TripletLoss(), [L.TripletLoss()], **TWO, temperature=0), "temper"),
        (lambda: L.S2SDLoss(L.TripletLoss(), [L.TripletLoss()], **TWO, weight=-1), "weight"),
        (lambda: L.S2SDLoss(L.TripletLoss(), [L.TripletLoss()], **TWO, feature_delay=-1), "delay"),
        (lambda: L.S2SDLoss(L.TripletLoss(), [L.TripletLoss()], embedding_sizes=[8]), "sizes"),
    ],
)
def test_bad_arguments(make, needle):
    with pytest.raises(LangDMLError, match=needle):
        make()


def test_bad_inputs():
    target, aux, y, _ = make_inputs()
    loss = L.S2SDLoss(L.TripletLoss(), [L.TripletLoss(), L.TripletLoss()], embedding_sizes=SIZES)
    with pytest.raises(LangDMLError, match=r"expected \(B, >= 48\) embeddings"):
        loss(joined(target, aux[:1]), y)
    with pytest.raises(LangDMLError, match="S2SDLoss"):
        loss(joined(target, aux)[:5], y)


def test_split_recovers_the_parts_and_features_are_optional():
    target, aux, y, feats = make_inputs(3)
    loss = L.S2SDLoss(L.TripletLoss(), [L.TripletLoss(), L.TripletLoss()], embedding_sizes=SIZES)
    t, a, f = loss.split(joined(target, aux, feats))
    assert torch.equal(t, target) and all(map(torch.equal, a, aux)) and torch.equal(f, feats)
    assert loss.split(joined(target, aux))[2] is None
