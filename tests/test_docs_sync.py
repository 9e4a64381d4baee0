"""docs/config.md and docs/api.md are generated from the code (scripts/gen_docs.py) and committed;
these tests regenerate them and fail when the committed files are stale."""

import importlib.util
import sys
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

ROOT = Path(__file__).resolve().parents[1]
RERUN = "run `python scripts/gen_docs.py` (make docs) and commit docs/config.md and docs/api.md"


def _load_gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_docs"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gen_docs = _load_gen_docs()


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs")
    gen_docs.main(["--out", str(out)])
    return out


@pytest.mark.parametrize("name", ["config.md", "api.md"])
def test_committed_docs_match_the_code(generated, name):
    committed = ROOT / "docs" / name
    assert committed.is_file(), f"docs/{name} is missing: {RERUN}"
    fresh = (generated / name).read_text(encoding="utf-8")
    if committed.read_text(encoding="utf-8") != fresh:
        old = committed.read_text(encoding="utf-8").splitlines()
        new = fresh.splitlines()
        first = next(
            (i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new))
        )
        pytest.fail(
            f"docs/{name} is out of date (first difference at line {first + 1}: "
            f"{new[first] if first < len(new) else '<end>'!r}); {RERUN}",
            pytrace=False,
        )


def test_every_config_key_is_documented_with_type_and_default(generated):
    assert gen_docs.undocumented_keys() == [], (
        "give these config keys a Field(description=...) in langdml/config.py"
    )
    from langdml.config import ExperimentConfig

    text = (generated / "config.md").read_text(encoding="utf-8").split("## Ablation file")[0]
    text = text.split("\n## `XmodalConfig`")[0]  # the experiment section only

    def leaves(model, prefix=""):
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                yield from leaves(ann, f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}", field

    keys = list(leaves(ExperimentConfig))
    assert len(keys) > 40
    for key, field in keys:
        rows = [line for line in text.splitlines() if line.startswith(f"| `{key}` |")]
        assert len(rows) == 1, key
        assert gen_docs._default(field) in rows[0].replace("\\|", "|"), key
    assert "| `loss.base.<key>` | any |" in text  # extra keys: the loss's arguments


def test_ablation_keys_table_matches_the_spec():
    from langdml.ablation import spec

    assert set(gen_docs.ABLATION_KEYS) == set(spec._ALLOWED)


def test_api_lists_every_stage_and_public_name(generated):
    import importlib

    text = (generated / "api.md").read_text(encoding="utf-8")
    for stage in gen_docs.STAGES:
        assert f"\n## {stage}\n" in text, stage
        module = importlib.import_module(f"langdml.{stage}")
        for name in module.__all__:
            assert f"\n### `{name}`\n" in text, (stage, name)
    assert " at 0x" not in text  # no memory addresses: the file must be reproducible
    assert "build_loss(\n    config: Mapping[str, Any]," in text


# --- the generator is generic: any pydantic config tree ------------------------------------------


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


def test_generator_walks_any_config_tree():
    sections = {key: rows for key, _, rows in gen_docs.config_rows(_Root)}
    assert list(sections) == ["", "leaf", "leaves[]", "named.<name>"]
    (ratio,) = sections[""]
    assert (ratio.key, ratio.type, ratio.default) == ("ratio", "float, > 0, < 1", "0.5")
    size, kind, note, extra = sections["leaf"]
    assert (size.key, size.type, size.default, size.meaning) == (
        "leaf.size",
        "int, ≥ 1",
        "3",
        "How big.",
    )
    assert (kind.type, kind.default, kind.meaning) == (
        '"a" | "b"',
        '"a"',
        "What it is made of, over two lines.",
    )
    assert (note.type, note.default, note.meaning) == ("str | null", "null", "a trailing comment")
    assert (extra.key, extra.meaning) == ("leaf.<key>", "any option of the leaf")
    assert sections["leaves[]"][0].key == "leaves[].size"
    assert sections["named.<name>"][0].key == "named.<name>.size"


def test_readme_links_both_pages():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/config.md)" in readme and "(docs/api.md)" in readme
