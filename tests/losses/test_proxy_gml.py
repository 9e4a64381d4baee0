"""ProxyGML against a slow loop-based reference written from the paper's equations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from langdml import losses as L


def proxy_gml_reference(x, y, proxies, c, n, r, lam, scale=1.0):
    """Sample by sample, proxy by proxy: sub-graph, class scores, masked softmax, CE + λ·reg."""
    z = F.normalize(x, dim=1)
    p = F.normalize(proxies, dim=1)
    k = min(c * n, max(n, math.ceil(r * c * n)))
    per_sample = []
    for i in range(len(y)):
        sims = [float((z[i] @ p[j]).detach()) for j in range(c * n)]
        own = [j for j in range(c * n) if j // n == int(y[i])]
        others = sorted((j for j in range(c * n) if j // n != int(y[i])), key=lambda j: -sims[j])
        kept = set(own + others[: k - len(own)])
        scores = {}
        for j in kept:
            scores.setdefault(j // n, []).append(z[i] @ p[j])
        logits = {cls: scale * torch.stack(v).sum() for cls, v in scores.items()}
        denom = torch.logsumexp(torch.stack(list(logits.values())), dim=0)
        per_sample.append(denom - logits[int(y[i])])
    loss = torch.stack(per_sample).mean()
    if lam > 0:
        per_proxy = []
        for j in range(c * n):
            cls_scores = torch.stack(
                [sum(p[j] @ p[cls * n + t] for t in range(n)) for cls in range(c)]
            )
            per_proxy.append(torch.logsumexp(cls_scores, 0) - cls_scores[j // n])
        loss = loss + lam * torch.stack(per_proxy).mean()
    return loss


@pytest.mark.parametrize(
    "c,n,r,lam,scale",
    [(6, 3, 0.2, 0.3, 1.0), (5, 1, 0.4, 0.0, 1.0), (4, 4, 0.05, 0.3, 5.0), (3, 2, 1.0, 0.5, 1.0)],
)
def test_proxy_gml_matches_loop_reference(c, n, r, lam, scale):
    g = torch.Generator().manual_seed(c * 10 + n)
    x = torch.randn(10, 7, generator=g)
    y = torch.randint(0, c, (10,), generator=g)
    loss = L.ProxyGMLLoss(
        num_classes=c, embedding_size=7, proxies_per_class=n, r=r, weight_lambda=lam, scale=scale
    )
    assert loss.proxies.shape == (c * n, 7)
    x1 = x.clone().requires_grad_(True)
    value = loss(x1, y)
    value.backward()
    x2 = x.clone().requires_grad_(True)
    p2 = loss.proxies.detach().clone().requires_grad_(True)
    ref = proxy_gml_reference(x2, y, p2, c, n, r, lam, scale)
    ref.backward()
    torch.testing.assert_close(value, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(loss.proxies.grad, p2.grad, rtol=1e-4, atol=1e-6)


def test_proxy_gml_keeps_only_top_fraction_plus_own_class():
    """Edges outside the sub-graph carry no loss: moving a dropped proxy changes nothing, moving
    a kept one does, and an own-class proxy counts even when it is the least similar of all."""
    torch.manual_seed(0)
    loss = L.ProxyGMLLoss(
        num_classes=10, embedding_size=4, proxies_per_class=2, r=0.2, weight_lambda=0
    )
    assert loss.num_kept == 4  # ceil(0.2 * 20)
    x = torch.randn(1, 4)
    y = torch.tensor([0])
    with torch.no_grad():
        sims = (F.normalize(x, dim=1) @ F.normalize(loss.proxies, dim=1).T)[0]
        other = torch.where(loss.proxy_labels == 0, -9.0, sims)
        order = other.argsort(descending=True)
        kept_other, dropped = int(order[0]), int(order[-3])
        before = float(loss(x, y))
        loss.proxies[dropped] = -x[0]  # cosine -1: still outside the top 4
        assert float(loss(x, y)) == pytest.approx(before, abs=1e-7)
        loss.proxies[kept_other] = loss.proxies[kept_other] + 0.5 * x[0]
        assert abs(float(loss(x, y)) - before) > 1e-4
        loss.proxies[1] = -x[0]  # own-class proxy made the least similar of all
    x1 = x.clone().requires_grad_(True)
    loss(x1, y).backward()
    assert float(loss.proxies.grad[1].abs().sum()) > 0
    assert float(loss.proxies.grad[dropped].abs().sum()) == 0


def test_proxy_gml_defaults():
    loss = L.ProxyGMLLoss(num_classes=100, embedding_size=8)
    assert (loss.proxies_per_class, loss.r, loss.weight_lambda) == (12, 0.05, 0.3)
    assert loss.num_kept == 60
    assert loss.proxy_parameters() == [loss.proxies]
