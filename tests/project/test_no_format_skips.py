"""The size limits are guides met by splitting along concepts, never by keeping the formatter off
a statement: no ``# fmt: skip`` / ``# fmt: off`` in the package, the scripts or the tests."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DIRECTIVE = re.compile(r"#\s*fmt:\s*(skip|off)\b")


def test_no_formatter_directives_in_the_package_scripts_or_tests():
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in ("langdml", "scripts", "tests")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if DIRECTIVE.search(line) and path != Path(__file__).resolve()
    ]
    assert found == []
