"""The fused value-and-gradient kernels against plain autograd of the same expression."""

from __future__ import annotations

import math

import pytest
import torch

from langdml.losses._class_weights import softmax_cross_entropy_
from langdml.losses._common import normalize
from langdml.losses._fused import cross_loss, direct_exp_ok, rows_cross_loss


def _weighted_tanh(weights: torch.Tensor):
    """fn(T) -> (Σ W ∘ tanh T, ∂/∂T): a smooth loss of T with a dense, uneven gradient."""

    def fn(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        th = torch.tanh(t)
        return (weights * th).sum(), weights * (1 - th * th)

    return fn


def _with_zero_rows(x: torch.Tensor, rows: list[int]) -> torch.Tensor:
    x = x.clone()
    x[rows] = 0
    return x.requires_grad_(True)


@pytest.mark.parametrize("scale", [1.0, 7.5])
def test_cross_loss_matches_autograd_including_zero_rows(scale):
    g = torch.Generator().manual_seed(0)
    x = _with_zero_rows(torch.randn(9, 6, generator=g, dtype=torch.float64), [2])
    p = _with_zero_rows(torch.randn(5, 6, generator=g, dtype=torch.float64), [4])
    w = torch.randn(9, 5, generator=g, dtype=torch.float64)
    value = cross_loss(x, p, _weighted_tanh(w), scale)
    (value * 3.0).backward()  # an output gradient other than 1
    xr, pr = x.detach().clone().requires_grad_(), p.detach().clone().requires_grad_()
    ref = (w * torch.tanh(scale * normalize(xr) @ normalize(pr).T)).sum()
    (ref * 3.0).backward()
    torch.testing.assert_close(value, ref)
    torch.testing.assert_close(x.grad, xr.grad)
    torch.testing.assert_close(p.grad, pr.grad)
    assert torch.all(x.grad[2] == 0) and torch.all(p.grad[4] == 0)


def test_rows_cross_loss_matches_autograd_including_zero_rows():
    g = torch.Generator().manual_seed(1)
    x = _with_zero_rows(torch.randn(10, 4, generator=g, dtype=torch.float64), [7])
    a, b = torch.tensor([0, 3, 7, 9]), torch.tensor([1, 2, 5, 8])
    w = torch.randn(4, 4, generator=g, dtype=torch.float64)
    value = rows_cross_loss(x, a, b, _weighted_tanh(w))
    (value * 0.5).backward()
    xr = x.detach().clone().requires_grad_()
    z = normalize(xr)
    ref = (w * torch.tanh(z[a] @ z[b].T)).sum()
    (ref * 0.5).backward()
    torch.testing.assert_close(value, ref)
    torch.testing.assert_close(x.grad, xr.grad)
    untouched = [r for r in range(10) if r not in (0, 1, 2, 3, 5, 7, 8, 9)]
    assert torch.all(x.grad[untouched] == 0)


@pytest.mark.parametrize("kernel", ["cross", "rows"])
def test_second_backward_through_a_cross_kernel_is_refused(kernel):
    x = torch.randn(4, 3, requires_grad=True)
    if kernel == "cross":
        p = torch.randn(2, 3, requires_grad=True)
        value = cross_loss(x, p, _weighted_tanh(torch.ones(4, 2)))
    else:
        a, b = torch.tensor([0, 1]), torch.tensor([2, 3])
        value = rows_cross_loss(x, a, b, _weighted_tanh(torch.ones(2, 2)))
    value.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="already back-propagated"):
        value.backward()


def test_direct_exp_bounds():
    assert direct_exp_ok(-64 * (1 + 0.5 * math.sin(0.5)), 64.0, 512)  # ArcFace's defaults
    assert direct_exp_ok(-86.0, 64.0, 10**6) is False  # below float32's normal range
    assert direct_exp_ok(-1.0, 79.0, 10**6) is False  # the sum could approach float32's max
    assert direct_exp_ok(-20.0, 20.0, 10**9)


@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_cross_entropy_direct_path_equals_shifted_path(weighted):
    """Logits spread over ArcFace's whole range: the unshifted exps give the max-shifted
    result (value and gradient) to float32 rounding, and both match log_softmax."""
    g = torch.Generator().manual_seed(2)
    logits = torch.empty(16, 300).uniform_(-79.0, 64.0, generator=g)
    labels = torch.randint(0, 300, (16,), generator=g)
    weights = torch.rand(16, generator=g) if weighted else None
    bounds = (-79.0, 64.0)
    assert direct_exp_ok(*bounds, 300)
    v_direct, g_direct = softmax_cross_entropy_(logits.clone(), labels, weights, 2.0, bounds)
    v_shift, g_shift = softmax_cross_entropy_(logits.clone(), labels, weights, 2.0, None)
    torch.testing.assert_close(v_direct, v_shift)
    torch.testing.assert_close(g_direct, g_shift)
    ref = logits.clone().requires_grad_()
    per = -torch.log_softmax(ref, dim=1).gather(1, labels[:, None]).squeeze(1)
    (2.0 * (per if weights is None else per * weights).mean()).backward()
    torch.testing.assert_close(g_direct, ref.grad)
    torch.testing.assert_close(v_direct, (per if weights is None else per * weights).mean())


def test_softmax_cross_entropy_excluding_the_target():
    """exclude_target: the log-sum-exp over the other classes, as the ProxyNCA paper's."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 5, generator=g, dtype=torch.float64) * 3
    labels = torch.tensor([0, 4, 2, 2, 1, 3])
    value, grad = softmax_cross_entropy_(logits.clone(), labels, None, exclude_target=True)
    ref = logits.clone().requires_grad_()
    others = ref.masked_fill(torch.nn.functional.one_hot(labels, 5).bool(), float("-inf"))
    per = torch.logsumexp(others, dim=1) - ref.gather(1, labels[:, None]).squeeze(1)
    per.mean().backward()
    torch.testing.assert_close(value, per.mean())
    torch.testing.assert_close(grad, ref.grad)
