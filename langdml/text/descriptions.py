"""Class descriptions: a CSV/TSV file of ``class,text`` rows (``text.descriptions``).

A header row names the columns; ``class`` and ``text`` are required, other columns are ignored.
``.csv`` files are comma-separated, ``.tsv`` / ``.tab`` / ``.txt`` tab-separated (quoting as the
``csv`` module reads it); lines starting with ``#`` are comments. A class may
have any number of rows: its description embedding is the mean of the rows' unit embeddings
(:func:`langdml.text.pooling.grouped_unit_mean`). The class column is matched to the dataset's
class names the way every user file is (:func:`langdml.data.names.match_key`: default cleaning,
ignoring case), so ``001.Black_footed_Albatross`` and ``black footed albatross`` are one class.

``packaged:NAME`` (or a bare packaged name) reads a file shipped with langdml, checked against
its pinned SHA-256: ``emoji_cldr`` holds the Unicode CLDR English keyword annotations of every
class of the emoji benchmark (built by ``scripts/build_emoji_descriptions.py``).

The content key (:attr:`ClassDescriptions.sha256`) is the SHA-256 of the rows as parsed —
whitespace collapsed, Unicode NFC — so the same rows written as CSV or TSV, with CRLF line ends,
comments or extra columns, share a key, and any change to a class or a text makes a new one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from langdml.data.names import match_key
from langdml.errors import DataError

_DATA = Path(__file__).resolve().parents[1] / "data"
PACKAGED: dict[str, tuple[Path, str]] = {
    "emoji_cldr": (
        _DATA / "emoji_cldr_descriptions.tsv",
        "4480d3844be6fa4489ff0286cf480eda347031b46e9f524c8321ce206c29dc07",
    ),
}
ALIASES = {"emoji": "emoji_cldr"}
DELIMITERS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": "\t"}
COLUMNS = ("class", "text")
_SHOW = 5


@dataclass(frozen=True)
class ClassDescriptions:
    """The parsed rows of a descriptions file: ``(class as written, text)`` in file order."""

    source: str
    rows: tuple[tuple[str, str], ...]
    sha256: str
    packaged: bool = False  # a shipped file describes a whole benchmark, so any subset of it

    def by_class(self) -> dict[str, list[str]]:
        """match key → the class's texts, in file order."""
        out: dict[str, list[str]] = {}
        for name, text in self.rows:
            out.setdefault(match_key(name), []).append(text)
        return out

    def check_classes(self, dataset_classes: Sequence[str]) -> None:
        """Every class a user's file names is one of ``dataset_classes`` (else one line naming
        them); a packaged file may describe more classes than a dataset built from part of it."""
        if self.packaged:
            return
        known = {match_key(n) for n in dataset_classes}
        unknown = list(dict.fromkeys(n for n, _ in self.rows if match_key(n) not in known))
        if unknown:
            raise DataError(
                f"descriptions {self.source!r} name {len(unknown)} classes the dataset does not "
                f"have: {_shown(unknown)}; expected the dataset's {len(known)} class names, e.g. "
                f"{_shown(list(dataset_classes))} (matched after cleaning, ignoring case)"
            )

    def for_classes(self, class_names: Sequence[str], required: bool) -> list[list[str]]:
        """Per class, its texts in file order; a class without rows gets ``[]``, or, when
        ``required``, is one error naming the undescribed classes."""
        found = self.by_class()
        out = [found.get(match_key(n), []) for n in class_names]
        missing = list(dict.fromkeys(n for n, texts in zip(class_names, out) if not texts))
        if missing and len(missing) == len(set(class_names)):
            raise DataError(
                f"descriptions {self.source!r} describe none of the {len(missing)} classes that "
                f"need text, e.g. {_shown(missing)}"
            )
        if missing and required:
            raise DataError(
                f"descriptions {self.source!r} have no row for {len(missing)} of the "
                f"{len(set(class_names))} classes that need one: {_shown(missing)} (text.target "
                "uses descriptions without names; add rows for them, or add names to "
                "text.target to let a class without a description use its name)"
            )
        return out


def _shown(names: Sequence[str]) -> str:
    head = ", ".join(repr(n) for n in names[:_SHOW])
    return head + (f", … ({len(names) - _SHOW} more)" if len(names) > _SHOW else "")


def _normal(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def resolve_source(spec: str) -> tuple[Path, str | None]:
    """(file, pinned SHA-256 or None) of ``packaged:NAME``, a bare packaged name, or a path."""
    name = spec.removeprefix("packaged:")
    name = ALIASES.get(name, name)
    if name in PACKAGED:
        return PACKAGED[name]
    if spec.startswith("packaged:"):
        raise DataError(
            f"unknown packaged descriptions {spec!r}; expected one of "
            f"{', '.join('packaged:' + n for n in PACKAGED)} or a CSV/TSV path"
        )
    return Path(spec).expanduser(), None


def _read_text(spec: str) -> tuple[Path, str, bool]:
    path, pinned = resolve_source(spec)
    if not path.is_file():
        raise DataError(f"descriptions file {spec!r} does not exist (expected a CSV/TSV file)")
    if path.suffix.lower() not in DELIMITERS:
        raise DataError(
            f"descriptions file {spec!r}: unknown suffix {path.suffix!r}; expected one of "
            f"{', '.join(DELIMITERS)}"
        )
    try:
        data = path.read_bytes()
        if pinned is not None and hashlib.sha256(data).hexdigest() != pinned:
            raise DataError(
                f"packaged descriptions {path.name} do not match their pinned SHA-256 "
                f"{pinned[:16]}… (a damaged install: reinstall langdml)"
            )
        return path, data.decode("utf-8-sig"), pinned is not None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read descriptions file {spec!r}: {exc}") from None


def _records(spec: str, text: str, delimiter: str):
    """(line number, fields) of each non-blank, non-comment record."""
    # comment lines become blank ones, so line numbers stay the file's
    lines = ["" if x.lstrip().startswith("#") else x for x in text.splitlines()]
    reader = csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter)
    try:
        for record in reader:
            if any(c.strip() for c in record):
                yield reader.line_num, record
    except csv.Error as exc:
        raise DataError(f"descriptions file {spec!r} is not valid CSV/TSV: {exc}") from None


def _columns(spec: str, header: list[str] | None) -> tuple[int, int]:
    """(class column, text column) of the header row."""
    if not header:
        raise DataError(f"descriptions file {spec!r} is empty; expected a header 'class,text'")
    names = [h.strip().lower() for h in header]
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise DataError(
            f"descriptions file {spec!r} has no {' or '.join(repr(c) for c in missing)} column "
            f"(header: {header!r}); expected a header row with columns class,text"
        )
    return names.index("class"), names.index("text")


def load_descriptions(spec: str) -> ClassDescriptions:
    """Parse and validate a descriptions file (see the module docstring); one line per error."""
    path, text, packaged = _read_text(spec)
    records = _records(spec, text, DELIMITERS[path.suffix.lower()])
    ci, ti = _columns(spec, next(records, (0, None))[1])
    rows = []
    for line, record in records:
        where = f"descriptions file {spec!r} line {line}"
        if len(record) <= max(ci, ti):
            raise DataError(f"{where} has {len(record)} fields; expected class and text")
        name, value = _normal(record[ci]), _normal(record[ti])
        if not name:
            raise DataError(f"{where}: empty class (text {value[:40]!r})")
        if not value:
            raise DataError(f"{where}: empty text for class {name!r}")
        rows.append((name, value))
    if not rows:
        raise DataError(f"descriptions file {spec!r} has a header but no rows")
    blob = "".join(f"{n}\t{t}\n" for n, t in rows).encode("utf-8")
    return ClassDescriptions(spec, tuple(rows), hashlib.sha256(blob).hexdigest(), packaged)
