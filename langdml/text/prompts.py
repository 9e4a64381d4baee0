"""Prompt templates and class-name cleaning.

A template holds ``{}`` where the class name goes (default ``"a photo of a {}"``, as in the LG
paper). Several templates form a prompt ensemble: with unit-norm embeddings
``e_t = f(template_t(name)) / ||f(template_t(name))||``, the class embedding is
``ē / ||ē||`` where ``ē = (1/T) Σ_t e_t``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence

from langdml.data.names import words
from langdml.errors import LangDMLError

DEFAULT_PROMPT = "a photo of a {}"

NameCleaner = Callable[[str], str]


def check_prompts(prompts: str | Sequence[str] | None) -> list[str]:
    """Validated template list; ``None`` → ``[DEFAULT_PROMPT]``."""
    if prompts is None:
        return [DEFAULT_PROMPT]
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise LangDMLError(
            "empty prompt list; give at least one template such as 'a photo of a {}'"
        )
    for p in prompts:
        if not isinstance(p, str) or "{}" not in p:
            raise LangDMLError(
                f"prompt template {p!r} has no '{{}}' placeholder for the class name; "
                "expected e.g. 'a photo of a {}'"
            )
    dup = [p for p, n in Counter(prompts).items() if n > 1]
    if dup:
        raise LangDMLError(f"duplicate prompt templates: {dup}")
    return prompts


def fill(template: str, name: str) -> str:
    # str.replace rather than str.format: class names may contain braces.
    return template.replace("{}", name)


def check_class_names(
    names: Sequence[str], what: str = "class name", allow_duplicates: bool = False
) -> list[str]:
    """Non-empty, non-blank strings, in the given order; unique unless ``allow_duplicates``."""
    if isinstance(names, str):
        raise LangDMLError(f"expected a list of {what}s, got the single string {names!r}")
    names = list(names)
    if not names:
        raise LangDMLError(f"empty {what} list; nothing to embed")
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise LangDMLError(f"{what}s must be non-empty strings, got {bad[:5]!r}")
    dup = [n for n, c in Counter(names).items() if c > 1]
    if dup and not allow_duplicates:
        raise LangDMLError(
            f"duplicate {what}s {dup[:10]!r}: each class needs a distinct name, unless classes "
            "share names on purpose (e.g. SOP super-classes): allow_duplicates=True / "
            "--allow-duplicate-names"
        )
    return names


# Default cleaning (drop a leading ``NNN.`` id, underscores → spaces, collapse whitespace): the
# one implementation lives with the datasets, which clean their names when they are loaded.
clean_name = words


def clean_sop_name(name: str) -> str:
    """Stanford Online Products super-class folders are ``bicycle_final`` etc."""
    return clean_name(re.sub(r"_final$", "", name.strip()))


def raw_name(name: str) -> str:
    return name


NAME_CLEANERS: dict[str, NameCleaner] = {
    "default": clean_name,
    "sop": clean_sop_name,
    "none": raw_name,
}


def resolve_cleaner(cleaner: str | NameCleaner | None) -> NameCleaner:
    if cleaner is None:
        return raw_name
    if callable(cleaner):
        return cleaner
    if cleaner not in NAME_CLEANERS:
        raise LangDMLError(
            f"unknown name cleaner {cleaner!r}; expected one of {', '.join(NAME_CLEANERS)} "
            "or a callable str -> str"
        )
    return NAME_CLEANERS[cleaner]


def clean_names(names: Sequence[str], cleaner: str | NameCleaner | None) -> list[str]:
    fn = resolve_cleaner(cleaner)
    out = []
    for n in names:
        c = fn(n)
        if not isinstance(c, str) or not c.strip():
            raise LangDMLError(f"name cleaner turned class name {n!r} into an empty text")
        out.append(c)
    return out


def prompt_texts(names: Sequence[str], prompts: Sequence[str]) -> list[str]:
    """Texts in name-major order: ``[fill(p, n) for n in names for p in prompts]``."""
    return [fill(p, n) for n in names for p in prompts]
