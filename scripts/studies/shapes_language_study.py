"""When names describe looks: the language study on the shapes benchmark, as one resumable recipe.

The shapes classes are named by their visual attributes ("red striped star"), so here — unlike
emoji — a class name's words describe its appearance. Arms, each beside the same base loss:
``none`` (the reference of every delta), ``names_minilm`` / ``names_mpnet`` (class names through
the packaged MiniLM / MPNet), ``shuffled_minilm`` (MiniLM names given to a seeded permutation of
the classes: same vectors, wrong classes) and ``oracle`` (class centroids of a head trained on ALL
classes, test classes included: a control of the mechanism, never a method; made by
``scripts/studies/positive_control.py --dataset shapes``). Trunk settings: frozen trunk + linear
head, and the last two stages fine-tuned (``model.trainable_blocks: 2``); base losses
multi-similarity and Proxy Anchor.

Protocol, per part (``--parts``, run in this order: ``frozen``, ``holdout``, ``ft2``):
1. targets: the oracle target file of the benchmark (``scripts/studies/positive_control.py``).
2. tune: on the validation split carved from the TRAIN classes (30 % of them), seeds 0 and 1,
   the MiniLM names weight of each base loss is chosen from a small grid by mean validation R@1.
   Test classes are never looked at. MPNet names, shuffled names and the oracle reuse that weight
   (one weight per base loss: not tuned per target, for CPU time), and the fine-tuned setting
   reuses the frozen choice (not re-tuned, for the same reason).
3. test: every arm at its chosen weight, seeds 0, 1, 2, on the held-out test classes. ``frozen``:
   ``shapes``, both losses; ``holdout``: ``shapes:holdout`` (test classes include every class of
   a colour never seen in training), Proxy Anchor (where names gained on ``shapes``), tuned on
   its own train-class validation split (the ``shapes`` train classes hold some of its test
   classes); ``ft2``: ``shapes`` with the last two stages trained, seed by seed and in tiers
   across both losses (controls and MiniLM names first), so a cut-off run leaves the most
   informative comparisons complete.
4. report (after each part): each test ablation's own table (``langdml ablate``: paired Δ to
   ``none``, class × seed bootstrap CI, agreement columns) copied beside a summary with Δ to
   ``shuffled``, results.csv, and ``diagnose*.json`` (``langdml diagnose`` for MiniLM, MPNet and
   the oracle target). Rerunning resumes: finished runs are kept.

Frozen cells train 10 epochs (the shapes head converges quickly; the CPU budget is two cores
shared with other work); fine-tuned cells 4.

    python scripts/studies/shapes_language_study.py all              # resumable after a kill
    python scripts/studies/shapes_language_study.py all --parts ft2  # one part
    python scripts/studies/shapes_language_study.py report
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from study_runs import arm as run_arm
from study_runs import finished_run

ROOT = Path(__file__).resolve().parents[2]
RUNS = Path("runs") / "shapes_study"  # relative to ROOT (the recipe runs there)
DOCS = ROOT / "docs" / "results" / "shapes_study"
BASE = "../../../configs/emoji_demo.yaml"  # relative to the ablation files in DOCS
# The two benchmarks: ``shapes`` (test classes are unseen combinations of seen attributes) and
# ``shapes:holdout`` (test classes include every class of a colour never seen in training; tuned on
# its own train-class validation split, since the ``shapes`` train classes hold some of its test
# classes). Prefix: of the ablation files and run folders.
BENCHMARKS = {
    "shapes": {"prefix": "", "oracle": "cache/controls/shapes/oracle.safetensors"},
    "shapes:holdout": {
        "prefix": "holdout_",
        "oracle": "cache/controls/shapes-holdout/oracle.safetensors",
        "losses": ["proxy_anchor"],  # the loss where names gained on `shapes`
    },
}
SEEDS = [0, 1, 2]
TUNE_SEEDS = [0, 1]
SETTINGS = {
    "frozen": {"model.trainable_blocks": 0, "train.epochs": 10, "eval.every": 10},
    "ft2": {"model.trainable_blocks": 2, "train.epochs": 4, "eval.every": 4},
}
LOSSES = {"multi_similarity": [0.3, 3.0, 30.0], "proxy_anchor": [10.0, 100.0, 1000.0]}
# Fine-tuned Proxy Anchor at the frozen lr (1e-3, proxies x100) collapsed on emoji; 1e-4 did not.
FT_LOSSES = {"multi_similarity": {}, "proxy_anchor": {"optimizer.lr": 1e-4}}
COMMON = {"eval.clustering": False}
ARMS = ["none", "names_minilm", "shuffled_minilm", "oracle", "names_mpnet"]
TIERS = [("none", "names_minilm", "shuffled_minilm"), ("oracle", "names_mpnet")]


def _write_spec(spec: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


def _ablate(spec: dict, name: str, path: Path | None = None) -> list[dict]:
    """Write the ablation file (by default beside the results, committed) and run it; finished
    runs are kept, so a rerun resumes."""
    path = path or DOCS / f"{name}.yaml"
    _write_spec(spec, path)
    cmd = [sys.executable, "-m", "langdml", "ablate", str(path), "--workers", "1", "--no-progress"]
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT)
    results = ROOT / spec["output_dir"] / "results.json"
    if not results.exists():
        raise SystemExit(f"ablation {name} wrote no results (exit {proc.returncode})")
    return json.loads(results.read_text())


def targets(bench: str) -> None:
    oracle = BENCHMARKS[bench]["oracle"]
    if (ROOT / oracle).exists():
        return
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "studies" / "positive_control.py"),
        "--dataset",
        bench,
        "--out",
        str(Path(oracle).parent),
    ]
    print("$", " ".join(cmd), flush=True)
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    print(out, flush=True)
    DOCS.mkdir(parents=True, exist_ok=True)
    (DOCS / f"{BENCHMARKS[bench]['prefix']}targets.txt").write_text(out)


def _losses(bench: str) -> list[str]:
    return BENCHMARKS[bench].get("losses", list(LOSSES))


def _key(bench: str, loss: str) -> str:
    return loss if bench == "shapes" else f"{BENCHMARKS[bench]['prefix'].rstrip('_')}/{loss}"


def _names(model: str, weight: float) -> dict:
    return {
        "loss.regularizers": "language",
        "text.text_model": model,
        "loss.language.weight": weight,
    }


def tune(bench: str) -> dict:
    path = DOCS / "tuned.json"
    chosen: dict = json.loads(path.read_text()) if path.exists() else {}
    for loss in _losses(bench):
        grid = LOSSES[loss]
        if _key(bench, loss) in chosen:
            continue
        name = f"tune_{BENCHMARKS[bench]['prefix']}frozen_{loss}"
        arms = {"none": {"loss.regularizers": "none"}}
        arms.update({f"minilm@{w:g}": _names("minilm", w) for w in grid})
        spec = {
            "base": BASE,
            "output_dir": str(RUNS / name),
            "overrides": {
                **COMMON,
                "data.dataset": bench,
                **SETTINGS["frozen"],
                "loss.base.name": loss,
                "data.validation_fraction": 0.3,
            },
            "seeds": TUNE_SEEDS,
            "grid": {"loss.regularizers": arms},
        }
        rows = [r for r in _ablate(spec, name) if r["status"] == "ok"]
        val = {}
        for arm in arms:
            got = [r["recall@1"] for r in rows if r["loss.regularizers"] == arm]
            if len(got) == len(TUNE_SEEDS):
                val[arm] = statistics.mean(got)
        weights = {w: val[f"minilm@{w:g}"] for w in grid if f"minilm@{w:g}" in val}
        if not weights:
            raise SystemExit(f"{name}: no language arm finished")
        chosen[_key(bench, loss)] = {
            "weight": max(weights, key=weights.get),
            "val_recall@1": {f"{w:g}": round(100 * v, 2) for w, v in weights.items()},
            "val_recall@1_none": round(100 * val.get("none", float("nan")), 2),
            "seeds": TUNE_SEEDS,
        }
        path.write_text(json.dumps(chosen, indent=1) + "\n")
    return chosen


def _arms(weight: float, oracle: str) -> dict:
    return {
        "none": {"loss.regularizers": "none"},
        "names_minilm": _names("minilm", weight),
        "shuffled_minilm": {**_names("minilm", weight), "loss.language.shuffled_names": True},
        "oracle": _names(f"file:{oracle}", weight),
        "names_mpnet": _names("mpnet", weight),
    }


def _test_spec(chosen: dict, bench: str, setting: str, loss: str) -> dict:
    prefix = BENCHMARKS[bench]["prefix"]
    return {
        "base": BASE,
        "output_dir": str(RUNS / f"test_{prefix}{setting}_{loss}"),
        "overrides": {
            **COMMON,
            "data.dataset": bench,
            **SETTINGS[setting],
            **(FT_LOSSES[loss] if setting == "ft2" else {}),
            "loss.base.name": loss,
        },
        "seeds": SEEDS,
        "grid": {
            "loss.regularizers": _arms(
                chosen[_key(bench, loss)]["weight"], BENCHMARKS[bench]["oracle"]
            )
        },
    }


def test_frozen(bench: str) -> None:
    chosen = json.loads((DOCS / "tuned.json").read_text())
    for loss in _losses(bench):
        name = f"test_{BENCHMARKS[bench]['prefix']}frozen_{loss}"
        _ablate(_test_spec(chosen, bench, "frozen", loss), name)


def test_ft2() -> None:
    """The fine-tuned cells of ``shapes``, in tiers across both losses."""
    chosen = json.loads((DOCS / "tuned.json").read_text())
    for loss in LOSSES:
        _write_spec(_test_spec(chosen, "shapes", "ft2", loss), DOCS / f"test_ft2_{loss}.yaml")
    # A subset of named arms or seeds keeps the run ids of the whole grid (the ablation runner
    # hashes each run's settings), so the tiers fill the same run folders the whole grid would.
    # Seed-major: a fine-tuned run costs ~6 min on the shared cores, so a cut-off run should leave
    # whole (none, names, shuffled) triples of both losses rather than one arm's three seeds.
    for seed in SEEDS:
        for tier in TIERS:
            for loss in FT_LOSSES:
                spec = yaml.safe_load((DOCS / f"test_ft2_{loss}.yaml").read_text())
                arms = spec["grid"]["loss.regularizers"]
                spec["grid"]["loss.regularizers"] = {k: v for k, v in arms.items() if k in tier}
                spec["seeds"] = [seed]
                path = ROOT / spec["output_dir"] / f"tier-{tier[0]}-seed{seed}.yaml"
                _ablate(spec, f"test_ft2_{loss}", path)


def _agreement(bench: str) -> list:
    out = (
        DOCS / f"diagnose{'' if bench == 'shapes' else '_' + BENCHMARKS[bench]['prefix'][:-1]}.json"
    )
    if not out.exists():
        cmd = [sys.executable, "-m", "langdml", "diagnose", "--dataset", bench, "--json"]
        for model in ("minilm", "mpnet", f"file:{BENCHMARKS[bench]['oracle']}"):
            cmd += ["--model", model]
        text = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
        out.write_text(text)
    return json.loads(out.read_text())


def report() -> None:
    """Copy each test ablation's own table, write results.csv and the summary results.md."""
    rows = []
    for spec_path in sorted(DOCS.glob("test_*.yaml")):
        spec = yaml.safe_load(spec_path.read_text())
        out = ROOT / spec["output_dir"]
        # the fine-tuned grids run in slices (tiers x seeds): their own table shows the last slice
        if (out / "results.md").exists() and not spec_path.stem.startswith("test_ft2"):
            text = (out / "results.md").read_text()
            text = re.sub(r"(/[\w.+-]+)+/(runs/shapes_study)", r"\2", text)
            (DOCS / f"{spec_path.stem}.md").write_text(text)
        o = spec["overrides"]
        where = {
            "benchmark": o["data.dataset"],
            "setting": "frozen" if o["model.trainable_blocks"] == 0 else "ft2",
            "loss": o["loss.base.name"],
        }
        for path in sorted((out / "runs").glob("*/metrics.json")):
            row = _row(path)
            if row:
                rows.append({**row, **where, "dir": path.parent})
    with open(DOCS / "results.csv", "w", newline="") as fh:
        keys = ["benchmark", "setting", "loss", "arm", "seed", "recall@1", "map@r", "r_precision"]
        writer = csv.DictWriter(fh, [*keys, "run"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = _summary(rows) + _holdout_split(rows)
    for bench in sorted({r["benchmark"] for r in rows}):
        lines += ["", f"Agreement (`langdml diagnose --dataset {bench}`, train classes):", ""]
        lines += ["```", json.dumps(_agreement(bench), indent=1), "```"]
    (DOCS / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _row(path: Path) -> dict | None:
    found = finished_run(path)
    if found is None:
        return None
    cfg, final = found
    arm = run_arm(cfg)
    return {
        **final,
        "arm": arm,
        "seed": cfg["seed"],
        "run": path.parent.name,
    }


def _summary(rows: list[dict]) -> list[str]:
    lines = [
        "| benchmark | setting | base loss | arm | R@1 | MAP@R | ΔR@1 vs none [95% CI] (wins) "
        "| ΔR@1 vs shuffled [95% CI] (wins) | seeds |",
        "|---|---|---|---|---:|---:|---|---|---:|",
    ]
    for group in sorted({(r["benchmark"], r["setting"], r["loss"]) for r in rows}):
        cell = [r for r in rows if (r["benchmark"], r["setting"], r["loss"]) == group]
        by_arm = {a: {r["seed"]: r for r in cell if r["arm"] == a} for a in ARMS}
        for arm in ARMS:
            got = by_arm[arm]
            if not got:
                continue
            r1 = [100 * r["recall@1"] for r in got.values()]
            mr = [100 * r["map@r"] for r in got.values()]
            lines.append(
                f"| {' | '.join(group)} | {arm} | {_ms(r1)} | {_ms(mr)} | "
                f"{_delta(got, by_arm['none'])} | {_delta(got, by_arm['shuffled_minilm'])} "
                f"| {len(got)} |"
            )
    return lines


def _per_class(run_dir: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    with open(run_dir / "per_class.csv", newline="", encoding="utf-8") as fh:
        got = list(csv.DictReader(fh))
    names = [r["class_name"] for r in got]
    queries = np.array([int(r["queries"]) for r in got])
    return names, queries, np.array([float(r["recall@1"]) for r in got])


def _holdout_split(rows: list[dict]) -> list[str]:
    """On ``shapes:holdout``: each arm's ΔR@1 on the test classes of the colour never seen in
    training and on the other test classes (unseen combinations), class × seed bootstrap."""
    from langdml.ablation.class_bootstrap import paired_class_seed_bootstrap
    from langdml.data.shapes import HOLDOUT_COLOUR

    cell = [r for r in rows if r["benchmark"] == "shapes:holdout"]
    if not cell:
        return []
    by_arm = {a: {r["seed"]: r for r in cell if r["arm"] == a} for a in ARMS}
    lines = [
        "",
        f"`shapes:holdout`, ΔR@1 split by test class: the {HOLDOUT_COLOUR} classes (a colour "
        "never seen in training) and the others (unseen combinations); class × seed bootstrap "
        "95 % CI:",
        "",
        f"| arm | reference | Δ {HOLDOUT_COLOUR} [95% CI] | Δ other colours [95% CI] |",
        "|---|---|---|---|",
    ]
    for arm in ARMS[1:]:
        for ref in ("none", "shuffled_minilm"):
            seeds = sorted(set(by_arm[arm]) & set(by_arm[ref]))
            if arm == ref or not seeds:
                continue
            tables = [[_per_class(by_arm[a][s]["dir"]) for s in seeds] for a in (arm, ref)]
            names, queries = tables[0][0][0], tables[0][0][1]
            held = np.array([n.split(" ")[0] == HOLDOUT_COLOUR for n in names])
            cells = []
            for mask in (held, ~held):
                a = np.stack([t[2][mask] for t in tables[0]])
                b = np.stack([t[2][mask] for t in tables[1]])
                d, lo, hi = paired_class_seed_bootstrap(a, b, queries[mask])
                cells.append(f"{100 * d:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]")
            lines.append(f"| {arm} | {ref} | {cells[0]} | {cells[1]} |")
    return lines


def _ms(vals: list[float]) -> str:
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.mean(vals):.2f} ± {sd:.2f}"


def _delta(got: dict, ref: dict) -> str:
    """Mean paired ΔR@1 over the common seeds, its class × seed bootstrap 95 % CI
    (``langdml.ablation.class_bootstrap``) and the seeds won."""
    from langdml.ablation.class_bootstrap import cell_delta_ci

    seeds = sorted(s for s in got if s in ref)
    if not seeds or got is ref:
        return ""
    diffs = [100 * (got[s]["recall@1"] - ref[s]["recall@1"]) for s in seeds]
    ci = cell_delta_ci([got[s]["dir"] for s in seeds], [ref[s]["dir"] for s in seeds], "recall@1")
    interval = f" [{100 * ci[1]:+.2f}, {100 * ci[2]:+.2f}]" if ci else ""
    return f"{statistics.mean(diffs):+.2f}{interval} ({sum(d > 0 for d in diffs)}/{len(diffs)})"


PARTS = ("frozen", "holdout", "ft2")  # the order `all` runs them in: cheapest first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=["run", "report", "all"])
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help="comma-separated, run in this order: frozen (shapes, frozen trunk), holdout "
        "(shapes:holdout, frozen trunk), ft2 (shapes, last two stages trained)",
    )
    args = parser.parse_args()
    parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    if unknown := sorted(set(parts) - set(PARTS)):
        raise SystemExit(f"unknown --parts {unknown}; expected some of {', '.join(PARTS)}")
    if args.phase in ("run", "all"):
        for part in parts:
            bench = "shapes:holdout" if part == "holdout" else "shapes"
            targets(bench)
            tune(bench)
            test_ft2() if part == "ft2" else test_frozen(bench)
            if args.phase == "all":
                report()  # after each part, so the results files follow the runs
    if args.phase == "report":
        report()


if __name__ == "__main__":
    main()
