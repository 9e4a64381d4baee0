"""Re-ranking and the self-tuning search reach the config and the commands: eval.rerank /
eval.search auto in a run's evaluation, ``langdml evaluate --rerank / --search auto``, ``langdml
index --search auto``, and their bad combinations as one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from runkit import imagefolder_cfg

from langdml.cli import main
from langdml.config import load_config
from langdml.errors import ConfigError
from langdml.eval.metrics import retrieval_metrics
from langdml.inference.index import GalleryIndex
from langdml.train import train

SETTINGS = {
    "model.image_size": 48,
    "model.embedding_dim": 16,
    "train.epochs": 1,
    "train.batch_size": 16,
    "train.m_per_class": 2,
    "train.iterations_per_epoch": 4,
    "train.progress": False,
    "eval.clustering": False,
}


@pytest.fixture(scope="module")
def run(emoji_subset_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("search_options")
    out = root / "run"
    train(imagefolder_cfg(emoji_subset_folder, root / "cache", out, SETTINGS))
    return out


def _json(capsys, argv) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _run_embeddings(run_dir):
    from langdml.experiment import embed, open_run

    r = open_run(run_dir, "last")
    return r, embed(r.model, r.config, r.data)


def test_config_takes_rerank_and_auto_and_refuses_rerank_over_an_approximate_search():
    cfg = load_config(None, {"eval.rerank": "k_reciprocal", "eval.rerank_params": {"k1": 10}})
    assert cfg.eval.rerank == "k_reciprocal" and cfg.eval.rerank_params == {"k1": 10}
    cfg = load_config(None, {"eval.search": "auto", "eval.search_params": {"target_recall": 0.9}})
    assert cfg.eval.search == "auto"
    bad = [
        ({"eval.rerank": "qe", "eval.search": "ivf"}, "re-ranks an exact search"),
        ({"eval.rerank": "qe", "eval.rerank_params": {"k1": 3}}, "unknown parameters"),
        ({"eval.rerank": "k_reciprocal", "eval.rerank_params": {"lambda": 2}}, "lambda"),
        ({"eval.search": "auto", "eval.search_params": {"nprobe": 3}}, "unknown key"),
    ]
    for over, text in bad:
        with pytest.raises(ConfigError) as err:
            load_config(None, over)
        assert text in str(err.value), str(err.value)


@pytest.mark.parametrize("method, params", [("qe", {"n": 2}), ("k_reciprocal", {"k1": 6, "k2": 2})])
def test_evaluate_rerank_equals_the_metrics_of_the_reranked_run_embeddings(
    run, capsys, method, params
):
    argv = ["evaluate", str(run), "--rerank", method]
    argv += [arg for k, v in params.items() for arg in ("--rerank-param", f"{k}={v}")]
    got = _json(capsys, argv)
    assert got["rerank"] == method
    r, emb = _run_embeddings(run)
    want = retrieval_metrics(
        emb,
        r.data.eval.labels,
        recall_ks=tuple(r.config.eval.recall_at),
        include=("recall", "map_r", "map_1000"),
        seed=r.config.seed,
        rerank=method,
        rerank_params=params,
    )
    plain = _json(capsys, ["evaluate", str(run)])
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key
    assert any(got[k] != plain[k] for k in want), "re-ranking changed no metric"


def test_evaluate_search_auto_names_its_choice_and_matches_exact_on_a_small_set(run, capsys):
    got = _json(capsys, ["evaluate", str(run), "--search", "auto", "--target-recall", "0.99"])
    plain = _json(capsys, ["evaluate", str(run)])
    assert got["search"] == "auto" and "target 0.99" in got["search_choice"]
    assert got["neighbor_recall"] >= 0.99
    for key in ("recall@1", "map@r"):
        assert got[key] == pytest.approx(plain[key], abs=0.02)


def test_index_search_auto_reaches_its_target_and_saves_the_kind_it_chose(tmp_path):
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(300, 16, generator=g)
    x = centres.repeat_interleave(20, 0) + 0.3 * torch.randn(6000, 16, generator=g)
    index = GalleryIndex.build(x, search="auto", search_params={"target_recall": 0.9})
    choice = index.choice
    assert choice is not None and choice.recall >= 0.9
    assert {t.kind for t in choice.trials} >= {"exact"}
    assert index.search_kind[0] == choice.spec.kind
    index.save(tmp_path / "idx")
    assert GalleryIndex.load(tmp_path / "idx").search_kind == index.search_kind
    # the search it saved finds what exact search finds, at about the target recall
    q = x[torch.randperm(6000, generator=g)[:300]]
    _, found = index.search(q, 11)
    _, truth = GalleryIndex.build(x).search(q, 11)
    recall = np.mean([len(set(a) & set(b)) / 11 for a, b in zip(found, truth, strict=True)])
    assert recall >= 0.85


def test_bad_combinations_are_one_line(run, capsys):
    cases = [
        (["evaluate", str(run), "--target-recall", "0.9"], "applies to --search auto only"),
        (["evaluate", str(run), "--rerank-param", "k1=3"], "needs --rerank"),
        (["evaluate", str(run), "--rerank", "qe", "--search", "ivf"], "re-ranks an exact"),
        (["evaluate", str(run), "--rerank", "qe", "--rerank-param", "k1"], "KEY=VALUE"),
        (["evaluate", str(run), "--search", "auto", "--target-recall", "2"], "target_recall"),
    ]
    for argv, text in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and text in err, err


@pytest.fixture(scope="module")
def index(run, emoji_subset_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("search_index") / "idx"
    argv = ["index", str(run), "--images", str(emoji_subset_folder), "--no-progress"]
    assert main([*argv, "-o", str(out)]) == 0
    return out


def _lines(capsys, argv) -> list[dict]:
    assert main(argv) == 0
    return [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.strip()]


def test_search_batch_equals_single_queries(index, emoji_subset_folder, capsys):
    images = sorted(str(p) for p in emoji_subset_folder.rglob("*.png"))
    picked = [images[3], images[40], images[77]]
    batch = _lines(capsys, ["search", str(index), "--image", *picked, "-k", "5", "--json"])
    assert [b["query"] for b in batch] == picked
    for one, path in zip(batch, picked, strict=True):
        (single,) = _lines(capsys, ["search", str(index), "--image", path, "-k", "5", "--json"])
        assert [h["path"] for h in one["results"]] == [h["path"] for h in single["results"]]
        for a, b in zip(one["results"], single["results"], strict=True):
            assert a["score"] == pytest.approx(b["score"], abs=1e-5)
    folder = _lines(capsys, ["search", str(index), "--images", str(emoji_subset_folder), "--json"])
    assert [f["query"] for f in folder] == images
    assert main(["search", str(index), "--image", *picked, "-k", "2"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert [t for t in text if t.startswith("query ")] == [f"query {p}" for p in picked]


@pytest.mark.parametrize("method, params", [("qe", {"n": 3}), ("k_reciprocal", {"k1": 8})])
def test_search_rerank_equals_rerank_over_the_gallery(index, run, capsys, method, params):
    from langdml.eval.rerank import check_rerank, rerank_search
    from langdml.inference.index import GalleryIndex
    from langdml.inference.run import load_run

    gallery = GalleryIndex.load(index)
    queries = gallery.table.paths[:4]
    argv = ["search", str(index), "--image", *queries, "-k", "6", "--json", "--rerank", method]
    argv += [a for k, v in params.items() for a in ("--rerank-param", f"{k}={v}")]
    got = _lines(capsys, argv)
    q = load_run(run, "last").embed(queries)
    scores, rows = rerank_search(
        q,
        gallery.table.embeddings,
        6,
        spec=check_rerank(method, params),
        metric="cosine",
        device="cpu",
    )
    for n, found in enumerate(got):
        assert found["search"]["rerank"]["method"] == method
        assert [h["path"] for h in found["results"]] == [gallery.table.paths[i] for i in rows[n]]
        assert [h["score"] for h in found["results"]] == pytest.approx(scores[n], abs=1e-5)
    plain = _lines(capsys, ["search", str(index), "--image", *queries, "-k", "6", "--json"])
    assert (
        any(
            [h["path"] for h in a["results"]] != [h["path"] for h in b["results"]]
            for a, b in zip(got, plain, strict=True)
        )
        or method == "qe"
    ), "k-reciprocal re-ranking changed no list"


def test_search_bad_batch_and_rerank_input_is_one_line(
    index, run, emoji_subset_folder, tmp_path, capsys
):
    hnsw = tmp_path / "hnsw"
    argv = ["index", str(run), "--images", str(emoji_subset_folder), "--no-progress"]
    assert main([*argv, "--search", "hnsw", "-o", str(hnsw)]) == 0
    gallery = str(sorted(emoji_subset_folder.rglob("*.png"))[0])
    cases = [
        (["search", str(hnsw), "--image", gallery, "--rerank", "qe"], "re-ranks an exact search"),
        (["search", str(index), "--images", str(tmp_path / "none")], "not a directory"),
        (["search", str(index), "--images", str(tmp_path)], "holds no image files"),
        (["search", str(index), "--image", str(tmp_path)], "use --images DIR"),
        (["search", str(index), "--image", gallery, "--rerank-param", "n=2"], "needs --rerank"),
    ]
    capsys.readouterr()
    for argv, text in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and text in err, err
