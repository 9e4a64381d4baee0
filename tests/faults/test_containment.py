"""Containment: names and ids read from files stay inside their folder (absolute, ``..`` and
symlinked ones are refused in one line); matplotlib never parses a class name or arm label as
mathtext."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import yaml
from faultkit import one_line
from PIL import Image

from langdml.cli import main
from langdml.errors import DataError, LangDMLError


@pytest.mark.parametrize("name", ["../../x", "/abs/x", "a/../../b", "a\nb"])
def test_run_name_keeps_the_run_folder_inside_runs(name, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"name": name}))
    assert main(["train", str(cfg)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "config key 'name'" in line and "is refused" in line
    assert not (tmp_path / "x").exists() and not Path("/abs").exists()


@pytest.mark.parametrize("name", ["ok", "group/sub"])
def test_plain_run_names_are_accepted(name):
    from langdml.config import load_config

    assert load_config(None, {"name": name}).run_dir() == Path("runs") / name


def test_inside_refuses_absolute_dotdot_and_links_out(tmp_path):
    from langdml.paths import inside

    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    os.symlink(tmp_path, root / "out")
    os.symlink(root / "real", root / "alias")
    assert inside(root, "real", "id") == root / "real"
    assert inside(root, "alias", "id") == root / "alias"  # a link that stays inside is fine
    for bad, why in [
        (str(tmp_path / "x"), "absolute"),
        ("../x", "'..'"),
        ("real/../../x", "'..'"),
        ("out", "outside"),
        ("out/y", "outside"),
        ("", "empty"),
    ]:
        with pytest.raises(LangDMLError, match=why):
            inside(root, bad, "run id in results.csv")


def _cub(parent: Path, entries: list[str]) -> Path:
    root = parent / "CUB_200_2011"
    (root / "images" / "001.A").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "images" / "001.A" / "a.jpg")
    (root / "images.txt").write_text("".join(f"{i + 1} {e}\n" for i, e in enumerate(entries)))
    labels = "".join(f"{i + 1} 1\n" for i in range(len(entries)))
    (root / "image_class_labels.txt").write_text(labels)
    (root / "classes.txt").write_text("1 001.A\n")
    return root


@pytest.mark.parametrize(
    "entry, why", [("../../secret.jpg", "'..'"), ("001.A/../../../s.jpg", "'..'")]
)
def test_split_file_entries_stepping_out_are_refused(tmp_path, entry, why):
    from langdml.data import load_dataset

    (tmp_path / "secret.jpg").write_bytes(b"")
    root = _cub(tmp_path, ["001.A/a.jpg", entry])
    with pytest.raises(DataError, match=f"images.txt lists .*{why}"):
        load_dataset(f"cub200:{root}")


def test_split_file_entry_through_a_folder_link_out_is_refused(tmp_path):
    from langdml.data import load_dataset

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.new("RGB", (8, 8)).save(outside / "b.jpg")
    root = _cub(tmp_path, ["001.A/a.jpg", "001.A/link/b.jpg"])
    os.symlink(outside, root / "images" / "001.A" / "link")
    with pytest.raises(DataError, match="a link to .*outside the dataset root"):
        load_dataset(f"cub200:{root}")
    (root / "images.txt").write_text("1 001.A/a.jpg\n")  # the same dataset without the entry
    (root / "image_class_labels.txt").write_text("1 1\n")
    assert len(load_dataset(f"cub200:{root}")) == 1


def _fake_ablation(tmp_path: Path, run_ids: list[str]) -> Path:
    folder = tmp_path / "abl"
    (folder / "runs").mkdir(parents=True)
    with open(folder / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["run_id", "status", "recall@1"])
        writer.writeheader()
        writer.writerows({"run_id": r, "status": "ok", "recall@1": "0.5"} for r in run_ids)
    return folder


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink"])
def test_report_refuses_run_ids_outside_runs(tmp_path, capsys, kind):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "config.yaml").write_text("name: v\n")
    run_id = {"absolute": str(victim), "dotdot": "../../victim", "symlink": "link"}[kind]
    folder = _fake_ablation(tmp_path, [run_id])
    if kind == "symlink":
        os.symlink(victim, folder / "runs" / "link")
    assert main(["report", str(folder), "--cell-reports"]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"run id in {folder / 'results.csv'}" in line and "is refused" in line
    assert not (victim / "report.html").exists() and not (folder / "report.html").exists()


def test_report_refuses_a_plan_naming_a_run_outside(tmp_path, capsys):
    import json

    folder = _fake_ablation(tmp_path, [])
    (folder / "plan.json").write_text(json.dumps({"runs": [{"run_id": "../x", "epochs": 1}]}))
    assert main(["report", str(folder)]) == 2
    assert "plan.json" in one_line(capsys.readouterr().err)


MATH = r"$\undefinedcmd$ & $x^$"


def test_mathtext_in_class_names_is_drawn_as_text(tmp_path):
    import numpy as np

    from langdml.inference import report_plots

    png = report_plots.heatmaps(np.eye(2), np.eye(2), [MATH, "$a_$"])
    assert png and report_plots.learning_curves([{"epoch": 1, f"loss {MATH}": 1.0}])


def test_mathtext_in_arm_labels_is_drawn_as_text(tmp_path):
    from langdml.ablation.report import plot

    nan = (float("nan"), float("nan"))
    cells = [
        {"base": MATH, "regularizers": "$\\bad$", "other": "-"} | {"recall@1": (0.5, 0.1)},
        {"base": MATH, "regularizers": "none", "other": "$x^$"} | {"recall@1": nan},
    ]
    cells[0]["map@r"], cells[1]["map@r"] = (0.3, 0.0), nan
    assert plot(cells, tmp_path / "p.png").is_file()


@pytest.mark.parametrize("name", ["../outside.bin", "/etc/hostname", "sub/../../x"])
def test_manifests_naming_files_outside_their_folder_are_not_trusted(tmp_path, name):
    import json

    from langdml.data.saved import META, verify_built
    from langdml.text.packaged import MANIFEST, folder_is_complete

    (tmp_path / "outside.bin").write_bytes(b"x")
    built = tmp_path / "built"
    built.mkdir()
    (built / META).write_text(json.dumps({"files": {name: {"size": 1, "sha256": "0" * 64}}}))
    assert "outside" in verify_built(built)
    model = tmp_path / "model"
    model.mkdir()
    (model / MANIFEST).write_text(json.dumps({"sizes": {name: 1}}))
    assert not folder_is_complete(model)


def test_ablate_with_a_mathtext_arm_label_writes_its_plot(tmp_path, capsys):
    from faultkit import make_folder

    images = make_folder(tmp_path / "images")
    base = {
        "data": {"dataset": f"imagefolder:{images}", "cache_dir": str(tmp_path / "cache")},
        "model": {"image_size": 32, "embedding_dim": 16},
        "train": {"epochs": 1, "batch_size": 8, "m_per_class": 2, "iterations_per_epoch": 1},
        "eval": {"clustering": False, "every": 1},
    }
    arms = {MATH: {"optimizer.lr": 0.002}, "plain": {"optimizer.lr": 0.001}}
    abl = {"base": base, "output_dir": str(tmp_path / "abl"), "seeds": [0], "grid": {"arm": arms}}
    path = tmp_path / "abl.yaml"
    path.write_text(yaml.safe_dump(abl))
    assert main(["ablate", str(path), "--no-progress"]) == 0
    assert (tmp_path / "abl" / "results.png").stat().st_size > 0
    assert main(["report", str(tmp_path / "abl")]) == 0
    assert MATH.replace("&", "&amp;") in (tmp_path / "abl" / "report.html").read_text()
