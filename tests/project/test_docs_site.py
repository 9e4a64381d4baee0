"""The documentation site: ``mkdocs build --strict`` passes (broken links, missing pages and
unresolved API names fail it), its pages render in headless Chromium, the generated config
reference lists every config field with its default, and the README stays short."""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import os
import subprocess
import sys
import threading
import typing
from pathlib import Path
from typing import Literal

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"


def _load_hook(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / "hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


config_hook = _load_hook("config_reference")
api_hook = _load_hook("api_pages")


def _mkdocs(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config)]
    return subprocess.run(
        [*command, "-d", str(site)],
        cwd=config.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = _mkdocs(ROOT / "mkdocs.yml", out)
    problems = [line for line in proc.stderr.splitlines() if not line.startswith("INFO")]
    assert proc.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(problems[-40:])
    return out


def _nav_pages(nav) -> list[str]:
    out = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        out += _nav_pages(value) if isinstance(value, list) else [value]
    return out


def _mkdocs_config() -> dict:
    # mkdocs.yml may hold python tags; the plain keys are all the tests read
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda *a: None)
    return yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=Loader)


# --- the build ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_strict_build_renders_every_nav_page(site):
    pages = _nav_pages(_mkdocs_config()["nav"])
    assert len(pages) > 40
    for page in pages:
        stem = page.removesuffix(".md").removesuffix("index").rstrip("/")
        built = site / stem / "index.html" if stem else site / "index.html"
        assert built.is_file(), page
    # the hooks ran: config tables and API entries are in the built pages
    config_page = (site / "reference" / "config" / "index.html").read_text(encoding="utf-8")
    assert "loss.language.weight" in config_page and config_hook.MARKER not in config_page
    losses = (site / "reference" / "api" / "losses" / "index.html").read_text(encoding="utf-8")
    assert 'id="langdml.losses.multi_similarity.MultiSimilarityLoss"' in losses


def test_strict_build_fails_on_a_broken_link(tmp_path):
    """The site's link validation, on a one-page site: a link to a missing page fails --strict."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\nSee [the guide](guides/missing.md).\n")
    config = {"site_name": "probe", "validation": _mkdocs_config()["validation"]}
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    proc = _mkdocs(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode != 0 and "guides/missing.md" in proc.stderr


def test_every_docs_page_is_in_the_nav():
    pages = set(_nav_pages(_mkdocs_config()["nav"]))
    docs = ROOT / "docs"
    files = {p.relative_to(docs).as_posix() for p in docs.rglob("*.md")}
    assert files - pages == set(), "add these pages to mkdocs.yml's nav"
    assert pages - files == set()


def test_every_stage_has_an_api_page():
    import langdml

    api = ROOT / "docs" / "reference" / "api"
    stages = {p.name for p in Path(langdml.__file__).parent.iterdir() if p.is_dir()}
    stages = {s for s in stages if (Path(langdml.__file__).parent / s / "__init__.py").is_file()}
    for stage in sorted(stages - {"configs"}):
        page = api / f"{stage}.md"
        assert page.is_file(), stage
        assert f"<!-- api: langdml.{stage} -->" in page.read_text(encoding="utf-8"), stage


@pytest.mark.parametrize("package", ["langdml.losses", "langdml.eval", "langdml.xmodal"])
def test_api_hook_lists_every_public_name(package):
    module = importlib.import_module(package)
    text = api_hook.render_api(package)
    for name in module.__all__:
        obj = getattr(module, name)
        if callable(obj):
            line = f"::: {obj.__module__}.{obj.__qualname__}\n"
            assert line in text, name
            assert importlib.import_module(obj.__module__) is not None
        else:
            assert f"| `{name}` |" in text, name


# --- the config reference -------------------------------------------------------------------------


def _leaf_fields(model: type[BaseModel], prefix: str = ""):
    """(dotted key, field) of every plain field below a model; sections are models, optional
    models, lists of models (`key[]`) or dicts of models (`key.<name>`)."""
    for name, field in model.model_fields.items():
        ann, suffix = field.annotation, ""
        origin, args = typing.get_origin(ann), typing.get_args(ann)
        if origin is list and args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
            ann, suffix = args[0], "[]"
        elif (
            origin is dict
            and len(args) == 2
            and isinstance(args[1], type)
            and issubclass(args[1], BaseModel)
        ):
            ann, suffix = args[1], ".<name>"
        elif args and not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            if len(models) == 1 and set(args) - set(models) <= {type(None)}:
                ann = models[0]
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _leaf_fields(ann, f"{prefix}{field.alias or name}{suffix}.")
        else:
            yield f"{prefix}{field.alias or name}", field


def _default(field) -> str:
    if field.is_required():
        return "required"
    return json.dumps(field.get_default(call_default_factory=True), ensure_ascii=False)


def _rows(text: str, key: str) -> list[str]:
    lines = text.splitlines()
    return [line.replace("\\|", "|") for line in lines if line.startswith(f"| `{key}` |")]


def test_config_reference_lists_every_field_with_its_default():
    from langdml.config import ExperimentConfig
    from langdml.xmodal import XmodalConfig

    text = config_hook.render_config_reference()
    experiment, rest = text.split("\n## `XmodalConfig`", 1)
    for section, root in ((experiment, ExperimentConfig), (rest, XmodalConfig)):
        keys = list(_leaf_fields(root))
        assert len(keys) > 20, root
        for key, field in keys:
            rows = _rows(section, key)
            assert len(rows) == 1, (root.__name__, key)
            assert f"`{_default(field)}`" in rows[0], (key, rows[0])
            assert rows[0].rstrip(" |").split(" | ")[-1].strip(), f"{key} has no meaning"
    assert "| `loss.base.<key>` | any |" in experiment  # extra keys: the loss's own arguments


def test_config_reference_documents_every_ablation_key(tmp_path):
    """The ablation table names exactly the keys the loader accepts (from its error message)."""
    from langdml.ablation import load_ablation
    from langdml.errors import LangDMLError

    bad = tmp_path / "abl.yaml"
    bad.write_text("base: {}\nnot_a_key: 1\n")
    with pytest.raises(LangDMLError) as err:
        load_ablation(bad)
    accepted = yaml.safe_load(str(err.value).split("expected ", 1)[1])
    assert set(accepted) == set(config_hook.ABLATION_KEYS)
    text = config_hook.render_config_reference().split("## Ablation file", 1)[1]
    for key in accepted:
        assert len(_rows(text, key)) == 1, key


def test_hook_fills_only_the_config_page():
    class Page:
        def __init__(self, uri):
            self.file = type("F", (), {"src_uri": uri})()

    page = f"# Config\n\n{config_hook.MARKER}\n"
    filled = config_hook.on_page_markdown(page, Page("reference/config.md"), None, None)
    assert config_hook.MARKER not in filled and "| `model.embedding_dim` |" in filled
    assert config_hook.on_page_markdown(page, Page("index.md"), None, None) == page
    with pytest.raises(ValueError, match="marker"):
        config_hook.on_page_markdown("# Config\n", Page("reference/config.md"), None, None)


class _Leaf(BaseModel):
    """A nested section."""

    model_config = ConfigDict(extra="allow")  # any option of the leaf
    size: int = Field(3, ge=1, description="How big.")
    # What it is made of,
    # over two lines.
    kind: Literal["a", "b"] = "a"
    note: str | None = None  # a trailing comment


class _Root(BaseModel):
    leaf: _Leaf = Field(default_factory=_Leaf)
    leaves: list[_Leaf] = Field(default_factory=list)
    named: dict[str, _Leaf] = Field(default_factory=dict)
    ratio: float = Field(0.5, gt=0, lt=1)


def test_config_rows_walk_any_config_tree():
    sections = {key: rows for key, _, rows in config_hook.config_rows(_Root)}
    assert list(sections) == ["", "leaf", "leaves[]", "named.<name>"]
    (ratio,) = sections[""]
    assert (ratio.key, ratio.type, ratio.default) == ("ratio", "float, > 0, < 1", "0.5")
    size, kind, note, extra = sections["leaf"]
    assert (size.key, size.type, size.default) == ("leaf.size", "int, ≥ 1", "3")
    assert size.meaning == "How big."
    assert (kind.type, kind.default, kind.meaning) == (
        '"a" | "b"',
        '"a"',
        "What it is made of, over two lines.",
    )
    assert (note.type, note.default, note.meaning) == ("str | null", "null", "a trailing comment")
    assert (extra.key, extra.meaning) == ("leaf.<key>", "any option of the leaf")
    assert sections["leaves[]"][0].key == "leaves[].size"
    assert sections["named.<name>"][0].key == "named.<name>.size"


# --- headless Chromium ----------------------------------------------------------------------------


def _chromium(url: str, profile: Path) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--dump-dom",
    ]
    return subprocess.run([CHROMIUM, *flags, url], capture_output=True, text=True, timeout=120)


def _console(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


# one page per nav section, with the heading it must show
SECTION_PAGES = {
    "": "langdml",
    "getting-started/quickstart/": "Quick start",
    "guides/training/": "Training runs",
    "reference/config/": "Config reference",
    "results/regularizers/": "do the regularizers help?",
    "references/": "References",
}


@pytest.mark.slow
@pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"no {CHROMIUM}: install Debian's chromium (scripts/setup.sh does as root with apt)",
)
def test_a_page_per_section_renders_in_headless_chromium(site, tmp_path):
    # a probe page proves console errors would be seen
    (site / "console_probe.html").write_text(
        '<html><body><script>throw new Error("probe")</script></body></html>'
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        probe = _chromium(base + "console_probe.html", tmp_path / "probe")
        assert any("probe" in line for line in _console(probe.stderr)), probe.stderr[-2000:]
        for i, (path, heading) in enumerate(SECTION_PAGES.items()):
            proc = _chromium(base + path, tmp_path / f"profile{i}")
            dom = proc.stdout
            assert proc.returncode == 0 and "<title>" in dom, (path, proc.stderr[-2000:])
            assert "md-nav" in dom and "md-header" in dom, path  # the theme's nav and header
            assert 'class="md-search' in dom, path  # the search box came up
            h1 = dom.split("<h1", 1)[1].split("</h1>", 1)[0]
            assert heading in h1, (path, h1[:200])
            assert _console(proc.stderr) == [], (path, _console(proc.stderr))
    finally:
        server.shutdown()
        server.server_close()


# --- the README -----------------------------------------------------------------------------------


def test_readme_is_short_and_links_into_the_site():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    assert "make demo" in readme and "make test" in readme and "imagefolder:" in readme
    links = [part.split(")", 1)[0] for part in readme.split("](")[1:]]
    docs = [link for link in links if link.startswith("docs/")]
    assert len(docs) >= 5
    for link in docs:
        assert (ROOT / link.split("#", 1)[0]).is_file(), link
