"""Class names as words for a language model: the one place names are cleaned.

Loaders that clean their folder names (CUB, SOP) call :func:`clean_class_name` when the dataset is
loaded; :func:`words` is the light cleaning every name gets on its way to a text model (the text
stage's ``default`` cleaner). Both drop a leading ``NNN.`` class id and underscores.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import numpy as np

_ID_PREFIX = re.compile(r"^\s*\d+\.(?=\D)")  # "001.Black_footed_Albatross"; not "3.5 inch"
_NUMBER_PREFIX = re.compile(r"^\d+\.")  # the text stage's historical rule (no lookahead)
_WS = re.compile(r"\s+")


def clean_class_name(name: str) -> str:
    """A class folder name as words for a language model.

    ``"001.Black_footed_Albatross"`` → ``"black footed albatross"``: Unicode NFC, drop a leading
    ``NNN.`` class id, underscores → spaces, collapse whitespace, lower-case. A name that would
    become empty is returned stripped instead.
    """
    name = unicodedata.normalize("NFC", name)
    text = _ID_PREFIX.sub("", name)
    text = _WS.sub(" ", text.replace("_", " ")).strip().lower()
    return text or name.strip()


def collapse_whitespace(name: str) -> str:
    """Strip and collapse whitespace: ``" AM  General Hummer "`` → ``"AM General Hummer"``."""
    return _WS.sub(" ", name).strip()


def normalise_class_name(name: str) -> str:
    """The canonical form of a class name read from a folder name: Unicode NFC (so a name typed
    on macOS, NFD, and on Linux, NFC, are one class) with whitespace stripped and collapsed."""
    return collapse_whitespace(unicodedata.normalize("NFC", name))


def name_clashes(raw_to_name: dict[str, str]) -> tuple[list[list[str]], list[list[str]]]:
    """(groups of raw names that normalise to one class name, groups of class names that differ
    only by case), each group sorted; ``raw_to_name`` maps a folder's raw name to its class name."""
    merged: dict[str, set[str]] = {}
    for raw, name in raw_to_name.items():
        merged.setdefault(name, set()).add(raw)
    by_case: dict[str, set[str]] = {}
    for name in merged:
        by_case.setdefault(match_key(name), set()).add(name)
    return (
        sorted(sorted(g) for g in merged.values() if len(g) > 1),
        sorted(sorted(g) for g in by_case.values() if len(g) > 1),
    )


def natural_key(name: str) -> tuple:
    """Sort key comparing digit runs as numbers, so ``"2.b"`` < ``"10.a"``; ties broken by name."""
    parts = re.split(r"(\d+)", name)
    # re.split with a group alternates text/digits, so equal positions always hold equal types.
    return (tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name)


def words(name: str) -> str:
    """Default cleaning for a text model: drop a leading ``NNN.`` id, underscores → spaces,
    collapse whitespace (case kept)."""
    name = _NUMBER_PREFIX.sub("", name.strip())
    return _WS.sub(" ", name.replace("_", " ")).strip() or name.strip()


def match_key(name: str) -> str:
    """The key a name written in a user's file (``file:`` embedding rows, hierarchy files,
    descriptions) is matched to a class name by, and two class names are compared by: Unicode NFC,
    the default cleaning (:func:`words`: a leading ``NNN.`` id dropped, underscores as spaces,
    whitespace collapsed), case folded. ``"001.Black_footed_Albatross"`` and
    ``"black footed  albatross"`` match."""
    return unicodedata.normalize("NFC", words(unicodedata.normalize("NFC", name)).casefold())


def distinct_names(class_names: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The distinct names in first-appearance order and, per class, the row of its name.

    The one handling of classes that share a name (SOP's super-classes): text is embedded once
    per distinct name and class c uses row ``text_of_class[c]``.
    """
    position = {n: i for i, n in enumerate(dict.fromkeys(class_names))}
    return list(position), np.asarray([position[n] for n in class_names], dtype=np.int64)
