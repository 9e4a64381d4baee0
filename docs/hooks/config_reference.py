"""mkdocs hook: the config reference page, generated at build time from the pydantic models.

``reference/config.md`` holds a marker line; this hook replaces it with one table per config
section — every field of every model that ``langdml.config`` defines (and the xmodal settings of
``langdml.xmodal``), with its dotted key, type and bounds, default and meaning. A field's meaning is
its ``Field(description=...)``, else the ``#`` comment on or right above it. Nothing is checked in:
the page always shows the code's current fields and defaults. ``render_config_reference()`` is the
page body (the tests call it directly).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import io
import json
import pkgutil
import re
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

MARKER = "<!-- config-reference -->"
PAGE = "reference/config.md"


@dataclass
class Row:
    key: str
    type: str
    default: str
    meaning: str


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models in an annotation (``M``, ``M | None``, ``list[M]``, ``dict[str, M]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _nested(annotation: Any) -> tuple[type[BaseModel], str] | None:
    """(model, key suffix) when a field is a section: ``M`` / ``M | None`` → "",
    ``list[M]`` → "[]", ``dict[str, M]`` → ".<name>"; None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, ""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        models = [a for a in args if a is not type(None)]
        return _nested(models[0]) if len(models) == 1 else None
    if origin in (list, tuple, set) and len(args) == 1 and _models_in(args[0]) == [args[0]]:
        return args[0], "[]"
    if origin is dict and len(args) == 2 and _models_in(args[1]) == [args[1]]:
        return args[1], ".<name>"
    return None


def type_name(annotation: Any) -> str:
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_name(a) for a in args)}]" if args else name
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


_BOUNDS = (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"), ("multiple_of", "multiple of"))


def _constraints(field: Any) -> str:
    out = []
    for meta in field.metadata:
        for attr, sign in _BOUNDS:
            value = getattr(meta, attr, None)
            if value is not None:
                out.append(f"{sign} {value}")
    return ", ".join(out)


def default_text(field: Any) -> str:
    """A field's default as the table shows it (JSON), or ``required``."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    try:
        return json.dumps(value, ensure_ascii=False)
    except TypeError:
        return str(value)


def _class_comments(model: type) -> dict[str, str]:
    """``#`` comments of a class body, by the attribute they document: the comment lines right
    above an assignment (no blank line between) and the comments on its own lines."""
    try:
        source = textwrap.dedent(inspect.getsource(model))
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            if not text.startswith(("noqa", "type:")):
                comments[tok.start[0]] = text
    lines = source.splitlines()
    out = {}
    cls = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef))
    for node in cls.body:
        target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
        name = getattr(target, "id", None)
        if name is None:
            continue
        above, line = [], node.lineno - 1
        while line >= 1 and line in comments and lines[line - 1].strip().startswith("#"):
            above.insert(0, comments[line])
            line -= 1
        own = [comments[i] for i in range(node.lineno, node.end_lineno + 1) if i in comments]
        text = " ".join(above + own).strip()
        if text:
            out[name] = text
    return out


def _comment(model: type[BaseModel], name: str) -> str:
    for cls in model.__mro__:
        if name in getattr(cls, "__annotations__", {}) or name in vars(cls):
            found = _class_comments(cls).get(name)
            if found:
                return found
    return ""


def _own_doc(obj: Any) -> str:
    """The first paragraph of a class's own docstring (not inherited), on one line."""
    doc = vars(obj).get("__doc__")
    if not isinstance(doc, str) or not doc.strip():
        return ""
    first = inspect.cleandoc(doc).split("\n\n")[0]
    text = " ".join(line.strip() for line in first.splitlines())
    text = re.sub(r":(?:func|class|mod|meth|attr|data|obj):`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def config_rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, type, list[Row]]]:
    """[(section key, model, rows)] of a config tree, depth first in declaration order."""
    rows, sections = [], []
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        nested = _nested(field.annotation)
        if nested is not None:
            sub, suffix = nested
            sections += config_rows(sub, f"{key}{suffix}.")
            continue
        bounds = _constraints(field)
        text = type_name(field.annotation)
        meaning = field.description or _comment(model, name)
        rows.append(Row(key, f"{text}, {bounds}" if bounds else text, default_text(field), meaning))
    if model.model_config.get("extra") == "allow":
        meaning = _comment(model, "model_config") or _own_doc(model)
        rows.append(Row(f"{prefix}<key>", "any", "", meaning or "further keys are accepted"))
    return [(prefix.rstrip("."), model, rows), *sections]


def _reachable(roots: list[type[BaseModel]]) -> set[type]:
    seen: set[type] = set()
    todo = list(roots)
    while todo:
        model = todo.pop()
        for field in model.model_fields.values():
            for sub in _models_in(field.annotation):
                if sub not in seen:
                    seen.add(sub)
                    todo.append(sub)
    return seen


def config_roots(package: str) -> list[type[BaseModel]]:
    """Public pydantic models defined in ``package`` (a module, or a package and its modules)
    that no other of them nests: the config files' top levels, in declaration order."""
    module = importlib.import_module(package)
    modules = [module]
    if hasattr(module, "__path__"):
        for info in pkgutil.walk_packages(module.__path__, f"{package}."):
            if not info.name.endswith("__main__"):
                modules.append(importlib.import_module(info.name))
    found: list[type[BaseModel]] = []
    for mod in modules:
        for obj in vars(mod).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, BaseModel)
                and obj.__module__.startswith(package)
                and not obj.__name__.startswith("_")
                and obj.model_fields
                and obj not in found
            ):
                found.append(obj)
    nested = _reachable(found)
    return [m for m in found if m not in nested]


# The keys of an ablation file (`langdml ablate FILE`); tests check them against the loader.
ABLATION_KEYS = {
    "base": (
        "path | mapping",
        "required",
        "The experiment config the grid varies: a YAML file (relative to the ablation file) or "
        "an inline mapping.",
    ),
    "overrides": (
        "mapping",
        "`{}`",
        "dotted.key: value set on the base before the grid (e.g. a shorter `train.epochs`).",
    ),
    "grid": (
        "mapping",
        "required",
        "dotted.key: [values], crossed with each other; or key: {label: {dotted.key: value, ...}}, "
        "named arms that set several keys at once (a control arm).",
    ),
    "seeds": (
        "list[int] | int",
        "`5`",
        "Seeds of every grid cell; an integer N is 0..N-1. When a run's config sets data.folds "
        "K, each seed runs once per validation fold and the table is over seeds x folds.",
    ),
    "when": (
        "mapping",
        "`{}`",
        "grid key: {grid value: {dotted.key: value}}: settings tied to one grid value (e.g. a "
        "weight tuned per base loss), applied after the grid values.",
    ),
    "name": ("str", "the file's stem", "Ablation name; runs are named NAME/RUN_ID."),
    "output_dir": (
        "str",
        "`runs/NAME`",
        "Results folder (results.csv, results.md, results.png, runs/); `--output-dir` wins.",
    ),
    "backend": (
        "mapping",
        "`{}`",
        "Resources of `langdml ablate --backend local | slurm | ray`: cpus_per_cell, "
        "gpus_per_cell, prepare, slurm.*, ray.* (see the cluster guide); command-line flags win.",
    ),
}


def _table(rows: list[Row], code_defaults: bool = True) -> list[str]:
    out = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for r in rows:
        default = f"`{r.default}`" if r.default and code_defaults else r.default
        out.append(
            f"| `{_cell(r.key)}` | {_cell(r.type)} | {_cell(default)} | {_cell(r.meaning)} |"
        )
    return out


def _root_section(root: type[BaseModel]) -> list[str]:
    experiment = root.__name__ == "ExperimentConfig"
    out = [] if experiment else [f"## `{root.__name__}` ({root.__module__})", ""]
    doc = _own_doc(root)
    out += [doc, ""] if doc and not experiment else []
    for key, model, rows in config_rows(root):
        if not rows:
            continue
        if key:
            out += [f"### `{key}`", ""]
            doc = _own_doc(model)
            out += [doc, ""] if doc else []
        elif experiment:
            out += ["## Experiment config", "", "### Top level", ""]
        out += [*_table(rows), ""]
    return out


def render_config_reference() -> str:
    """The generated part of the config page: the experiment config, the other config roots,
    then the ablation-file keys."""
    roots = config_roots("langdml.config")
    roots.sort(key=lambda m: m.__name__ != "ExperimentConfig")  # the experiment config first
    roots += config_roots("langdml.xmodal")
    out: list[str] = []
    for root in roots:
        out += _root_section(root)
    ablation = [Row(k, t, d, m) for k, (t, d, m) in ABLATION_KEYS.items()]
    out += [
        "## Ablation file",
        "",
        "`langdml ablate FILE` runs a grid of experiment configs × seeds. Each run's config is "
        "the base, then `overrides`, then its grid values, then the matching `when` settings; "
        "every run is validated before any starts. Keys:",
        "",
        *_table(ablation, code_defaults=False),
        "",
    ]
    return "\n".join(out)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """mkdocs event: fill the config page's marker with the generated tables."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"{PAGE} lost its marker line {MARKER!r}; the hook fills it")
    return markdown.replace(MARKER, render_config_reference())
