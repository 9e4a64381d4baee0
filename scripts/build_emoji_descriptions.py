"""Build ``langdml/data/emoji_cldr_descriptions.tsv``: descriptions of the emoji benchmark's
classes from the Unicode CLDR English annotations (``text.descriptions: packaged:emoji_cldr``).

Per class (``emoji_benchmark.tsv``, keyed by its single code point), one row per CLDR keyword of
``annotations/en.xml``, in CLDR's order; an emoji missing there takes the keywords of
``annotationsDerived/en.xml``; one missing from both (newer than the CLDR release) gets its class
name as its one description row. The ``source`` column says which (cldr, cldr_derived, name).
CLDR is read from a local copy, e.g. the Debian package ``unicode-cldr-core``; CI cannot install
it, which is why the TSV is committed and pinned (its SHA-256 in ``langdml.text.descriptions``).

    python scripts/build_emoji_descriptions.py [--cldr DIR] [-o FILE]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLDR = Path("/usr/share/unicode/cldr/common")  # Debian's unicode-cldr-core
OUT = ROOT / "langdml" / "data" / "emoji_cldr_descriptions.tsv"


def keywords(xml: Path) -> dict[str, list[str]]:
    """Emoji (U+FE0F removed) → its CLDR keywords, in CLDR's order (``type="tts"`` skipped)."""
    root = ET.parse(xml).getroot()
    out = {}
    for node in root.iter("annotation"):
        if node.get("type") == "tts" or not node.text:
            continue
        words = [w.strip() for w in node.text.split("|") if w.strip()]
        if words:
            out[node.get("cp", "").replace("\ufe0f", "")] = words
    return out


def build(cldr: Path) -> tuple[str, Counter]:
    from langdml.data.emoji import pinned_classes

    main = keywords(cldr / "annotations" / "en.xml")
    derived = keywords(cldr / "annotationsDerived" / "en.xml")
    release = _release(cldr)
    buf = io.StringIO()
    buf.write(
        "# Descriptions of the emoji benchmark's classes (emoji_benchmark.tsv, same order):\n"
        "# one row per English keyword of the Unicode CLDR annotations "
        f"(CLDR {release}): source cldr;\n"
        "# an emoji missing there takes annotationsDerived (cldr_derived); one missing from both\n"
        "# has its class name as its description (name). Built by\n"
        "# scripts/build_emoji_descriptions.py. Unicode data: see LICENSE-UNICODE.txt beside it.\n"
    )
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    writer.writerow(["class", "text", "code_point", "source"])
    counts: Counter = Counter()
    for char, name, _ in pinned_classes():
        if char in main:
            words, source = main[char], "cldr"
        elif char in derived:
            words, source = derived[char], "cldr_derived"
        else:
            words, source = [name], "name"
        counts[source] += 1
        for word in words:
            writer.writerow([name, word, f"U+{ord(char):04X}", source])
    return buf.getvalue(), counts


def _release(cldr: Path) -> str:
    """The CLDR release number, from the DTD the data declares (``cldrVersion``)."""
    import re

    dtd = cldr / "dtd" / "ldml.dtd"
    text = dtd.read_text(encoding="utf-8") if dtd.is_file() else ""
    found = re.search(r'cldrVersion\s+CDATA\s+#FIXED\s+"([^"]+)"', text)
    return found.group(1) if found else "unknown release"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cldr", type=Path, default=DEFAULT_CLDR, help="CLDR common/ folder")
    p.add_argument("-o", "--output", type=Path, default=OUT)
    args = p.parse_args(argv)
    if not (args.cldr / "annotations" / "en.xml").is_file():
        hint = "apt-get install unicode-cldr-core, or pass --cldr"
        print(f"error: no annotations/en.xml under {args.cldr} ({hint})", file=sys.stderr)
        return 2
    text, counts = build(args.cldr)
    args.output.write_text(text, encoding="utf-8")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    print(f"{args.output}: {sum(counts.values())} classes ({dict(counts)}), sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
