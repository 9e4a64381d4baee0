"""The floor that scripts/benchmarks/bench_losses.py prints: its products are products our losses
really compute, at the shapes they compute them (read from the profiler's record of one
forward+backward), and the dense-gradient losses declare their backward products too.
(No timing assertions.)"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

pytest.importorskip("pytorch_metric_learning")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "benchmarks"))

import bench_losses  # noqa: E402
import loss_floor  # noqa: E402

DENSE = ("proxy_anchor", "proxy_nca", "arcface", "cosface", "normalized_softmax", "soft_triple")


def _mm_shapes(loss, x, y) -> Counter:
    """(m, k, n) of every dense matrix product one forward+backward of ``loss`` runs."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        bench_losses.step(loss, x, y)
    shapes: Counter = Counter()
    for event in prof.events():
        if event.name in ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm") and (
            event.input_shapes
        ):
            # mm(a, b[, out]), bmm(a, b[, out]), addmm(bias, a, b, ...), acc.addmm_(a, b, ...)
            with_bias = event.name.startswith("aten::addmm")
            a, b = event.input_shapes[1:3] if with_bias else event.input_shapes[:2]
            if len(a) == 2 and len(b) == 2:
                shapes[(a[0], a[1], b[1])] += 1
    return shapes


@pytest.mark.parametrize("name", bench_losses.ALL_CASES)
def test_floor_products_are_products_the_loss_computes(name):
    batch, dim = 16, 8
    num_classes = max(512, batch // bench_losses.PER_CLASS)
    mine, _ = bench_losses.build(name, num_classes, dim, "cpu", batch)
    x, y = bench_losses.inputs(batch, dim, num_classes, "cpu")
    for _ in range(2):  # the memory cases: a second call, with the queue partly filled
        floor = loss_floor.case_floor(name, mine, x, y)
        declared = Counter((p.m, p.k, p.n) for p in floor.products)
        computed = _mm_shapes(mine, x, y)
        assert declared and not declared - computed, (declared, computed)
    assert floor.dim == dim
    if name in DENSE:
        refs = mine.proxies.shape[0]
        assert floor.refs == refs == num_classes * getattr(mine, "centers_per_class", 1)
        products = [(batch, dim, refs), (batch, refs, dim), (refs, batch, dim)]
        assert declared == Counter(products)
        assert floor.normalised == ("x", "ref")
    elif name == "npair":
        pairs = len(set(y.tolist()))  # 4 samples per class: every class gives one pair
        assert floor.batch == floor.refs == pairs and len(floor.products) == 3
    elif name.startswith("xbm_"):
        assert floor.refs == min(mine.memory_size, 2 * batch)  # after the second call
        assert [(p.m, p.k, p.n) for p in floor.products] == [(batch, dim, floor.refs)]
    else:
        assert [(p.m, p.k, p.n) for p in floor.products] == [(batch, dim, batch)]
    ops = floor.operands("cpu")
    shapes = {k: tuple(v.shape) for k, v in ops.items()}
    assert shapes == {
        "x": (floor.batch, dim),
        "ref": (floor.refs, dim),
        "grad": (floor.batch, floor.refs),
    }
    floor.run(ops)


def test_unknown_case_has_no_floor():
    with pytest.raises(KeyError, match="no floor"):
        loss_floor.case_floor("nope", torch.nn.Identity(), torch.zeros(2, 2), torch.zeros(2))
