"""Where a language-vision agreement falls among the benchmarks measured here.

``calibration.tsv`` beside this module holds one row per measured (benchmark, target, trunk
setting, base loss): the target's agreement (``langdml diagnose``'s Spearman on the train
classes), its test Recall@1 gain over no regularizer and over the shuffled-names control of the
same study (paired over seeds, in R@1 points), on how many seeds it beat each, and the results
file the numbers come from. ``scripts/studies/calibration.py`` regenerates it (and the plot on
the calibration results page) from those files.

:func:`placement` turns an agreement into one sentence for ``langdml diagnose``: how many of the
measured targets with a similar agreement gained (beat both no regularizer and the shuffled
control on every seed). It is an empirical
summary of a handful of benchmarks, not a prediction.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from langdml.errors import LangDMLError

CALIBRATION_FILE = Path(__file__).with_name("calibration.tsv")
COLUMNS = (
    "benchmark",
    "target",
    "setting",
    "base_loss",
    "spearman",
    "gain_none",
    "wins_none",
    "gain_shuffled",
    "wins_shuffled",
    "seeds",
    "source",
)
DEFAULT_WIDTH = 0.05  # agreements within this of the query count as "similar"
GAINED = "Gained: beat no regularizer and shuffled names on every seed"
PAGE = "the calibration page of the results (docs/results/calibration.md)"


@dataclass(frozen=True)
class CalibrationPoint:
    """One measured target: its agreement and its R@1 gains (points of %)."""

    benchmark: str
    target: str
    setting: str
    base_loss: str
    spearman: float
    gain_none: float
    wins_none: int
    gain_shuffled: float | None  # None: the study had no shuffled control for it
    wins_shuffled: int
    seeds: int
    source: str

    @property
    def gained(self) -> bool:
        """Beat both no regularizer and the shuffled control, on average and on every seed
        (a gain over ``none`` alone can come from the regularizer's strength, not the names)."""
        return (
            self.gain_shuffled is not None
            and min(self.gain_shuffled, self.gain_none) > 0
            and self.wins_shuffled == self.wins_none == self.seeds
        )

    @property
    def saw_test_classes(self) -> bool:
        """An oracle target (trained on the test classes too): a control of the mechanism, on
        the plot but never among the points a new dataset's text is compared with."""
        return self.target.startswith("oracle")

    @property
    def label(self) -> str:
        return f"{self.benchmark} {self.target}"


def _point(row: dict[str, str], where: str) -> CalibrationPoint:
    try:
        shuffled = row["gain_shuffled"].strip()
        return CalibrationPoint(
            benchmark=row["benchmark"],
            target=row["target"],
            setting=row["setting"],
            base_loss=row["base_loss"],
            spearman=float(row["spearman"]),
            gain_none=float(row["gain_none"]),
            wins_none=int(row["wins_none"]),
            gain_shuffled=float(shuffled) if shuffled else None,
            wins_shuffled=int(row["wins_shuffled"] or 0),
            seeds=int(row["seeds"]),
            source=row["source"],
        )
    except (KeyError, ValueError, AttributeError) as exc:
        raise LangDMLError(
            f"{where}: malformed calibration row ({exc}); expected {COLUMNS}"
        ) from None


def load_points(path: str | Path = CALIBRATION_FILE) -> list[CalibrationPoint]:
    """The calibration points of ``path`` (tab-separated, a header row of ``COLUMNS``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LangDMLError(f"cannot read the calibration table {path}: {exc.strerror}") from None
    lines = [x for x in text.splitlines() if x.strip() and not x.startswith("#")]
    reader = csv.DictReader(lines, delimiter="\t")
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise LangDMLError(f"{path}: expected the columns {', '.join(COLUMNS)}")
    return [_point(row, f"{path} line {i + 2}") for i, row in enumerate(reader)]


def _names(points: list[CalibrationPoint]) -> str:
    return ", ".join(sorted({p.label for p in points}))


def placement(
    spearman: float,
    points: list[CalibrationPoint] | None = None,
    width: float = DEFAULT_WIDTH,
) -> str:
    """One sentence placing an agreement among the measured targets that have a shuffled
    control (oracles excluded: they saw the test classes): how many of those within ``width`` of
    it gained, or where it lies outside the measured range."""
    points = load_points() if points is None else points
    points = [p for p in points if p.gain_shuffled is not None and not p.saw_test_classes]
    head = f"agreement {spearman:.2f}: "
    if not points or not math.isfinite(spearman):
        return head + "no calibration points to compare with"
    gainers = [p for p in points if p.gained]
    low = min(gainers, key=lambda p: p.spearman) if gainers else None
    lowest = (
        f"the lowest agreement that did: {low.spearman:.2f} ({low.label})"
        if low
        else "none did at any measured agreement"
    )
    near = [p for p in points if abs(p.spearman - spearman) <= width]
    if not near:
        rhos = [p.spearman for p in points]
        where = (
            "above every measured target"
            if spearman > max(rhos)
            else "below every measured target"
            if spearman < min(rhos)
            else "between measured targets"
        )
        nearest = min(points, key=lambda p: abs(p.spearman - spearman))
        state = "gained" if nearest.gained else "did not gain"
        return (
            f"{head}{where} (nearest: {nearest.spearman:.2f}, {nearest.label}, which "
            f"{state}); {lowest}. {GAINED}; see {PAGE}"
        )
    wins = [p for p in near if p.gained]
    lo, hi = min(p.spearman for p in near), max(p.spearman for p in near)
    span = f"{lo:.2f}" if lo == hi else f"{lo:.2f}–{hi:.2f}"
    if not wins:
        head += "in the range where no benchmark here gained"
    elif len(wins) == len(near):
        head += "in the range where every benchmark target here gained"
    else:
        head += "in a range where some benchmark targets here gained"
    return (
        f"{head} ({len(wins)} of {len(near)} measured settings at agreement {span}: "
        f"{_names(near)}); {lowest}. {GAINED}; see {PAGE}"
    )
