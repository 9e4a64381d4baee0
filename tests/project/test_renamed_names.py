"""Renamed functions: the new names are what the package calls, the old public ones still give the
same function with a DeprecationWarning, and no function of the package is called plain
``train`` any more (docs/guides/renamed.md lists every rename)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_public_train_entry_is_the_experiment_trainer():
    from langdml.pipeline import train_experiment
    from langdml.train import train

    assert train is train_experiment


@pytest.mark.parametrize(
    "module, old, new",
    [
        ("langdml.pipeline", "train", "train_experiment"),
        ("langdml.train.trainer", "train", "train_run"),
    ],
)
def test_old_name_warns_and_gives_the_renamed_function(module, old, new):
    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=rf"{module}\.{old} is deprecated; use .*{new}"):
        alias = getattr(mod, old)
    assert alias is getattr(mod, new)


def test_unknown_attribute_is_still_an_attribute_error():
    import langdml.pipeline

    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        langdml.pipeline.trian  # noqa: B018


def test_no_function_is_named_plain_train():
    named = []
    for path in sorted((ROOT / "langdml").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in (
                "train",
                "_train",
            ):
                named.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert named == []


def test_eval_map1000_f1_replaces_eval_roth():
    from langdml.eval import map1000_f1, metric_keys

    assert map1000_f1.MAP_AT == 1000
    assert metric_keys.is_metric_key("map@1000") and metric_keys.is_metric_key("recall@16")
    assert not metric_keys.is_metric_key("loss")
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("langdml.eval.roth")
