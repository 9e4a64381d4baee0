"""``langdml init``: the README's "own images" commands run as written on a small folder; the
starter configs load, fit the batch to the train classes and carry their split file; bad input is
one line."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from langdml.cli import main
from langdml.config import load_config
from langdml.data import load_dataset
from langdml.data.split_file import read_split_file

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## On your own images") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    lines = [line.split("#")[0].strip() for line in block.splitlines()]
    return [line for line in lines if line.startswith("langdml ")]


def test_readme_own_images_commands_work_as_written(
    emoji_subset_folder, tmp_path, monkeypatch, capsys
):
    commands = _readme_commands()
    assert [c.split()[1] for c in commands] == ["init", "train", "report"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_photos").symlink_to(emoji_subset_folder, target_is_directory=True)
    for line in commands:
        assert main(shlex.split(line)[1:]) == 0, line
    run = tmp_path / "runs" / "my_experiment"
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["final"]["recall@1"] <= 1.0
    assert metrics["best"], "the split file's validation classes pick a best epoch"
    assert (run / "report.html").stat().st_size > 1000
    # the run trained and evaluated on the split file's classes
    cfg = load_config(tmp_path / "my_experiment.yaml")
    split = Path(cfg.data.split_file)
    assert split.is_file() and split.name == "my_experiment_split.csv"
    assert metrics["eval_split"] == "val"  # training reports the classes that pick best.pt
    capsys.readouterr()
    assert main(["evaluate", str(run), "--split", "test"]) == 0
    held_out = json.loads(capsys.readouterr().out)
    assert held_out["split"] == "test" and 0.0 <= held_out["recall@1"] <= 1.0


def test_starter_configs_fit_the_dataset_and_load(emoji_subset_folder, tmp_path, capsys):
    spec = f"imagefolder:{emoji_subset_folder}"
    n_classes = len(load_dataset(spec).class_names)
    for gpu in (False, True):
        out = tmp_path / ("gpu.yaml" if gpu else "cpu.yaml")
        assert main(["init", spec, "-o", str(out)] + ["--gpu"] * gpu) == 0
        assert "langdml train" in capsys.readouterr().out
        text = out.read_text()
        assert text.startswith("# Starter experiment")  # commented for the reader
        cfg = load_config(out)
        rows = read_split_file(cfg.data.split_file).rows
        parts = {}
        for row in rows:
            parts.setdefault(row.split, set()).add(row.label)
        assert set(parts) == {"train", "val", "test"}
        assert not (parts["train"] & parts["test"]) and not (parts["val"] & parts["test"])
        assert sum(map(len, parts.values())) == n_classes
        # the batch never asks for more classes than training has
        assert cfg.train.batch_size // cfg.train.m_per_class <= len(parts["train"])
        if gpu:
            assert cfg.train.device == "cuda" and cfg.model.trainable_blocks == "all"
            assert cfg.train.amp and cfg.model.image_size == 224
        else:
            assert cfg.train.device == "cpu" and cfg.model.trainable_blocks == 0
            assert cfg.model.weights == "packaged"
    out = tmp_path / "partial.yaml"
    assert main(["init", spec, "-o", str(out), "--trainable-blocks", "2"]) == 0
    assert yaml.safe_load(out.read_text())["model"]["trainable_blocks"] == 2


@pytest.mark.parametrize(
    "extra, text",
    [
        (["-o", "exp.txt"], "expected a .yaml file"),
        (["--trainable-blocks", "many"], "--trainable-blocks 'many'"),
        (["--trainable-blocks", "-1"], "at least 0"),
    ],
)
def test_bad_init_input_is_one_line(
    emoji_subset_folder, tmp_path, capsys, monkeypatch, extra, text
):
    monkeypatch.chdir(tmp_path)
    assert main(["init", f"imagefolder:{emoji_subset_folder}", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and text in err, err


def test_existing_files_are_kept_unless_forced(emoji_subset_folder, tmp_path, capsys):
    out = tmp_path / "exp.yaml"
    out.write_text("mine\n")
    assert main(["init", f"imagefolder:{emoji_subset_folder}", "-o", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_text() == "mine\n"
    assert main(["init", f"imagefolder:{emoji_subset_folder}", "-o", str(out), "--force"]) == 0
    assert load_config(out).data.split_file.endswith("exp_split.csv")
