"""The project's files cite only what a user receives with them.

Every file git tracks (or would track: untracked files that are not ignored) is read as text and
searched for what does not belong in a released project: files the project does not contain (a
design note or a reference list kept elsewhere, a sibling ``shared`` folder), absolute paths of the
machine it was written on (home, scratch and temporary folders), and numbers of an internal
tracker (the word for a tracker entry followed by a number, a bare hash-number, the word for a
support request). The patterns below spell out what they look for, so this file is the one file not
searched.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FOREIGN = {
    "a file the project does not contain": re.compile(r"\b(?:REFERENCES|DESIGN)\.md\b"),
    "a folder outside the project": re.compile(r"\.\./shared\b"),
    "a machine path": re.compile(r"(?<![\w.~$-])/(?:work|tmp|root|Users|home/\w+)/"),
    "an issue or ticket number": re.compile(r"(?i)\b(?:issue|ticket|bug)s?\s*(?:no\.?\s*)?#?\d+"),
    # a hash and digits in prose; a CSS colour (a hash and hex digits before ";" or "}") is not
    "a tracker reference": re.compile(r"(?<![\w&:#/])#\d+\b(?![;}\w])"),
    "a ticket": re.compile(r"(?i)\btickets?\b"),
}

# What a rule does not apply to (glob patterns), and why: the packaged emoji tables name the
# emoji "ticket" and "admission tickets" (Unicode names and CLDR keywords: data, not tracker talk).
EXEMPT = {"a ticket": ("langdml/data/*.tsv",)}


THIS = Path(__file__).resolve().relative_to(ROOT).as_posix()

# The examples the rules must catch, assembled from pieces so that this file's own text holds
# none of them (other checkers read it too).
NOTE = "DESIGN" + ".md"
SHARED = ".." + "/shared"
TMP, WORK = "/" + "tmp/", "/" + "work/"
ISSUE, TRACKER, TICKET = "iss" + "ue 14", "(#" + "25)", "tick" + "et"


def _project_files() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to list the project's files")
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [p for p in out.split("\0") if p and p != THIS and (ROOT / p).is_file()]


def _text(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data:
        return None  # binary (images, fonts, weights)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def foreign_references(root: Path, files: list[str]) -> list[str]:
    """``path:line: what (matched text)`` for every hit of every rule in ``files`` (relative
    to ``root``)."""
    hits = []
    for rel in files:
        text = _text(root / rel)
        if text is None:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            for what, pattern in FOREIGN.items():
                if any(fnmatch.fnmatch(rel, pattern) for pattern in EXEMPT.get(what, ())):
                    continue
                for m in pattern.finditer(line):
                    hits.append(f"{rel}:{lineno}: {what} ({m.group(0)!r})")
    return hits


def test_no_file_cites_what_the_project_does_not_contain():
    files = _project_files()
    assert len(files) > 100  # the listing worked: the tree, not an empty folder
    assert foreign_references(ROOT, files) == []


def test_the_search_reports_file_line_and_rule(tmp_path):
    (tmp_path / "notes.md").write_text(f"fine\nsee {NOTE}, cached in {TMP}x\n")
    (tmp_path / "logo.png").write_bytes(b"\x89PNG\0 " + NOTE.encode())  # binary: not read
    hits = foreign_references(tmp_path, ["notes.md", "logo.png"])
    assert hits == [
        f"notes.md:2: a file the project does not contain ({NOTE!r})",
        f"notes.md:2: a machine path ({TMP!r})",
    ]


@pytest.mark.parametrize(
    "line, what",
    [
        (f"as {NOTE} says", "a file the project does not contain"),
        (f"see {SHARED}/notes", "a folder outside the project"),
        (f"cache in {TMP}run", "a machine path"),
        (f"checkout at {WORK}main", "a machine path"),
        (f"the study of {ISSUE}", "an issue or ticket number"),
        (f"fixed in {TRACKER}", "a tracker reference"),
        (f"the {TICKET} says", "a ticket"),
    ],
)
def test_each_rule_catches_its_example(line, what):
    assert FOREIGN[what].search(line)


@pytest.mark.parametrize(
    "line",
    [
        "body{color:#222;border:4px solid #999}",  # CSS colours
        "# 3 seeds per arm",  # a comment
        "## 2. Results",  # a heading
        "tempfile.mkdtemp()",  # a temporary folder the code asks the system for
        "an issue with the fonts",  # the word without a number
        "runs/emoji_demo/cells/",  # a relative path
    ],
)
def test_ordinary_text_is_not_flagged(line):
    assert not any(p.search(line) for p in FOREIGN.values())
