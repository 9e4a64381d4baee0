"""``langdml.compat.pml.losses`` against pytorch-metric-learning 2.9 (the oracle).

Every compat loss and PML's class of the same name are built under the same seed (so their
proxies / class weights start equal) and called on the same seeded inputs; values and gradients
(embeddings, proxies, reference embeddings) must agree:

* float64: to float64 rounding (rtol 1e-9), both computing in float64;
* float32: to float32 rounding (rtol 2e-5 of the largest gradient);
* float16: our losses compute in float32 and cast the value to float16 (the gradient reaches the
  float16 input in float16), so the oracle is PML run in float32 on the same float16 inputs,
  cast to float16 (one float16 rounding apart); PML's own float16 arithmetic is checked too,
  loosely (2e-2 relative), since it rounds every intermediate to float16.
"""

from __future__ import annotations

import pytest
import torch

from langdml.compat.pml import distances, losses, regularizers
from langdml.errors import LangDMLError

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
pml_miners = pytest.importorskip("pytorch_metric_learning.miners")
pml_distances = pytest.importorskip("pytorch_metric_learning.distances")
pml_reg = pytest.importorskip("pytorch_metric_learning.regularizers")
pml_reducers = pytest.importorskip("pytorch_metric_learning.reducers")

B, D, C = 24, 8, 5
PROXY = {"num_classes": C, "embedding_size": D}
CASES = {
    "TripletMarginLoss": {},
    "ContrastiveLoss": {"pos_margin": 0.1, "neg_margin": 0.9},
    "MultiSimilarityLoss": {},
    "CircleLoss": {},
    "MarginLoss": {"margin": 0.1, "beta": 1.0},
    "NPairsLoss": {},
    "ProxyNCALoss": {**PROXY, "softmax_scale": 3.0},
    "ProxyAnchorLoss": PROXY,
    "ArcFaceLoss": PROXY,
    "CosFaceLoss": PROXY,
    "NormalizedSoftmaxLoss": PROXY,
    "SoftTripleLoss": {**PROXY, "centers_per_class": 3},
}
TOL = {torch.float64: 1e-9, torch.float32: 2e-5}


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (B,), generator=g)
    return x, y


def _pair(name: str, kwargs: dict, pml_kwargs: dict | None = None, ours_kwargs: dict | None = None):
    torch.manual_seed(7)
    theirs = getattr(pml_losses, name)(**kwargs, **(pml_kwargs or {}))
    torch.manual_seed(7)
    ours = getattr(losses, name)(**kwargs, **(ours_kwargs or {}))
    return theirs, ours


def _weights(loss) -> torch.nn.Parameter | None:
    for attr in ("proxies", "W", "fc"):
        w = getattr(loss, attr, None)
        if isinstance(w, torch.nn.Parameter):
            return w
    return None


def _run(loss, x, y, dtype, *args, **kwargs):
    """(value, d value / d x, d value / d weights in ours' (rows, dim) layout or None)."""
    x = x.to(dtype).clone().requires_grad_()
    if dtype != torch.float16:
        loss.to(dtype)  # PML casts its weights to the input dtype in place; ours keep theirs
    w = _weights(loss)
    if w is not None and w.grad is not None:
        w.grad = None
    value = loss(x, y, *args, **kwargs)
    value.backward()
    wg = None
    if w is not None:
        wg = w.grad.double()
        wg = wg.T if wg.shape[0] == x.shape[1] and wg.shape[1] != x.shape[1] else wg
    return value, x.grad, wg


def _close(a, b, rel: float) -> None:
    a, b = a.detach().double(), b.detach().double()
    scale = max(float(b.detach().abs().max()), 1e-12)
    torch.testing.assert_close(a, b, rtol=rel, atol=rel * scale)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", sorted(CASES))
def test_values_and_gradients_equal_pml(name, dtype):
    x, y = _batch()
    theirs, ours = _pair(name, CASES[name])
    v_p, g_p, w_p = _run(theirs, x, y, dtype)
    v_o, g_o, w_o = _run(ours, x, y, dtype)
    assert v_o.dtype == dtype and g_o.dtype == dtype
    _close(v_o, v_p, TOL[dtype])
    _close(g_o, g_p, TOL[dtype])
    if w_p is not None:
        _close(w_o, w_p, TOL[dtype])


@pytest.mark.parametrize("name", sorted(CASES))
def test_float16_is_computed_in_float32_and_cast(name):
    x, y = _batch(1)
    x16 = x.half()
    theirs, ours = _pair(name, CASES[name])
    v_o, g_o, _ = _run(ours, x16, y, torch.float16)
    assert v_o.dtype == torch.float16 and g_o.dtype == torch.float16
    v_32, g_32, _ = _run(theirs, x16.float(), y, torch.float32)
    _close(v_o, v_32.half(), 1e-3)
    _close(g_o, g_32.half(), 2e-3)
    theirs16, _ = _pair(name, CASES[name])
    v_16, _, _ = _run(theirs16, x16, y, torch.float16)
    _close(v_o, v_16, 2e-2)


def _mined(kind: str, x, y):
    if kind == "pairs":
        return pml_miners.MultiSimilarityMiner(epsilon=0.3)(x, y)
    return pml_miners.TripletMarginMiner(margin=0.3, type_of_triplets="all")(x, y)


@pytest.mark.parametrize("kind", ["pairs", "triplets"])
@pytest.mark.parametrize(
    "name",
    [
        "TripletMarginLoss",
        "ContrastiveLoss",
        "MultiSimilarityLoss",
        "CircleLoss",
        "MarginLoss",
        "NPairsLoss",
        "ProxyAnchorLoss",
        "ProxyNCALoss",
        "ArcFaceLoss",
    ],
)
def test_mined_tuples_equal_pml(name, kind):
    x, y = _batch(2)
    mined = _mined(kind, x, y)
    theirs, ours = _pair(name, CASES[name])
    v_p, g_p, w_p = _run(theirs, x, y, torch.float64, mined)
    v_o, g_o, w_o = _run(ours, x, y, torch.float64, mined)
    _close(v_o, v_p, 1e-9)
    _close(g_o, g_p, 1e-9)
    if w_p is not None:
        _close(w_o, w_p, 1e-9)


REF_LOSSES = [
    "TripletMarginLoss",
    "ContrastiveLoss",
    "MultiSimilarityLoss",
    "CircleLoss",
    "MarginLoss",
]


@pytest.mark.parametrize(
    ("name", "mined"),
    # MarginLoss with ref_emb and a mined tuple is refused (test_ref_emb_where_pml_has_none_raises)
    [(n, m) for n in REF_LOSSES for m in (False, True) if not (m and n == "MarginLoss")],
)
def test_ref_emb_equals_pml(name, mined):
    x, y = _batch(3)
    g = torch.Generator().manual_seed(4)
    r = torch.randn(30, D, generator=g, dtype=torch.float64)
    ry = torch.randint(0, C, (30,), generator=g)
    args = ()
    if mined:
        args = (pml_miners.TripletMarginMiner(margin=0.4)(x, y, r, ry),)
    out = []
    for loss in _pair(name, CASES[name]):
        xr, rr = x.clone().requires_grad_(), r.clone().requires_grad_()
        value = loss(xr, y, *args, ref_emb=rr, ref_labels=ry)
        value.backward()
        out.append((value, xr.grad, rr.grad))
    (v_p, gx_p, gr_p), (v_o, gx_o, gr_o) = out
    assert float(v_p) > 0
    _close(v_o, v_p, 1e-9)
    _close(gx_o, gx_p, 1e-9)
    _close(gr_o, gr_p, 1e-9)


def test_ref_emb_as_the_batch_itself_leaves_self_pairs_out_like_pml():
    x, y = _batch(5)
    theirs, ours = _pair("ContrastiveLoss", {})
    v_p = theirs(x, y, ref_emb=x, ref_labels=y)
    assert torch.allclose(ours(x, y, ref_emb=x, ref_labels=y), v_p, rtol=1e-12)
    assert torch.allclose(ours(x, y), v_p, rtol=1e-12)


def test_embedding_regularizer_equals_pml():
    x, y = _batch(6)
    x = x * 3
    for p, power in ((2, 2), (2, 1), (1, 1)):
        theirs, ours = _pair(
            "NPairsLoss",
            {"embedding_reg_weight": 0.1},
            {"embedding_regularizer": pml_reg.LpRegularizer(p=p, power=power)},
            {"embedding_regularizer": regularizers.LpRegularizer(p=p, power=power)},
        )
        (v_p, g_p, _), (v_o, g_o, _) = (_run(m, x, y, torch.float64) for m in (theirs, ours))
        _close(v_o, v_p, 1e-9)
        _close(g_o, g_p, 1e-9)


def test_pml_regularizer_objects_are_read_too():
    x, y = _batch(6)
    reg = {"embedding_regularizer": pml_reg.LpRegularizer(power=2), "embedding_reg_weight": 0.5}
    theirs, ours = _pair("TripletMarginLoss", reg)
    assert torch.allclose(ours(x, y), theirs(x, y), rtol=1e-12)


@pytest.mark.parametrize(
    ("name", "kwargs", "pml_reg_obj", "our_reg_obj"),
    [
        (
            "SoftTripleLoss",
            {**PROXY, "centers_per_class": 4},
            pml_reg.SparseCentersRegularizer(C, 4),
            regularizers.SparseCentersRegularizer(C, 4),
        ),
        ("ProxyAnchorLoss", PROXY, pml_reg.LpRegularizer(), regularizers.LpRegularizer()),
        ("ArcFaceLoss", PROXY, pml_reg.LpRegularizer(power=2), regularizers.LpRegularizer(power=2)),
    ],
)
def test_weight_regularizers_equal_pml(name, kwargs, pml_reg_obj, our_reg_obj):
    x, y = _batch(7)
    kwargs = {**kwargs, "weight_reg_weight": 0.3}
    theirs, ours = _pair(
        name, kwargs, {"weight_regularizer": pml_reg_obj}, {"weight_regularizer": our_reg_obj}
    )
    (v_p, g_p, w_p), (v_o, g_o, w_o) = (_run(m, x, y, torch.float64) for m in (theirs, ours))
    _close(v_o, v_p, 1e-9)
    _close(g_o, g_p, 1e-9)
    _close(w_o, w_p, 1e-9)


def test_npairs_unnormalised_dot_product_equals_pml():
    x, y = _batch(8)
    theirs, ours = _pair(
        "NPairsLoss",
        {},
        {"distance": pml_distances.DotProductSimilarity(normalize_embeddings=False)},
        {"distance": distances.DotProductSimilarity(normalize_embeddings=False)},
    )
    (v_p, g_p, _), (v_o, g_o, _) = (_run(m, x * 0.3, y, torch.float64) for m in (theirs, ours))
    _close(v_o, v_p, 1e-9)
    _close(g_o, g_p, 1e-9)


def test_default_distance_objects_are_accepted():
    ours = losses.TripletMarginLoss(distance=pml_distances.LpDistance())
    plain = losses.TripletMarginLoss(distance=distances.LpDistance())
    x, y = _batch(9)
    assert torch.equal(ours(x, y), plain(x, y))
    losses.MultiSimilarityLoss(distance=distances.CosineSimilarity())
    losses.ProxyNCALoss(C, D, distance=pml_distances.LpDistance(power=2))


@pytest.mark.parametrize("name", ["ArcFaceLoss", "CosFaceLoss", "NormalizedSoftmaxLoss"])
def test_W_is_pml_layout_view_of_proxies(name):
    theirs, ours = _pair(name, PROXY)
    assert ours.W.shape == theirs.W.shape == (D, C)
    assert torch.equal(ours.W.detach(), theirs.W.detach())
    ours.W = torch.zeros(D, C)
    assert float(ours.proxies.abs().sum()) == 0.0


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("ArcFaceLoss", PROXY), ("SoftTripleLoss", {**PROXY, "centers_per_class": 3})],
)
def test_a_pml_state_dict_loads(name, kwargs):
    theirs, _ = _pair(name, kwargs)
    torch.manual_seed(99)  # other starting weights
    ours = getattr(losses, name)(**kwargs)
    ours.load_state_dict(theirs.state_dict())
    x, y = _batch(12)
    assert torch.allclose(ours(x, y), theirs(x, y), rtol=1e-12)


def test_soft_triple_fc_is_pml_layout():
    theirs, ours = _pair("SoftTripleLoss", {**PROXY, "centers_per_class": 3})
    assert torch.equal(ours.fc.detach(), theirs.fc.detach())


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: losses.TripletMarginLoss(distance=pml_distances.CosineSimilarity()),
            "distance=DotProductSimilarity.*not supported",
        ),
        (
            lambda: losses.TripletMarginLoss(reducer=pml_reducers.ThresholdReducer(high=0.3)),
            "reducer=ThresholdReducer is not supported",
        ),
        (lambda: losses.TripletMarginLoss(swap=True), "swap=True is not supported"),
        (lambda: losses.TripletMarginLoss(smooth_loss=True), "smooth_loss=True"),
        (
            lambda: losses.ContrastiveLoss(embedding_regularizer=pml_reg.ZeroMeanRegularizer()),
            "embedding_regularizer=ZeroMeanRegularizer is not supported",
        ),
        (
            lambda: losses.ContrastiveLoss(weight_regularizer=regularizers.LpRegularizer()),
            "weight_regularizer is not supported",
        ),
        (lambda: losses.MultiSimilarityLoss(collect_stats=True), "collect_stats"),
        (lambda: losses.CircleLoss(bogus=1), r"\['bogus'\] not supported"),
    ],
)
def test_unsupported_arguments_raise_one_line(build, message):
    with pytest.raises(LangDMLError, match=message) as info:
        build()
    assert "\n" not in str(info.value)


def test_ref_emb_where_pml_has_none_raises():
    x, y = _batch()
    for loss in (losses.ProxyAnchorLoss(C, D), losses.NPairsLoss()):
        with pytest.raises(LangDMLError, match="ref_emb is not supported"):
            loss(x, y, ref_emb=x[:5], ref_labels=y[:5])
    with pytest.raises(LangDMLError, match="not supported"):
        losses.MarginLoss()(x, y, (y[:2], y[:2], y[:2]), ref_emb=x[:5], ref_labels=y[:5])
    with pytest.raises(LangDMLError, match="ref_labels"):
        losses.ContrastiveLoss()(x, y, ref_emb=x[:5])


def test_compat_losses_are_langdml_losses():
    from langdml import losses as native

    assert isinstance(losses.TripletMarginLoss(), native.TripletLoss)
    assert isinstance(losses.NPairsLoss(), native.NPairLoss)
    assert losses.ProxyAnchorLoss(C, D).proxy_parameters()[0].shape == (C, D)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize("name", REF_LOSSES)
def test_cross_batch_memory_equals_pml_over_calls(name, dtype):
    torch.manual_seed(0)
    theirs_inner, ours_inner = _pair(name, CASES[name])
    theirs = pml_losses.CrossBatchMemory(theirs_inner, D, memory_size=40)
    ours = losses.CrossBatchMemory(ours_inner, D, memory_size=40)
    oracle_dtype = torch.float32 if dtype == torch.float16 else dtype  # float16: see module doc
    for step in range(4):  # the queue fills and wraps
        x, y = _batch(10 + step)
        x = x[:16].to(dtype)
        v_p, g_p, _ = _run(theirs, x.to(oracle_dtype), y[:16], oracle_dtype)
        v_o, g_o, _ = _run(ours, x, y[:16], dtype)
        assert v_o.dtype == dtype and g_o.dtype == dtype
        rel = TOL.get(dtype, 2e-3)
        _close(v_o, v_p.to(dtype), rel)
        _close(g_o, g_p.to(dtype), rel)


def test_cross_batch_memory_refuses_what_it_lacks():
    with pytest.raises(LangDMLError, match="miner= is not supported"):
        losses.CrossBatchMemory(losses.ContrastiveLoss(), D, miner=object())
    reg = losses.ContrastiveLoss(embedding_regularizer=regularizers.LpRegularizer())
    with pytest.raises(LangDMLError, match="regularizers"):
        losses.CrossBatchMemory(reg, D)
    with pytest.raises(LangDMLError, match="not supported"):
        losses.CrossBatchMemory(losses.ProxyAnchorLoss(C, D), D)
