"""results.md (mean ± std per cell, best per base loss in bold, paired tests vs. no regularizer) and
a bar plot (R@1 and MAP@R per base loss, one bar per regularizer setting, std error bars)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from langdml.diagnose import DEFAULT_K
from langdml.io import atomic_write, atomic_write_text

if TYPE_CHECKING:
    from langdml.ablation.agreement import CellAgreement

BASE_KEYS = ("loss.base.name", "loss.base")
REG_KEY = "loss.regularizers"
SHOWN = (("recall@1", "R@1"), ("map@r", "MAP@R"), ("r_precision", "R-prec"), ("nmi", "NMI"))
TESTED = (("recall@1", "R@1"), ("map@r", "MAP@R"))
# Optional cross-modal columns (runs trained with eval.xmodal: true).
XMODAL = (("xmodal/i2t_r@1", "i→t R@1"), ("xmodal/t2i_map@r", "t→i MAP@R"))
# Optional mistake-severity columns (runs evaluated with a class hierarchy, eval.hierarchy).
HIER = (
    ("hier/top1_error_same_group", "err@1 in group"),
    ("hier/mistake_severity", "severity"),
    ("hier/hp@1", "hP@1"),
)
OPTIONAL = XMODAL + HIER


def _paired_test(a: list[float], b: list[float]) -> tuple[float, float, int]:
    """Mean difference a-b over paired seeds, two-sided paired t-test p-value, wins of a."""
    from scipy import stats

    d = np.asarray(a) - np.asarray(b)
    wins = int((d > 0).sum())
    if len(d) < 2 or np.allclose(d, d[0]):
        return float(d.mean()) if len(d) else math.nan, math.nan, wins
    return float(d.mean()), float(stats.ttest_rel(a, b).pvalue), wins


def holm(pvalues: list[float]) -> list[float]:
    """Holm–Bonferroni step-down adjusted p-values (NaN stays NaN and does not count in m)."""
    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    order = sorted(idx, key=lambda i: pvalues[i])
    m, running = len(order), 0.0
    out = [math.nan] * len(pvalues)
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def bootstrap_ci(
    d: list[float], n_boot: int = 10000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile CI of the mean paired difference, resampling the seeds (pairs) with
    replacement (seeded: the same table every time). It ignores which classes were tested; the
    class × seed interval (``langdml.ablation.class_bootstrap``) includes that spread."""
    d_arr = np.asarray(d, dtype=np.float64)
    if d_arr.size < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = d_arr[rng.integers(0, d_arr.size, size=(n_boot, d_arr.size))].mean(axis=1)
    alpha = (1.0 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def summarise(ablation, rows: list[dict]) -> list[dict[str, Any]]:
    """One record per cell: grid values, per-seed metrics, mean/std, deltas vs. its 'none' cell."""
    ok = [r for r in rows if r["status"] == "ok"]
    by_cell: dict[str, list[dict]] = defaultdict(list)
    for r in ok:
        by_cell[r["cell_id"]].append(r)
    base_key = next((k for k in BASE_KEYS if k in ablation.grid), None)
    cells = []
    seen = set()
    for run in ablation.runs:
        cell = run.cell
        if cell.id in seen:
            continue
        seen.add(cell.id)
        runs = sorted(by_cell.get(cell.id, []), key=_replicate)
        rec: dict[str, Any] = {
            "cell": cell,
            "base": _label(cell.get(base_key)) if base_key else "all",
            "regularizers": _label(cell.get(REG_KEY)) if REG_KEY in ablation.grid else "-",
            "other": cell.label(skip=(*BASE_KEYS, REG_KEY)),
            "seeds": {_replicate(r): r for r in runs},
            "failed": sum(1 for r in rows if r["cell_id"] == cell.id and r["status"] != "ok"),
        }
        for metric, _ in SHOWN + OPTIONAL:
            vals = [float(r[metric]) for r in runs if r.get(metric, "") != ""]
            rec[metric] = (
                float(np.mean(vals)) if vals else math.nan,
                float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan,
            )
        cells.append(rec)
    # Reference: the same cell with no regularizer.
    index = {(c["base"], c["other"], c["regularizers"]): c for c in cells}
    dirs = {
        run.id: getattr(getattr(run, "config", None), "output_dir", None) for run in ablation.runs
    }
    for c in cells:
        ref = index.get((c["base"], c["other"], "none"))
        c["deltas"] = {}
        if ref is None or ref is c:
            continue
        common = sorted(set(c["seeds"]) & set(ref["seeds"]))
        for metric, _ in TESTED:
            a = [float(c["seeds"][s][metric]) for s in common]
            b = [float(ref["seeds"][s][metric]) for s in common]
            if common:
                diffs = [x - y for x, y in zip(a, b)]
                c["deltas"][metric] = (*_paired_test(a, b), len(common))
                c.setdefault("ci", {})[metric] = bootstrap_ci(diffs)
                _class_ci(c, ref, common, metric, dirs)
    # Holm–Bonferroni across every test of the table (all cells, both tested metrics).
    tests = [(c, m) for c in cells for m, _ in TESTED if m in c["deltas"]]
    adjusted = holm([c["deltas"][m][1] for c, m in tests])
    for (c, m), p_adj in zip(tests, adjusted):
        c.setdefault("p_holm", {})[m] = p_adj
    return cells


def _class_ci(c: dict, ref: dict, common: list, metric: str, dirs: dict) -> None:
    """The class × seed bootstrap CI of a delta (``c["ci_class"]``), when every paired run
    stored per_class.csv for the same test classes."""
    from langdml.ablation.class_bootstrap import cell_delta_ci

    run_a = [dirs.get(c["seeds"][s].get("run_id")) for s in common]
    run_b = [dirs.get(ref["seeds"][s].get("run_id")) for s in common]
    if None in run_a or None in run_b:
        return
    found = cell_delta_ci(run_a, run_b, metric)
    if found is not None:
        c.setdefault("ci_class", {})[metric] = found[1:]


def _replicate(row: dict) -> tuple:
    """What pairs runs across cells: the seed, and the validation fold under data.folds (the
    table's means, tests and "seeds" count are then over seeds x folds)."""
    return (row["seed"], row.get("fold", ""))


def _label(value: Any) -> str:
    from langdml.ablation.spec import value_label

    return value_label(value)


def _fmt(mean_std: tuple[float, float], scale: float = 100.0) -> str:
    m, s = mean_std
    if math.isnan(m):
        return "—"
    return f"{m * scale:.2f} ± {s * scale:.2f}" if not math.isnan(s) else f"{m * scale:.2f}"


def _agreement_head(agreements: dict[str, CellAgreement]) -> list[str]:
    k = next((a.agreement.k for a in agreements.values() if a.agreement), DEFAULT_K)
    return ["agreement ρ", f"agreement {k}-NN"]


def _agreement_row(cell_id: str, agreements: dict[str, CellAgreement]) -> list[str]:
    """Spearman and k-NN overlap of the row's text; blank without text, — when not computed."""
    a = agreements.get(cell_id)
    if a is None:
        return ["", ""]
    if a.spearman is None or a.overlap is None:
        return ["—", "—"]
    mark = " (shuffled)" if a.shuffled else " (PLG)" if a.pseudo_labels else ""
    return [f"{a.spearman:.3f}{mark}", f"{100 * a.overlap:.1f} %"]


def agreement_notes(agreements: dict[str, CellAgreement]) -> str:
    """How to read the agreement columns, and why a row has none."""
    found = [a.agreement for a in agreements.values() if a.agreement]
    if not found:
        text = "Agreement: not computed."
    else:
        r = found[0]
        text = (
            f"Agreement (`langdml diagnose` per row, on the {r.num_classes} train classes): "
            "Spearman ρ between the row's class-name similarities and the frozen trunk's "
            f"class-centroid similarities, and the mean overlap of each class's {r.k} nearest "
            f"classes by name and by image (chance {100 * r.chance_overlap:.1f} %). Blank: the "
            "row uses no text. (shuffled): the shuffled-names control, mean over "
            f"{r.seeds} permutations. (PLG): each class's text is the mean of its pseudo-label "
            "embeddings. It describes the text before training; it predicts no gain."
        )
    why = sorted({a.error for a in agreements.values() if a.error})
    return text + "".join(f" — (no agreement): {e.rstrip('.')}." for e in why)


def markdown_table(cells: list[dict], agreements: dict[str, CellAgreement] | None = None) -> str:
    """The results table; with ``agreements`` (cell id → its text's agreement), two more columns."""
    has_other = any(c["other"] != "-" for c in cells)
    shown = SHOWN + tuple(x for x in OPTIONAL if any(not math.isnan(c[x[0]][0]) for c in cells))
    head = (
        ["base loss", "regularizers"] + (["setting"] if has_other else []) + [n for _, n in shown]
    )
    head += _agreement_head(agreements) if agreements is not None else []
    head += [f"Δ{n} vs none [95% CI] (p, p_Holm, wins)" for _, n in TESTED] + ["seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    best: dict[tuple[str, str], float] = {}
    for c in cells:
        for metric, _ in shown:
            key = (c["base"], metric)
            if not math.isnan(c[metric][0]):
                best[key] = max(best.get(key, -math.inf), c[metric][0])
    for c in cells:
        row = [c["base"], c["regularizers"]] + ([c["other"]] if has_other else [])
        for metric, _ in shown:
            text = _fmt(c[metric])
            row.append(f"**{text}**" if c[metric][0] == best.get((c["base"], metric)) else text)
        row += _agreement_row(c["cell"].id, agreements) if agreements is not None else []
        for metric, _ in TESTED:
            d = c["deltas"].get(metric)
            if d is None:
                row.append("")
            else:
                delta, p, wins, n = d
                ci = _ci_text(c, metric)
                p_adj = c.get("p_holm", {}).get(metric, math.nan)
                p_text = "n/a" if math.isnan(p) else f"{p:.3f}"
                adj_text = "n/a" if math.isnan(p_adj) else f"{p_adj:.3f}"
                row.append(f"{delta * 100:+.2f}{ci} (p={p_text}, p_Holm={adj_text}, {wins}/{n})")
        row.append(str(len(c["seeds"])) + (f" ({c['failed']} failed)" if c["failed"] else ""))
        lines.append("| " + " | ".join(row) + " |")
    notes = (
        "Metrics in %, mean ± sample std over seeds, on classes never seen in training. "
        "Bold: best mean per base loss. Δ: paired difference to the same base loss without "
        "regularizer over the same seeds; [95% CI]: paired bootstrap of the mean Δ resampling "
        "test classes and seeds (10,000 resamples, from each run's per_class.csv); marked ˢ: "
        "over seeds only (runs without per_class.csv; with 3 seeds it is coarse); p: two-sided "
        "paired "
        "t-test; p_Holm: Holm–Bonferroni-adjusted across all tests of this table; wins: seeds "
        "where the regularized run is better."
    )
    if any(key[1] != "" for c in cells for key in c["seeds"]):
        notes += (
            " Cross-validation (data.folds K): each seed ran once per fold, validating on that "
            "fold of the TRAIN classes (not the test classes); means, pairs, wins and the seeds "
            "column are over seeds x folds."
        )
    if agreements is not None:
        notes += "\n\n" + agreement_notes(agreements)
    return "\n".join(lines) + "\n\n" + notes + "\n"


def _ci_text(c: dict, metric: str) -> str:
    """The class × seed CI when there is one, else the seeds-only one marked ˢ."""
    lo, hi = c.get("ci_class", {}).get(metric, (math.nan, math.nan))
    mark = ""
    if math.isnan(lo):
        lo, hi = c.get("ci", {}).get(metric, (math.nan, math.nan))
        mark = "ˢ"
    return "" if math.isnan(lo) else f" [{lo * 100:+.2f}, {hi * 100:+.2f}]{mark}"


def stats_csv(cells: list[dict]) -> str:
    """Per cell and tested metric: Δ, bootstrap CI over seeds, bootstrap CI over test classes
    and seeds (empty without per_class.csv), raw and Holm-adjusted p, wins."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        [
            "base",
            "regularizers",
            "setting",
            "metric",
            "delta",
            "ci_low",
            "ci_high",
            "p",
            "p_holm",
            "wins",
            "seeds",
            "ci_class_low",
            "ci_class_high",
        ]
    )
    for c in cells:
        for metric, _ in TESTED:
            if metric not in c["deltas"]:
                continue
            delta, p, wins, n = c["deltas"][metric]
            lo, hi = c.get("ci", {}).get(metric, (math.nan, math.nan))
            p_adj = c.get("p_holm", {}).get(metric, math.nan)
            c_lo, c_hi = c.get("ci_class", {}).get(metric, ("", ""))
            w.writerow(
                [
                    c["base"],
                    c["regularizers"],
                    c["other"],
                    metric,
                    delta,
                    lo,
                    hi,
                    p,
                    p_adj,
                    wins,
                    n,
                    c_lo,
                    c_hi,
                ]
            )
    return buf.getvalue()


def plot(cells: list[dict], path: Path) -> Path | None:
    """The bar plot; arm labels and cell names are drawn as plain text (never mathtext)."""
    import matplotlib

    matplotlib.use("Agg")
    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        return _plot(cells, path)


def _plot(cells: list[dict], path: Path) -> Path | None:
    import matplotlib.pyplot as plt

    bases = list(dict.fromkeys(c["base"] for c in cells))
    settings = list(dict.fromkeys((c["regularizers"], c["other"]) for c in cells))
    if not cells:
        return None
    fig, axes = plt.subplots(1, len(TESTED), figsize=(5.5 * len(TESTED), 4), squeeze=False)
    width = 0.8 / max(1, len(settings))
    lookup = {(c["base"], c["regularizers"], c["other"]): c for c in cells}
    for ax, (metric, name) in zip(axes[0], TESTED):
        for j, (reg, other) in enumerate(settings):
            means, stds = [], []
            for b in bases:
                c = lookup.get((b, reg, other))
                m, s = c[metric] if c else (math.nan, math.nan)
                means.append(m * 100)
                stds.append(0 if math.isnan(s) else s * 100)
            xs = np.arange(len(bases)) + (j - (len(settings) - 1) / 2) * width
            label = reg if other == "-" else f"{reg} [{other}]"
            ax.bar(xs, means, width, yerr=stds, capsize=3, label=label)
        ax.set_xticks(np.arange(len(bases)), bases, rotation=15)
        ax.set_ylabel(f"{name} (%)")
        ax.set_title(f"{name} on unseen classes")
        finite = [c[metric][0] * 100 for c in cells if not math.isnan(c[metric][0])]
        if finite:
            lo, hi = min(finite), max(finite)
            ax.set_ylim(max(0.0, lo - 0.15 * (hi - lo + 1) - 2), hi + 0.15 * (hi - lo + 1) + 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0][-1].legend(fontsize=8, title="regularizers", loc="best")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    return path


def versions_note(ablation, rows: list[dict]) -> str:
    """One line naming the package versions the runs ran with (their provenance.json; the
    reporting process's versions for runs without one)."""
    import json

    from langdml.provenance import PROVENANCE, package_versions, versions_line

    ok = {r["run_id"] for r in rows if r["status"] == "ok"}
    lines: set[str] = set()
    for run in ablation.runs:
        path = Path(run.config.output_dir) / PROVENANCE
        if run.id in ok and path.is_file():
            try:
                lines.add(versions_line(json.loads(path.read_text())["versions"]))
            except (ValueError, KeyError):
                pass
    if not lines:
        now = versions_line(package_versions())
        return f"Versions (of this report; the runs recorded none): {now}."
    if len(lines) == 1:
        return f"Versions: {lines.pop()}."
    return "Versions differ between runs: " + " | ".join(sorted(lines)) + "."


def incomplete_note(total: int, waiting: dict[str, list[str]] | None) -> str:
    """A paragraph saying the table is incomplete and which runs it lacks ("" when complete)."""
    waiting = {k: v for k, v in (waiting or {}).items() if v}
    if not waiting:
        return ""
    missing = sum(len(v) for v in waiting.values())
    parts = [f"{len(v)} {state} ({', '.join(v)})" for state, v in waiting.items()]
    return (
        f"**Incomplete**: {total - missing} of {total} runs finished; not in this table: "
        + "; ".join(parts)
        + ". Rerun the ablation (or `langdml report`) when they finish.\n\n"
    )


def write_report(
    out: Path,
    ablation,
    rows: list[dict],
    baselines: dict[str, dict] | None = None,
    agreements: dict[str, CellAgreement] | None = None,
    waiting: dict[str, list[str]] | None = None,
) -> tuple[str, Path | None]:
    """results.md, results_stats.csv and results.png; ``agreements``: see ``markdown_table``;
    ``waiting``: the runs still ``running`` / ``pending``, named at the top when there are any."""
    cells = summarise(ablation, rows)
    failed = [r for r in rows if r["status"] != "ok"]
    md = f"# Ablation: {ablation.name}\n\n" + incomplete_note(len(ablation.runs), waiting)
    md += markdown_table(cells, agreements)
    names = {
        "raw_features": "raw frozen trunk features (no training)",
        "untrained": "untrained head (one run's random initialisation)",
    }
    for key, label in names.items():
        m = (baselines or {}).get(key)
        if m:
            md += (
                f"\nReference, {label}: R@1 {m['recall@1'] * 100:.2f}, "
                f"MAP@R {m['map@r'] * 100:.2f}."
            )
    md += "\n" if baselines else ""
    md += "\n" + versions_note(ablation, rows) + "\n"
    if failed:
        md += "\nFailed runs:\n" + "".join(f"- {r['run_id']}: {r['error']}\n" for r in failed)
    atomic_write_text(out / "results.md", md)
    atomic_write_text(out / "results_stats.csv", stats_csv(cells))
    png = plot(cells, out / "results.png")
    return md, png
