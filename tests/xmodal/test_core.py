"""Cross-modal metrics against a slow loop reference, chance levels by exact enumeration, the
text-proxy losses against ProxyAnchor/ProxyNCA with the same proxies, and the two trainers on a
synthetic problem where images and names share latent structure."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from langdml.errors import LangDMLError
from langdml.losses import CombinedLoss, ProxyAnchorLoss, ProxyNCALoss
from langdml.xmodal import (
    TextProxyAnchorLoss,
    TextProxyNCALoss,
    chance_levels,
    crossmodal_metrics,
    train_alignment,
    train_text_proxies,
)

# ------------------------------------------------------------------ slow reference metrics


def _ranking(q: np.ndarray, gallery: np.ndarray) -> list[int]:
    """Gallery indices by descending cosine, ties by ascending index (the eval module's order)."""
    qn = q / np.linalg.norm(q)
    scores = []
    for j, g in enumerate(gallery):
        scores.append((-float(np.dot(qn, g / np.linalg.norm(g))), j))
    return [j for _, j in sorted(scores)]


def _reference_metrics(img, y_img, txt, y_txt) -> dict[str, float]:
    img, txt = np.asarray(img, np.float64), np.asarray(txt, np.float64)
    out: dict[str, list[float]] = {}

    def add(key, value):
        out.setdefault(key, []).append(value)

    for i in range(len(img)):
        rel = [int(y_txt[j] == y_img[i]) for j in _ranking(img[i], txt)]
        for k in (1, 5):
            add(f"i2t_r@{k}", float(any(rel[:k])))
        r = sum(rel)
        add("i2t_map", sum(sum(rel[: n + 1]) / (n + 1) for n in range(len(rel)) if rel[n]) / r)
    for t in range(len(txt)):
        rel = [int(y_img[j] == y_txt[t]) for j in _ranking(txt[t], img)]
        r = sum(rel)
        if r == 0:
            continue
        for k in (1, 10):
            add(f"t2i_r@{k}", float(any(rel[:k])))
        precisions = [sum(rel[: n + 1]) / (n + 1) for n in range(len(rel))]
        add("t2i_map@r", sum(precisions[n] for n in range(r) if rel[n]) / r)
        add("t2i_map", sum(precisions[n] for n in range(len(rel)) if rel[n]) / r)
    return {k: float(np.mean(v)) for k, v in out.items()}


@pytest.mark.parametrize("seed", [0, 1])
def test_crossmodal_metrics_match_slow_loop_reference(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 7, size=9)  # unequal classes
    y_img = np.repeat(np.arange(9), sizes)
    centers = rng.normal(size=(10, 6))
    img = centers[y_img] + 1.2 * rng.normal(size=(len(y_img), 6))
    txt = centers + 0.8 * rng.normal(size=(10, 6))  # class 9: a name without images
    y_txt = np.arange(10)
    got = crossmodal_metrics(torch.tensor(img), torch.tensor(y_img), txt, chance=False)
    want = _reference_metrics(img, y_img, txt, y_txt)
    assert set(got) == set(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key
    assert 0 < got["i2t_r@1"] < 1 and 0 < got["t2i_map"] < 1  # a non-degenerate case


def test_i2t_map_is_mrr_and_hand_computed_example():
    # 3 names on the unit circle; images placed so their own name ranks 1st, 2nd and 3rd.
    ang = np.array([0.0, 2.0, 4.0])
    txt = np.stack([np.cos(ang), np.sin(ang)], 1)
    img = np.stack([txt[0], txt[2] * 0.9 + txt[1] * 0.1, txt[0]])  # labels 0, 1, 2
    labels = np.array([0, 1, 2])
    m = crossmodal_metrics(img, labels, txt, chance=False)
    # image 0: rank 1; image 1: nearest name 2, then 1 → rank 2; image 2 (=name 0): rank 2 or 3
    ranks = [1, 2, 1 + _ranking(img[2], txt).index(2)]
    assert m["i2t_map"] == pytest.approx(np.mean([1 / r for r in ranks]))
    assert m["i2t_r@1"] == pytest.approx(1 / 3)


def test_text_labels_map_several_texts_to_one_class():
    rng = np.random.default_rng(3)
    img, txt = rng.normal(size=(12, 4)), rng.normal(size=(5, 4))
    y_img, y_txt = np.repeat(np.arange(4), 3), np.array([0, 1, 2, 3, 3])
    got = crossmodal_metrics(img, y_img, txt, y_txt, chance=False)
    want = _reference_metrics(img, y_img, txt, y_txt)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


def test_metric_inputs_are_checked_in_one_line():
    img, txt = np.ones((4, 8)), np.ones((3, 16))
    with pytest.raises(LangDMLError) as e:
        crossmodal_metrics(img, [0, 0, 1, 1], txt)
    assert "8-d" in _one_line(e) and "16-d" in _one_line(e)
    with pytest.raises(LangDMLError, match=r"classes \[5\] have no text"):
        crossmodal_metrics(np.eye(4), [0, 1, 2, 5], np.eye(4)[:3])
    with pytest.raises(LangDMLError, match="expected 4 labels"):
        crossmodal_metrics(np.eye(4), [0, 1, 2], np.eye(4))


# ------------------------------------------------------------------ chance levels


def _exact_random_ranking_expectations(num_classes: int, n: int) -> dict[str, float]:
    """Average every metric over ALL orderings of a tiny gallery (exact expectation)."""
    n_img = num_classes * n
    out: dict[str, float] = {}
    # i2t: the rank of the one relevant name is uniform over 1..C
    ranks = np.arange(1, num_classes + 1)
    out["i2t_r@1"] = float(np.mean(ranks <= 1))
    out["i2t_r@5"] = float(np.mean(ranks <= 5))
    out["i2t_map"] = float(np.mean(1 / ranks))
    # t2i: all placements of the R = n relevant images among N positions
    r1, r10, mapr, ap = [], [], [], []
    for pos in itertools.combinations(range(n_img), n):
        rel = np.zeros(n_img, bool)
        rel[list(pos)] = True
        prec = np.cumsum(rel) / np.arange(1, n_img + 1)
        r1.append(rel[:1].any())
        r10.append(rel[:10].any())
        mapr.append((prec[:n] * rel[:n]).sum() / n)
        ap.append((prec * rel).sum() / n)
    out.update({"t2i_r@1": np.mean(r1), "t2i_r@10": np.mean(r10)})
    out.update({"t2i_map@r": np.mean(mapr), "t2i_map": np.mean(ap)})
    return out


@pytest.mark.parametrize("num_classes,n", [(3, 4), (6, 2), (13, 1)])
def test_chance_levels_equal_exact_enumeration(num_classes, n):
    got = chance_levels(num_classes, n)
    want = _exact_random_ranking_expectations(num_classes, n)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_random_embeddings_score_near_chance_and_chance_is_in_the_output():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(20), 5)
    runs = [
        crossmodal_metrics(rng.normal(size=(100, 8)), y, rng.normal(size=(20, 8)))
        for _ in range(60)
    ]
    for key in ("i2t_r@5", "i2t_map", "t2i_r@10", "t2i_map"):
        mean = np.mean([r[key] for r in runs])
        assert mean == pytest.approx(runs[0][f"chance_{key}"], rel=0.15), key


def test_chance_levels_checks_its_inputs():
    with pytest.raises(LangDMLError, match="num_classes"):
        chance_levels(0, 3)
    with pytest.raises(LangDMLError, match="images_per_class"):
        chance_levels(3, [2, 0, 1])


# ------------------------------------------------------------------ text proxies


def _text(c=6, d=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(c, d, generator=g), dim=1)


@pytest.mark.parametrize(
    "cls,base_cls,kwargs",
    [
        (TextProxyAnchorLoss, ProxyAnchorLoss, {"margin": 0.2, "alpha": 16.0}),
        (TextProxyNCALoss, ProxyNCALoss, {"softmax_scale": 3.0}),
        (TextProxyNCALoss, ProxyNCALoss, {"variant": "paper"}),
    ],
)
def test_text_proxy_loss_equals_base_loss_with_projected_proxies(cls, base_cls, kwargs):
    """Same value and embedding gradient as the free-proxy loss holding g(e) as its proxies, and
    dL/dW = (dL/dP)ᵀ E for the linear projection P = E Wᵀ (chain rule through the proxies)."""
    text = _text()
    torch.manual_seed(1)
    loss = cls(text, embedding_size=8, **kwargs)
    x = torch.randn(14, 8, requires_grad=True)
    y = torch.randint(0, 6, (14,))
    value = loss(x, y)
    value.backward()

    ref = base_cls(num_classes=6, embedding_size=8, **kwargs)
    with torch.no_grad():
        ref.proxies.copy_(loss.proxies)
    x_ref = x.detach().clone().requires_grad_(True)
    ref_value = ref(x_ref, y)
    ref_value.backward()
    torch.testing.assert_close(value, ref_value)
    torch.testing.assert_close(x.grad, x_ref.grad)
    weight = loss.projection.net.weight
    torch.testing.assert_close(weight.grad, ref.proxies.grad.T @ text)
    assert weight.grad.abs().sum() > 0


def test_projection_params_are_the_proxy_parameters_and_no_free_proxies_exist():
    loss = TextProxyAnchorLoss(_text(), 8, projection="mlp")
    names = [n for n, _ in loss.named_parameters()]
    assert names and all(n.startswith("projection.") for n in names)
    assert {id(p) for p in loss.proxy_parameters()} == {id(p) for p in loss.parameters()}
    assert loss.proxies.shape == (6, 8)
    assert loss.proxy_labels.tolist() == list(range(6))
    x, y = torch.randn(10, 8), torch.randint(0, 6, (10,))
    loss(x, y).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.proxy_parameters())


def test_unseen_class_proxy_comes_from_its_name():
    loss = TextProxyNCALoss(_text(), 8)
    new_names = _text(c=3, seed=5)  # three classes never in training
    proxies = loss.project(new_names)
    assert proxies.shape == (3, 8)
    torch.testing.assert_close(proxies, new_names @ loss.projection.net.weight.T)
    # a training class's name gives back its own proxy
    torch.testing.assert_close(loss.project(_text()[2:3]), loss.proxies[2:3])


def test_text_proxy_loss_builds_like_build_loss_builds_proxy_losses():
    """build_base passes num_classes / embedding_size (class_text_embeddings come with them)."""
    text = _text()
    loss = TextProxyAnchorLoss(
        class_text_embeddings=text, num_classes=6, embedding_size=8, margin=0.1, alpha=32
    )
    combined = CombinedLoss(loss)
    x, y = torch.randn(12, 8), torch.randint(0, 6, (12,))
    assert torch.isfinite(combined(x, y))
    assert combined.proxies.shape == (6, 8)
    assert len(combined.proxy_parameters()) == 1
    keys = set(combined.state_dict())
    assert "base.projection.net.weight" in keys


def test_text_proxy_bad_inputs_are_one_line_errors():
    text = _text()
    with pytest.raises(LangDMLError) as e:
        TextProxyAnchorLoss(text, 8, num_classes=5)
    assert "6 rows" in _one_line(e)
    with pytest.raises(LangDMLError) as e:
        TextProxyAnchorLoss(text, 8).project(torch.randn(2, 7))
    assert "dimension 7, expected 10" in _one_line(e)
    with pytest.raises(LangDMLError, match="unknown text projection"):
        TextProxyAnchorLoss(text, 8, projection="cubic")
    with pytest.raises(LangDMLError, match="bad loss arguments"):
        TextProxyAnchorLoss(text, 8, softmax_scale=2)
    with pytest.raises(LangDMLError, match="label 6 >= num_classes=6"):
        TextProxyAnchorLoss(text, 8)(torch.randn(3, 8), torch.tensor([0, 1, 6]))
    with pytest.raises(LangDMLError, match="embedding_size=8"):
        TextProxyNCALoss(text, 8)(torch.randn(3, 9), torch.tensor([0, 1, 2]))


# ------------------------------------------------------------------ trainers on shared structure


def _shared_structure(num_classes=40, per_class=6, seed=0):
    """Images and names are two different noisy linear views of one latent vector per class."""
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(num_classes, 8, generator=g)
    to_image, to_text = torch.randn(8, 32, generator=g), torch.randn(8, 16, generator=g)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    images = latent[labels] @ to_image + 0.5 * torch.randn(len(labels), 32, generator=g)
    names = F.normalize(latent @ to_text + 0.1 * torch.randn(num_classes, 16, generator=g), dim=1)
    train = labels < num_classes // 2
    return images, labels, names, train


def _unseen_metrics(model, images, labels, names, train):
    half = int(labels.max()) // 2 + 1
    test_labels = labels[~train] - half
    return crossmodal_metrics(
        model.embed_images(images[~train]), test_labels, model.embed_texts(names[half:])
    )


@pytest.mark.parametrize("image_head", ["none", "linear"])
def test_learned_alignment_beats_chance_on_unseen_classes(image_head):
    images, labels, names, train = _shared_structure()
    dim = None if image_head == "none" else 16
    model = train_alignment(
        images[train],
        labels[train],
        names[:20],
        image_head=image_head,
        embedding_dim=dim,
        epochs=60,
        batch_size=64,
        lr=3e-3,
    )
    m = _unseen_metrics(model, images, labels, names, train)
    assert m["i2t_r@1"] > 5 * m["chance_i2t_r@1"]  # chance 0.05
    assert m["t2i_map@r"] > 5 * m["chance_t2i_map@r"]


@pytest.mark.parametrize("loss", ["text_proxy_anchor", "text_proxy_nca"])
def test_language_as_proxies_retrieves_unseen_classes_from_their_names(loss):
    images, labels, names, train = _shared_structure(seed=1)
    model = train_text_proxies(
        images[train],
        labels[train],
        names[:20],
        loss=loss,
        embedding_dim=16,
        epochs=60,
        batch_size=40,
        lr=3e-3,
    )
    m = _unseen_metrics(model, images, labels, names, train)
    assert m["t2i_r@1"] > 5 * m["chance_t2i_r@1"]
    assert m["i2t_r@1"] > 5 * m["chance_i2t_r@1"]


def test_untrained_text_head_is_near_chance_so_the_training_matters():
    images, labels, names, train = _shared_structure()
    model = train_alignment(images[train], labels[train], names[:20], image_head="none", epochs=0)
    m = _unseen_metrics(model, images, labels, names, train)
    assert m["i2t_r@1"] < 3 * m["chance_i2t_r@1"]


def test_trainers_check_their_inputs():
    images, labels, names, train = _shared_structure()
    with pytest.raises(LangDMLError, match="labels span"):
        train_alignment(images, labels, names[:5])
    with pytest.raises(LangDMLError, match="unknown loss"):
        train_text_proxies(images, labels, names, loss="proxy_anchor")
    with pytest.raises(LangDMLError, match="needs an image head"):
        train_alignment(images, labels, names, image_head="none", embedding_dim=8)


def test_info_nce_matches_its_formula_written_as_loops():
    g = torch.Generator().manual_seed(4)
    z = F.normalize(torch.randn(7, 5, generator=g), dim=1)
    t = F.normalize(torch.randn(4, 5, generator=g), dim=1)
    y = torch.tensor([0, 2, 2, 3, 0, 0, 2])
    tau = 0.3
    from langdml.xmodal import info_nce

    i2t = 0.0
    for i in range(7):
        logits = [float(z[i] @ t[c]) / tau for c in range(4)]
        i2t += -(logits[int(y[i])] - np.log(np.sum(np.exp(logits))))
    i2t /= 7
    t2i, present = 0.0, sorted(set(y.tolist()))
    for c in present:
        logits = [float(t[c] @ z[j]) / tau for j in range(7)]
        log_norm = np.log(np.sum(np.exp(logits)))
        pos = [j for j in range(7) if int(y[j]) == c]
        t2i += -np.mean([logits[j] - log_norm for j in pos])
    t2i /= len(present)
    assert float(info_nce(z, y, t, tau)) == pytest.approx(0.5 * (i2t + t2i), rel=1e-5)
