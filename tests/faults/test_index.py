"""Fault injection on index folders and the commands around them: every combination of foreign,
damaged or missing files is one line naming the file; a moved run is found with --run-dir;
outputs that cannot be written are refused before the work."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
from faultkit import make_folder, one_line, tiny_cfg

from langdml.cli import main
from langdml.train import train


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two runs (seeds 0 and 1) on one tiny folder, an index of each, and an index of half the
    images built with run 0."""
    root = tmp_path_factory.mktemp("faults_index")
    images = make_folder(root / "images")
    runs = {}
    for seed in (0, 1):
        cfg = tiny_cfg(images, root, output_dir=str(root / f"run{seed}"), seed=seed)
        train(cfg)
        runs[seed] = root / f"run{seed}"
    half = root / "half"
    for c in range(4):
        shutil.copytree(images / f"class_{c}", half / f"class_{c}")
    idx = {}
    for name, run, folder in (("a", runs[0], images), ("b", runs[1], images), ("h", runs[0], half)):
        argv = ["index", str(run), "--images", str(folder), "--no-progress", "-o"]
        assert main([*argv, str(root / f"idx_{name}")]) == 0
        idx[name] = root / f"idx_{name}"
    query = str(images / "class_0" / "0.png")
    return {"root": root, "runs": runs, "idx": idx, "images": images, "query": query}


def _copy_index(setup, tmp_path, name="a") -> Path:
    out = tmp_path / f"copy_{name}"
    shutil.copytree(setup["idx"][name], out)
    return out


def _search_error(capsys, index: Path, query: str, *extra: str) -> str:
    assert main(["search", str(index), "--image", query, "--json", *extra]) == 2
    return one_line(capsys.readouterr().err)


def _search(capsys, index: Path, query: str, *extra: str) -> list[dict]:
    assert main(["search", str(index), "--image", query, "--json", "-k", "5", *extra]) == 0
    return json.loads(capsys.readouterr().out)["results"]


@pytest.mark.parametrize(
    "damage, names",
    [
        ("faiss_of_another_run", "index.faiss"),  # same dimension, other run's embeddings
        ("gallery_of_another_index", "gallery.safetensors"),
        ("smaller_gallery", "gallery.safetensors"),
        ("truncated_faiss", "index.faiss"),
        ("random_faiss", "index.faiss"),
        ("no_manifest", "manifest.json"),
        ("manifest_not_json", "manifest.json"),
        ("manifest_rows_edited", "gallery.safetensors"),
        ("no_faiss", "index.faiss"),
    ],
)
def test_no_combination_of_index_files_searches_silently(setup, tmp_path, capsys, damage, names):
    idx = _copy_index(setup, tmp_path)
    other, half = setup["idx"]["b"], setup["idx"]["h"]
    if damage == "faiss_of_another_run":
        shutil.copy(other / "index.faiss", idx / "index.faiss")
    elif damage == "gallery_of_another_index":
        shutil.copy(other / "gallery.safetensors", idx / "gallery.safetensors")
    elif damage == "smaller_gallery":
        shutil.copy(half / "gallery.safetensors", idx / "gallery.safetensors")
    elif damage == "truncated_faiss":
        blob = (idx / "index.faiss").read_bytes()
        (idx / "index.faiss").write_bytes(blob[: len(blob) // 2])
    elif damage == "random_faiss":
        (idx / "index.faiss").write_bytes(os.urandom(4096))
    elif damage == "no_manifest":
        (idx / "manifest.json").unlink()
    elif damage == "manifest_not_json":
        (idx / "manifest.json").write_text("{not json")
    elif damage == "manifest_rows_edited":
        manifest = json.loads((idx / "manifest.json").read_text())
        manifest["rows"] -= 1
        (idx / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "no_faiss":
        (idx / "index.faiss").unlink()
    line = _search_error(capsys, idx, setup["query"])
    assert str(idx / names) in line, line


def test_a_foreign_gallery_is_refused_even_under_a_recomputed_manifest(setup, tmp_path, capsys):
    """A manifest whose checksums were recomputed over a foreign gallery still disagrees with
    the faiss index (row count) or with the run (fingerprint)."""
    from langdml.io import file_sha256

    idx = _copy_index(setup, tmp_path)
    shutil.copy(setup["idx"]["h"] / "gallery.safetensors", idx / "gallery.safetensors")
    manifest = json.loads((idx / "manifest.json").read_text())
    gallery = idx / "gallery.safetensors"
    manifest["files"]["gallery.safetensors"] = {
        "size": gallery.stat().st_size,
        "sha256": file_sha256(gallery),
    }
    (idx / "manifest.json").write_text(json.dumps(manifest))
    line = _search_error(capsys, idx, setup["query"])
    assert "gallery.safetensors" in line and "manifest says" in line


def test_index_into_an_existing_index_folder_replaces_it_whole(setup, tmp_path, capsys):
    idx = _copy_index(setup, tmp_path)
    before = {r["path"] for r in _search(capsys, idx, setup["query"])}
    argv = ["index", str(setup["runs"][0]), "--images", str(setup["root"] / "half")]
    assert main([*argv, "--no-progress", "-o", str(idx)]) == 0
    capsys.readouterr()
    after = _search(capsys, idx, setup["query"])
    assert all("/half/" in r["path"] for r in after) and before != {r["path"] for r in after}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy_a"]  # no temporary folders left


def test_index_into_a_folder_holding_other_files_is_refused_untouched(
    setup, tmp_path, monkeypatch, capsys
):
    target = tmp_path / "notes"
    target.mkdir()
    (target / "thesis.tex").write_text("keep me")

    def no_run(*args, **kwargs):
        raise AssertionError("the run was loaded before the output folder was checked")

    monkeypatch.setattr("langdml.inference.run.load_run", no_run)
    argv = ["index", str(setup["runs"][0]), "--images", str(setup["images"]), "--no-progress"]
    assert main([*argv, "-o", str(target)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "is not an index folder" in line and "thesis.tex" in line
    assert [p.name for p in target.iterdir()] == ["thesis.tex"]


def test_a_moved_run_names_the_index_and_is_found_with_run_dir(setup, tmp_path, capsys):
    """An index built without its tower reopens the run, so a moved run is one line."""
    from langdml.train import train as train_run

    images = setup["images"]
    run = tmp_path / "run"
    train_run(tiny_cfg(images, tmp_path, output_dir=str(run)))
    idx = tmp_path / "idx"
    argv = ["index", str(run), "--images", str(images), "--no-progress", "--no-tower"]
    assert main([*argv, "-o", str(idx)]) == 0
    assert not (idx / "tower.pt").exists()
    capsys.readouterr()
    before = _search(capsys, idx, setup["query"])
    moved = tmp_path / "moved"
    run.rename(moved)
    line = _search_error(capsys, idx, setup["query"])
    assert str(run) in line and str(idx / "gallery.safetensors") in line and "--run-dir" in line
    assert _search(capsys, idx, setup["query"], "--run-dir", str(moved)) == before
    line = _search_error(capsys, idx, setup["query"], "--run-dir", str(setup["runs"][1]))
    assert "is not the run the index was built with" in line


@pytest.mark.parametrize(
    "extra, words",
    [
        (["-k", "-3"], "-k must be at least 1 (neighbours to return), got -3"),
        (["-k", "0"], "-k must be at least 1 (neighbours to return), got 0"),
    ],
)
def test_search_bounds_are_one_line(setup, capsys, extra, words):
    assert words in _search_error(capsys, setup["idx"]["a"], setup["query"], *extra)


def test_search_with_a_directory_as_image_says_so(setup, capsys):
    line = _search_error(capsys, setup["idx"]["a"], str(setup["images"]))
    assert "is a directory; expected an image file" in line
    line = _search_error(capsys, setup["idx"]["a"], str(setup["images"] / "nope.png"))
    assert "does not exist" in line


@pytest.mark.parametrize(
    "extra, words",
    [(["--queries", "0"], "--queries must be at least 1"), (["-k", "-3"], "-k must be at least 1")],
)
def test_report_bounds_are_one_line(setup, tmp_path, capsys, extra, words):
    argv = ["report", str(setup["runs"][0]), "-o", str(tmp_path / "r.html"), *extra]
    assert main(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert words in line and f"got {extra[1]}" in line


def _read_only(monkeypatch, below: Path):
    """Writes under ``below`` fail as on a read-only mount (the tests may run as root, which
    ignores permission bits)."""
    import tempfile

    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        if str(kwargs.get("dir", "")).startswith(str(below)):
            raise OSError(errno.EROFS, "Read-only file system", str(below / ".x.tmp"))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)

    def no_run(*args, **kwargs):
        raise AssertionError("the run was loaded before the output was checked")

    monkeypatch.setattr("langdml.inference.run.load_run", no_run)


@pytest.mark.parametrize("command", ["report", "export", "embed", "index"])
def test_unwritable_output_is_refused_before_the_work_naming_the_target(
    setup, tmp_path, monkeypatch, capsys, command
):
    ro = tmp_path / "ro"
    ro.mkdir()
    target = ro / {"report": "r.html", "export": "m.pt", "embed": "e.safetensors"}.get(
        command, "idx"
    )
    _read_only(monkeypatch, ro)
    argv = [command, str(setup["runs"][0]), "-o", str(target)]
    argv += {"export": ["--format", "torchscript"]}.get(command, [])
    if command in ("embed", "index"):
        argv += ["--images", str(setup["images"]), "--no-progress"]
    assert main(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert f"{target}: Read-only file system" in line and ".tmp" not in line


def test_export_to_an_existing_directory_is_one_line(setup, tmp_path, capsys):
    argv = ["export", str(setup["runs"][0]), "--format", "torchscript", "-o", str(tmp_path)]
    assert main(argv) == 2
    assert f"{tmp_path}' is a directory; expected a file path" in one_line(capsys.readouterr().err)


def test_atomic_write_names_the_target_not_its_temporary_file(tmp_path, monkeypatch):
    from langdml.io import atomic_write_text

    _read_only(monkeypatch, tmp_path)
    with pytest.raises(OSError) as info:
        atomic_write_text(tmp_path / "out.txt", "x")
    assert info.value.filename == str(tmp_path / "out.txt")


@pytest.mark.parametrize("damage", ["truncated", "random"])
def test_an_unreadable_faiss_file_under_a_matching_manifest_is_one_line(setup, tmp_path, damage):
    """Even when the manifest was rewritten to match it, a file faiss cannot read is one line."""
    from langdml.errors import LangDMLError
    from langdml.inference.index import GalleryIndex
    from langdml.io import file_sha256

    idx = _copy_index(setup, tmp_path)
    faiss_file = idx / "index.faiss"
    blob = faiss_file.read_bytes()
    faiss_file.write_bytes(blob[: len(blob) // 3] if damage == "truncated" else os.urandom(999))
    manifest = json.loads((idx / "manifest.json").read_text())
    manifest["files"]["index.faiss"] = {
        "size": faiss_file.stat().st_size,
        "sha256": file_sha256(faiss_file),
    }
    (idx / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LangDMLError) as info:
        GalleryIndex.load(idx)
    assert str(info.value).startswith(f"'{faiss_file}' is not a faiss index")
    assert len(str(info.value).splitlines()) == 1


def test_the_index_tower_searches_without_the_run(setup, tmp_path, capsys):
    """The tower an index folder carries answers image queries as the run does, with the run
    gone; a tampered tower file is one line."""
    from langdml.train import train as train_run

    images = setup["images"]
    run = tmp_path / "run"
    train_run(tiny_cfg(images, tmp_path, output_dir=str(run)))
    idx = tmp_path / "idx"
    assert main(["index", str(run), "--images", str(images), "--no-progress", "-o", str(idx)]) == 0
    capsys.readouterr()
    by_run = _search(capsys, idx, setup["query"], "--run-dir", str(run))
    run.rename(tmp_path / "gone")
    by_tower = _search(capsys, idx, setup["query"])
    assert [r["path"] for r in by_tower] == [r["path"] for r in by_run]
    for a, b in zip(by_tower, by_run, strict=True):
        assert abs(a["score"] - b["score"]) < 1e-5
    (idx / "tower.pt").write_bytes(b"not a tower")
    line = _search_error(capsys, idx, setup["query"])
    assert "tower.pt" in line and "does not match the index's manifest" in line
