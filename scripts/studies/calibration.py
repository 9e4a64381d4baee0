"""The agreement → gain calibration: every language target measured here, from its results files.

For each (benchmark, target, trunk setting, base loss) of the studies below, the target's
language-vision agreement (``langdml diagnose`` Spearman on the train classes) and its test
Recall@1 gain, paired over the seeds of its study, over no regularizer and over the study's
shuffled-names control (MiniLM class names given to a permutation of the classes, same weight).

Sources (all under docs/results):
- emoji_study/results.csv + diagnose.json (+ diagnose_plg.json when present): MiniLM / MPNet
  names and PLG, frozen and fine-tuned, multi-similarity and Proxy Anchor;
- emoji_positive_control.csv + emoji_diagnose_controls.md: the oracle and teacher targets and
  names, frozen multi-similarity;
- shapes_study/results.csv + diagnose.json / diagnose_holdout.json: MiniLM / MPNet names and the
  oracle on shapes and shapes:holdout.

Writes langdml/calibration.tsv (packaged: ``langdml diagnose`` places a new agreement among these
points), docs/results/calibration.png and the table of docs/results/calibration.md (between its
two markers), and prints the table.

    python scripts/studies/calibration.py
"""

from __future__ import annotations

import csv
import json
import re
import statistics
from pathlib import Path

from langdml.calibration import CALIBRATION_FILE as TSV
from langdml.calibration import COLUMNS

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"
PNG = RESULTS / "calibration.png"
PAGE = RESULTS / "calibration.md"
MARKS = ("<!-- calibration-table -->", "<!-- /calibration-table -->")


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _by_seed(rows: list[dict], arm: str, arm_key: str) -> dict[int, float]:
    return {int(r["seed"]): 100 * float(r["recall@1"]) for r in rows if r[arm_key] == arm}


def _gain(got: dict[int, float], ref: dict[int, float]) -> tuple[float | None, int, int]:
    seeds = sorted(set(got) & set(ref))
    if not seeds:
        return None, 0, 0
    diffs = [got[s] - ref[s] for s in seeds]
    return statistics.mean(diffs), sum(d > 0 for d in diffs), len(seeds)


def _points(rows, arm_key, group_keys, arms, control, meta) -> list[dict]:
    """One point per (group, arm): ``arms`` maps an arm to (target label, agreement)."""
    out = []
    for group in sorted({tuple(r[k] for k in group_keys) for r in rows}):
        cell = [r for r in rows if tuple(r[k] for k in group_keys) == group]
        none = _by_seed(cell, "none", arm_key)
        shuffled = _by_seed(cell, control, arm_key)
        if len(none) < 2:
            continue  # a cell without its reference over >= 2 seeds is not a measurement
        for arm, (target, rho) in arms.items():
            got = _by_seed(cell, arm, arm_key)
            g_none, wins_none, n = _gain(got, none)
            if g_none is None or rho is None:
                continue
            g_shuf, wins, _ = _gain(got, shuffled) if arm != control else (None, 0, 0)
            out.append(
                {
                    **meta,
                    "target": target,
                    "setting": group[0],
                    "base_loss": group[1],
                    "spearman": f"{rho:.3f}",
                    "gain_none": f"{g_none:+.2f}",
                    "wins_none": wins_none,
                    "gain_shuffled": "" if g_shuf is None else f"{g_shuf:+.2f}",
                    "wins_shuffled": wins,
                    "seeds": n,
                }
            )
    return out


def _diagnose(path: Path) -> dict[str, dict]:
    return {d["model"]: d for d in json.loads(path.read_text())} if path.exists() else {}


def emoji_study() -> list[dict]:
    folder = RESULTS / "emoji_study"
    agree = _diagnose(folder / "diagnose.json")
    plg = _diagnose(folder / "diagnose_plg.json")
    rows = _read_csv(folder / "results.csv")
    for r in rows:  # the collapsed fine-tuned Proxy Anchor at lr 1e-3 is no measurement
        r["setting"] = r["setting"].split(" ")[0] if "lr" in r["setting"] else r["setting"] + "!"
        if r["setting"] == "frozen!" or r["loss.base.name"] == "multi_similarity":
            r["setting"] = r["setting"].rstrip("!")
    rows = [r for r in rows if not r["setting"].endswith("!")]
    arms = {
        "names_minilm": ("names (MiniLM)", agree.get("minilm", {}).get("spearman")),
        "names_mpnet": ("names (MPNet)", agree.get("mpnet", {}).get("spearman")),
        "shuffled_minilm": (
            "shuffled names (MiniLM)",
            agree.get("minilm", {}).get("shuffled_spearman"),
        ),
        "plg_minilm": ("PLG (MiniLM)", plg.get("minilm", {}).get("spearman")),
        "plg_mpnet": ("PLG (MPNet)", plg.get("mpnet", {}).get("spearman")),
    }
    meta = {"benchmark": "emoji", "source": "emoji_study/results.csv"}
    group = ("setting", "loss.base.name")
    return _points(rows, "loss.regularizers", group, arms, "shuffled_minilm", meta)


def _controls_agreement() -> dict[str, float]:
    text = (RESULTS / "emoji_diagnose_controls.md").read_text()
    found = {}
    for name, rho in re.findall(r"^\| (\S+) \| \d+ \| (-?[\d.]+) \|", text, flags=re.M):
        found[Path(name).stem if name.startswith("file:") else name] = float(rho)
    return found


def emoji_positive_control() -> list[dict]:
    agree = _controls_agreement()
    rows = _read_csv(RESULTS / "emoji_positive_control.csv")
    for r in rows:
        r["setting"], r["loss"] = "frozen, ω 10", "multi_similarity"
    arms = {
        "oracle": ("oracle", agree.get("oracle")),
        "teacher": ("teacher", agree.get("teacher")),
        "names": ("names (MiniLM)", agree.get("minilm")),
    }
    meta = {"benchmark": "emoji", "source": "emoji_positive_control.csv"}
    rows = [r for r in rows if r["status"] == "ok"]
    return _points(rows, "loss.regularizers", ("setting", "loss"), arms, "shuffled_names", meta)


def shapes_study() -> list[dict]:
    folder = RESULTS / "shapes_study"
    if not (folder / "results.csv").exists():
        return []
    rows = _read_csv(folder / "results.csv")
    out = []
    for bench, name in (("shapes", "diagnose.json"), ("shapes:holdout", "diagnose_holdout.json")):
        agree = _diagnose(folder / name)
        oracle = next((v for k, v in agree.items() if k.startswith("file:")), {})
        arms = {
            "names_minilm": ("names (MiniLM)", agree.get("minilm", {}).get("spearman")),
            "names_mpnet": ("names (MPNet)", agree.get("mpnet", {}).get("spearman")),
            "shuffled_minilm": (
                "shuffled names (MiniLM)",
                agree.get("minilm", {}).get("shuffled_spearman"),
            ),
            "oracle": ("oracle", oracle.get("spearman")),
        }
        meta = {"benchmark": bench, "source": "shapes_study/results.csv"}
        mine = [r for r in rows if r["benchmark"] == bench]
        out += _points(mine, "arm", ("setting", "loss"), arms, "shuffled_minilm", meta)
    return out


def write_tsv(points: list[dict]) -> None:
    lines = [
        "# Agreement -> R@1 gain of every language target measured here;",
        "# scripts/studies/calibration.py writes it from the results files named in `source`",
        "# (under docs/results).",
        "\t".join(COLUMNS),
    ]
    lines += ["\t".join(str(p[c]) for c in COLUMNS) for p in points]
    TSV.write_text("\n".join(lines) + "\n", encoding="utf-8")


def plot(points: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 5), sharex=True)
    markers = {"emoji": "o", "shapes": "s", "shapes:holdout": "D"}
    colours = {"names": "tab:blue", "shuffled": "tab:gray", "PLG": "tab:cyan"}
    colours.update({"oracle": "tab:red", "teacher": "tab:orange"})
    for ax, key, title in (
        (axes[0], "gain_none", "gain over no regularizer"),
        (axes[1], "gain_shuffled", "gain over shuffled names"),
    ):
        seen = set()
        for p in points:
            if not p[key]:
                continue
            kind = p["target"].split(" ")[0]
            label = f"{p['benchmark']} {kind}"
            colour = colours.get(kind, "black")
            hollow = p["setting"].startswith("ft2")
            ax.scatter(
                float(p["spearman"]),
                float(p[key]),
                marker=markers[p["benchmark"]],
                facecolors="none" if hollow else colour,
                edgecolors=colour,
                alpha=0.8,
                label=None if label in seen else label,
            )
            seen.add(label)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xlabel("agreement (langdml diagnose Spearman, train classes)")
        ax.set_ylabel("Δ test R@1 (points)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=5, frameon=False)
    fig.suptitle("Language guidance: agreement → gain (filled: frozen trunk; hollow: 2 stages)")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(PNG, dpi=120)


def markdown(points: list[dict]) -> str:
    lines = [
        "| benchmark | target | setting | base loss | agreement ρ | ΔR@1 vs none "
        "(wins) | ΔR@1 vs shuffled (wins) | source |",
        "|---|---|---|---|---:|---:|---|---|",
    ]
    for p in points:
        shuf = (
            f"{p['gain_shuffled']} ({p['wins_shuffled']}/{p['seeds']})"
            if p["gain_shuffled"]
            else ""
        )
        lines.append(
            f"| {p['benchmark']} | {p['target']} | {p['setting']} | {p['base_loss']} | "
            f"{p['spearman']} | {p['gain_none']} ({p['wins_none']}/{p['seeds']}) | {shuf} | "
            f"{p['source']} |"
        )
    return "\n".join(lines)


def main() -> None:
    points = emoji_study() + emoji_positive_control() + shapes_study()
    points.sort(key=lambda p: (float(p["spearman"]), p["benchmark"], p["setting"]))
    write_tsv(points)
    plot(points)
    table = markdown(points)
    if PAGE.exists():  # the page's table is this output, between its two markers
        text = PAGE.read_text(encoding="utf-8")
        head, rest = text.split(MARKS[0], 1)
        tail = rest.split(MARKS[1], 1)[1]
        PAGE.write_text(f"{head}{MARKS[0]}\n{table}\n{MARKS[1]}{tail}", encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
