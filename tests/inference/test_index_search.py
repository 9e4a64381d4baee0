"""GalleryIndex with approximate faiss indexes: equal to exact search when the index is searched
exhaustively, the kind and parameters survive save/load, bad parameters are one clear line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from langdml.errors import LangDMLError
from langdml.inference.index import GalleryIndex


@pytest.fixture(scope="module")
def gallery():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(40, 12, generator=g)
    x = centres.repeat_interleave(10, 0) + 0.5 * torch.randn(400, 12, generator=g)
    q = centres[:7] + 0.5 * torch.randn(7, 12, generator=g)
    return x, q


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize(
    "search, params",
    [("hnsw", {"efSearch": 400}), ("ivf", {"nlist": 8, "nprobe": 8})],
)
def test_exhaustive_approximate_index_equals_exact(gallery, metric, search, params):
    x, q = gallery
    exact = GalleryIndex.build(x, metric)
    approx = GalleryIndex.build(x, metric, search=search, search_params=params)
    assert approx.search_kind[0] == search and exact.search_kind == ("exact", {})
    d0, i0 = exact.search(q, k=10)
    d1, i1 = approx.search(q, k=10)
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_allclose(d1, d0, rtol=1e-5, atol=1e-5)


def test_kind_and_search_time_parameters_survive_save_and_load(gallery, tmp_path):
    x, q = gallery
    index = GalleryIndex.build(x, search="hnsw", search_params={"M": 8, "efSearch": 50})
    index.save(tmp_path / "idx")
    back = GalleryIndex.load(tmp_path / "idx")
    assert back.search_kind == ("hnsw", {"M": 8, "efConstruction": 80, "efSearch": 50})
    back.set_search_params({"efSearch": 300})
    assert back.search_kind[1]["efSearch"] == 300
    np.testing.assert_array_equal(back.search(q, 5)[1], index.search(q, 5)[1])
    ivf = GalleryIndex.build(x, search="ivf", search_params={"nlist": 8, "nprobe": 2})
    ivf.save(tmp_path / "ivf")
    assert GalleryIndex.load(tmp_path / "ivf").search_kind == ("ivf", {"nlist": 8, "nprobe": 2})


def test_bad_parameters_are_one_line(gallery):
    x, _ = gallery
    cases = [
        (lambda: GalleryIndex.build(x, search="hnsw", search_params={"nprobe": 4}), "unknown key"),
        (lambda: GalleryIndex.build(x, search="annoy"), "search must be one of"),
        (lambda: GalleryIndex.build(x[:0], search="hnsw"), "non-empty gallery"),
        (lambda: GalleryIndex.build(x).set_search_params({"efSearch": 9}), "exact index has none"),
    ]
    hnsw = GalleryIndex.build(x, search="hnsw", search_params={"M": 8})
    ivf = GalleryIndex.build(x, search="ivf", search_params={"nlist": 8})
    cases += [
        (lambda: hnsw.set_search_params({"nprobe": 2}), "expected efSearch"),
        (lambda: hnsw.set_search_params({"efSearch": 0}), "integer >= 1"),
        (lambda: ivf.set_search_params({"nprobe": 9}), "exceeds the index's nlist=8"),
    ]
    for make, text in cases:
        with pytest.raises(LangDMLError) as err:
            make()
        assert text in str(err.value) and "\n" not in str(err.value)
