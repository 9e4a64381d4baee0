"""Using a trained run: the Python API, embed / index / search / export, bad input as one line."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from runkit import imagefolder_cfg

from langdml.cli import main
from langdml.train import train

SETTINGS = {
    "model.image_size": 48,
    "model.embedding_dim": 16,
    "train.epochs": 2,
    "train.batch_size": 16,
    "train.m_per_class": 2,
    "train.iterations_per_epoch": 6,
    "train.progress": False,
    "eval.every": 2,
}


def _cfg(folder, cache, out, **over):
    return imagefolder_cfg(folder, cache, out, SETTINGS, **over)


@pytest.fixture(scope="module")
def runs(emoji_subset_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("inference_runs")
    cache = root / "cache"
    train(_cfg(emoji_subset_folder, cache, root / "plain"))
    train(_cfg(emoji_subset_folder, cache, root / "tp", **{"loss.base.name": "text_proxy_anchor"}))
    return {"plain": root / "plain", "tp": root / "tp", "folder": emoji_subset_folder}


def _one_error_line(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("langdml: error:"), err
    return err


def test_api_embeddings_equal_the_runs_own(runs):
    from langdml.experiment import embed
    from langdml.inference import load_run

    run = load_run(runs["plain"])
    reference = embed(run.model, run.config, run.data)  # the test split, cached features
    test_set = run.data.eval
    assert torch.allclose(run.embed_dataset(test_set), reference, atol=1e-5)
    files = [test_set.images.items[i] for i in range(5)]  # image files through the full tower
    assert torch.allclose(run.embed(files, batch_size=2), reference[:5], atol=1e-4)
    scores, rows = run.search(run.embed(files[:1]), reference, k=3)
    assert rows[0][0] == 0 and scores[0][0] == pytest.approx(1.0, abs=1e-4)
    assert run.fingerprint()["checkpoint_sha256"] and run.preprocessing()["image_size"] == 48


def test_embed_file_holds_embeddings_labels_paths(runs, tmp_path, capsys):
    from langdml.inference import load_embeddings

    out = tmp_path / "e.safetensors"
    spec = f"imagefolder:{runs['folder']}"
    argv = ["embed", str(runs["plain"]), "--dataset", spec, "--no-progress", "-o", str(out)]
    assert main([*argv, "--split", "test"]) == 0
    table = load_embeddings(out)
    n = len(table.paths)
    assert table.embeddings.shape == (n, 16) and len(table.labels) == n
    assert all(Path(p).is_file() for p in table.paths)
    assert len(table.class_names) == 12 and set(table.labels.tolist()) == set(range(12))
    assert table.fingerprint["config_sha256"]
    assert main([*argv, "--split", "all"]) == 0
    assert len(load_embeddings(out).class_names) == 24


def test_index_and_search_by_image(runs, tmp_path, capsys):
    idx = tmp_path / "idx"
    folder = runs["folder"]
    assert (
        main(
            ["index", str(runs["plain"]), "--images", str(folder), "--no-progress", "-o", str(idx)]
        )
        == 0
    )
    query = sorted(folder.rglob("*.png"))[7]
    capsys.readouterr()
    assert main(["search", str(idx), "--image", str(query), "-k", "4", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    hits = found["results"]
    assert len(hits) == 4 and hits[0]["path"] == str(query)
    assert hits[0]["class_name"] == query.parent.name and hits[0]["score"] == pytest.approx(1, 1e-4)
    assert main(["search", str(idx), "--image", str(query)]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 10


def test_approximate_index_finds_what_exact_finds(runs, tmp_path, capsys):
    folder = runs["folder"]
    base = ["index", str(runs["plain"]), "--images", str(folder), "--no-progress"]
    assert main([*base, "-o", str(tmp_path / "exact")]) == 0
    hnsw = ["--search", "hnsw", "--search-param", "M=8"]
    assert main([*base, *hnsw, "-o", str(tmp_path / "h")]) == 0
    assert "hnsw index (M 8, efConstruction 80, efSearch 128)" in capsys.readouterr().out
    query = str(sorted(folder.rglob("*.png"))[3])
    found = {}
    for name, extra in (("exact", []), ("h", ["--search-param", "efSearch=500"])):
        argv = ["search", str(tmp_path / name), "--image", query, "-k", "5", "--json", *extra]
        assert main(argv) == 0
        found[name] = json.loads(capsys.readouterr().out)
    assert found["h"]["search"] == {"kind": "hnsw", "M": 8, "efConstruction": 80, "efSearch": 500}
    assert found["exact"]["search"] == {"kind": "exact"}
    assert [h["path"] for h in found["h"]["results"]] == [
        h["path"] for h in found["exact"]["results"]
    ]
    assert main(["search", str(tmp_path / "h"), "--image", query, "-k", "2"]) == 0
    assert capsys.readouterr().out.startswith("approximate hnsw index (M 8")
    err = _one_error_line(
        capsys,
        [*base, "--search", "hnsw", "--search-param", "nprobe=3", "-o", str(tmp_path / "bad")],
    )
    assert "unknown key 'nprobe'" in err and not (tmp_path / "bad").exists()
    err = _one_error_line(
        capsys, ["search", str(tmp_path / "h"), "--image", query, "--search-param", "nprobe=2"]
    )
    assert "cannot change on a built hnsw index" in err


def test_search_by_class_name_on_a_text_proxy_run(runs, tmp_path, capsys):
    from langdml.inference import load_run

    run = load_run(runs["tp"])
    names = run.data.train.class_names[:3]
    text = run.embed_text(names)
    assert text.shape == (3, 16) and torch.allclose(text.norm(dim=1), torch.ones(3), atol=1e-5)
    idx = tmp_path / "idx"
    spec = f"imagefolder:{runs['folder']}"
    assert (
        main(
            [
                "index",
                str(runs["tp"]),
                "--dataset",
                spec,
                "--split",
                "all",
                "--no-progress",
                "-o",
                str(idx),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["search", str(idx), "--text", names[0], "-k", "3", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 3


def test_search_on_an_existing_index_never_loads_the_runs_dataset(
    runs, tmp_path, capsys, monkeypatch
):
    idx = tmp_path / "idx"
    spec = f"imagefolder:{runs['folder']}"
    assert main(["index", str(runs["tp"]), "--dataset", spec, "--no-progress", "-o", str(idx)]) == 0
    name = sorted(p.name for p in runs["folder"].iterdir())[-1]  # a test class
    query = str(sorted((runs["folder"] / name).glob("*.png"))[0])

    def poisoned(*args, **kwargs):
        raise AssertionError("search loaded a dataset")

    import langdml.data
    import langdml.experiment.reopen
    import langdml.experiment.run_data

    monkeypatch.setattr(langdml.data, "load_dataset", poisoned)
    monkeypatch.setattr(langdml.experiment.run_data, "load_dataset", poisoned)
    monkeypatch.setattr(langdml.experiment.reopen, "prepare_data", poisoned)
    capsys.readouterr()
    for query_args in (["--image", query], ["--text", name]):
        assert main(["search", str(idx), *query_args, "-k", "3", "--json"]) == 0
        hits = json.loads(capsys.readouterr().out)["results"]
        assert len(hits) == 3 and all(Path(h["path"]).is_file() for h in hits)
    assert hits[0]["class_name"] in {p.name for p in runs["folder"].iterdir()}


@pytest.mark.parametrize("fmt,suffix", [("torchscript", ".pt"), ("onnx", ".onnx")])
def test_export_reloads_with_the_runs_embeddings(runs, tmp_path, fmt, suffix):
    if fmt == "onnx":
        pytest.importorskip("onnx")
    from langdml.inference import load_run
    from langdml.inference.export import card_path, run_exported
    from langdml.inference.run import open_image
    from langdml.models.transforms import transform_batch

    out = tmp_path / f"model{suffix}"
    assert main(["export", str(runs["plain"]), "--format", fmt, "-o", str(out)]) == 0
    card = json.loads(card_path(out).read_text())
    assert card["preprocessing"]["image_size"] == 48 and len(card["preprocessing"]["mean"]) == 3
    assert card["format"] == fmt and card["metrics"]["final"]["recall@1"] >= 0
    run = load_run(runs["plain"])
    files = sorted(runs["folder"].rglob("*.png"))[:3]
    x = transform_batch(run.transform(), [open_image(f) for f in files])
    assert torch.allclose(run_exported(out, x), run.embed(files), atol=1e-4)


def test_bad_input_is_one_line(runs, tmp_path, capsys):
    empty = tmp_path / "no_ckpt"
    empty.mkdir()
    shutil.copy(runs["plain"] / "config.yaml", empty / "config.yaml")
    err = _one_error_line(capsys, ["export", str(empty), "--format", "onnx", "-o", "x.onnx"])
    assert "no checkpoint.pt" in err
    err = _one_error_line(capsys, ["export", str(runs["plain"]), "--format", "tflite", "-o", "x"])
    assert "unknown export format 'tflite'" in err
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    idx = tmp_path / "idx"
    argv = ["index", str(runs["plain"]), "--images", str(runs["folder"]), "--no-progress"]
    assert main([*argv, "-o", str(idx)]) == 0
    assert "is not an image" in _one_error_line(capsys, ["search", str(idx), "--image", str(bad)])
    err = _one_error_line(capsys, ["search", str(idx), "--text", "dog face"])
    assert "has no text side" in err
    err = _one_error_line(capsys, ["search", str(tmp_path), "--image", "q"])
    assert "not an index folder" in err


CHROMIUM = "/usr/bin/chromium"


def test_report_is_one_self_contained_page(runs, tmp_path, capsys):
    out = tmp_path / "tp.html"
    assert main(["report", str(runs["tp"]), "-o", str(out), "--queries", "4", "-k", "3"]) == 0
    page = out.read_text()
    for part in (
        "Headline metrics",
        "raw features",
        "Learning curves",
        "top-3 neighbours",
        "Worst and best",
        "t-SNE",
        "image vs name similarity",
    ):
        assert part in page, part
    assert page.count('class="cell q"') == 4 and page.count("data:image/png;base64,") > 16
    assert 'src="http' not in page and 'src="file' not in page  # nothing outside the file
    plain = tmp_path / "plain.html"
    assert main(["report", str(runs["plain"]), "-o", str(plain)]) == 0
    assert "image vs name similarity" not in plain.read_text()  # no language guidance


@pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"no {CHROMIUM}: install Debian's chromium (scripts/setup.sh does as root with apt)",
)
def test_report_renders_with_pictures_in_headless_chromium(runs, tmp_path):
    import subprocess

    import numpy as np
    from PIL import Image

    page, shot = tmp_path / "report.html", tmp_path / "shot.png"
    assert main(["report", str(runs["plain"]), "-o", str(page)]) == 0
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            f"--screenshot={shot}",
            "--window-size=1200,2000",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.is_file(), proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []
    grid = np.asarray(Image.open(shot).convert("RGB"))[460:900, 30:800]
    # loaded pictures: thousands of colours (a page of broken images has a few hundred)
    assert len(np.unique(grid.reshape(-1, 3), axis=0)) > 2000
    green = (grid[..., 1] > 130) & (grid[..., 0] < 60) & (grid[..., 2] < 80)
    blue = (grid[..., 2] > 160) & (grid[..., 0] < 60)
    assert blue.sum() > 100 and green.sum() + ((grid[..., 0] > 180) & (grid[..., 1] < 60)).sum()


def test_ablation_report_has_table_plot_and_cell_links(runs, tmp_path, capsys):
    folder = tmp_path / "abl"
    shutil.copytree(runs["plain"], folder / "runs" / "cell-a-seed0-x")
    (folder / "results.csv").write_text(
        "run_id,cell_id,seed,loss.base.name,loss.regularizers,status,recall@1\n"
        "cell-a-seed0-x,cell-a,0,multi_similarity,none,ok,0.5\n"
    )
    (folder / "results.md").write_text(
        "# Ablation: t\n\n| base loss | R@1 |\n|---|---|\n| ms | **50.0** |\n"
    )
    assert main(["report", str(folder), "--cell-reports"]) == 0
    page = (folder / "report.html").read_text()
    assert "<b>50.0</b>" in page and 'href="runs/cell-a-seed0-x/report.html"' in page
    assert (folder / "runs" / "cell-a-seed0-x" / "report.html").is_file()
