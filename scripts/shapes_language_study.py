"""When names describe looks: the language study on the shapes benchmark, as one resumable recipe.

The shapes classes are named by their visual attributes ("red striped star"), so here — unlike
emoji — a class name's words describe its appearance. Arms, each beside the same base loss:
``none`` (the reference of every delta), ``names_minilm`` / ``names_mpnet`` (class names through
the packaged MiniLM / MPNet), ``shuffled_minilm`` (MiniLM names given to a seeded permutation of
the classes: same vectors, wrong classes) and ``oracle`` (class centroids of a head trained on ALL
classes, test classes included: a control of the mechanism, never a method; made by
``scripts/positive_control.py --dataset shapes``). Trunk settings: frozen trunk + linear head, and
the last two stages fine-tuned (``model.trainable_blocks: 2``); base losses multi-similarity and
Proxy Anchor.

Protocol:
1. ``targets``: the oracle target file (cache/controls/shapes/oracle.safetensors).
2. ``tune``: on the validation split carved from the TRAIN classes (30 % of them), seeds 0 and 1,
   the MiniLM names weight of each base loss is chosen from a small grid by mean validation R@1.
   Test classes are never looked at. MPNet names, shuffled names and the oracle reuse that weight
   (one weight per base loss, as the LG paper uses one weight for its targets), and the
   fine-tuned setting reuses the frozen choice (not re-tuned: CPU time).
3. ``test``: every arm at its chosen weight, seeds 0, 1, 2, on the held-out test classes; the
   fine-tuned cells run in tiers (controls and MiniLM names first) so a cut-off run leaves the
   most informative comparisons complete. Rerunning resumes: finished runs are kept.
4. ``report``: each test ablation's own table (``langdml ablate``: paired Δ to ``none``, class ×
   seed bootstrap CI, agreement columns) copied beside a summary with Δ to ``shuffled``, plus
   ``diagnose.json`` (``langdml diagnose`` for MiniLM, MPNet and the oracle target).

Frozen cells train 10 epochs (the shapes head converges quickly; the CPU budget is two cores
shared with other work); fine-tuned cells 4.

    python scripts/shapes_language_study.py all   # resumable: rerun after a kill
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

import yaml

ROOT = Path(__file__).resolve().parents[1]
RUNS = Path("runs") / "shapes_study"  # relative to ROOT (the recipe runs there)
DOCS = ROOT / "docs" / "results" / "shapes_study"
BASE = "../../../configs/emoji_demo.yaml"  # relative to the ablation files in DOCS
ORACLE = "cache/controls/shapes/oracle.safetensors"
DATASET = "shapes"
SEEDS = [0, 1, 2]
TUNE_SEEDS = [0, 1]
SETTINGS = {
    "frozen": {"model.trainable_blocks": 0, "train.epochs": 10, "eval.every": 10},
    "ft2": {"model.trainable_blocks": 2, "train.epochs": 4, "eval.every": 4},
}
LOSSES = {"multi_similarity": [0.3, 3.0, 30.0], "proxy_anchor": [10.0, 100.0, 1000.0]}
# Fine-tuned Proxy Anchor at the frozen lr (1e-3, proxies x100) collapsed on emoji; 1e-4 did not.
FT_LOSSES = {"multi_similarity": {}, "proxy_anchor": {"optimizer.lr": 1e-4}}
COMMON = {"eval.clustering": False, "data.dataset": DATASET}
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


def targets() -> None:
    if (ROOT / ORACLE).exists():
        return
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "positive_control.py"),
        "--dataset",
        DATASET,
        "--out",
        str(Path(ORACLE).parent),
    ]
    print("$", " ".join(cmd), flush=True)
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    print(out, flush=True)
    DOCS.mkdir(parents=True, exist_ok=True)
    (DOCS / "targets.txt").write_text(out)


def _names(model: str, weight: float) -> dict:
    return {
        "loss.regularizers": "language",
        "text.text_model": model,
        "loss.language.weight": weight,
    }


def tune() -> dict:
    path = DOCS / "tuned.json"
    chosen: dict = json.loads(path.read_text()) if path.exists() else {}
    for loss, grid in LOSSES.items():
        if loss in chosen:
            continue
        name = f"tune_frozen_{loss}"
        arms = {"none": {"loss.regularizers": "none"}}
        arms.update({f"minilm@{w:g}": _names("minilm", w) for w in grid})
        spec = {
            "base": BASE,
            "output_dir": str(RUNS / name),
            "overrides": {
                **COMMON,
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
        chosen[loss] = {
            "weight": max(weights, key=weights.get),
            "val_recall@1": {f"{w:g}": round(100 * v, 2) for w, v in weights.items()},
            "val_recall@1_none": round(100 * val.get("none", float("nan")), 2),
            "seeds": TUNE_SEEDS,
        }
        path.write_text(json.dumps(chosen, indent=1) + "\n")
    return chosen


def _arms(weight: float) -> dict:
    return {
        "none": {"loss.regularizers": "none"},
        "names_minilm": _names("minilm", weight),
        "shuffled_minilm": {**_names("minilm", weight), "loss.language.shuffled_names": True},
        "oracle": _names(f"file:{ORACLE}", weight),
        "names_mpnet": _names("mpnet", weight),
    }


def _test_spec(chosen: dict, setting: str, loss: str) -> dict:
    return {
        "base": BASE,
        "output_dir": str(RUNS / f"test_{setting}_{loss}"),
        "overrides": {
            **COMMON,
            **SETTINGS[setting],
            **(FT_LOSSES[loss] if setting == "ft2" else {}),
            "loss.base.name": loss,
        },
        "seeds": SEEDS,
        "grid": {"loss.regularizers": _arms(chosen[loss]["weight"])},
    }


def test(settings: list[str]) -> None:
    chosen = json.loads((DOCS / "tuned.json").read_text())
    for loss in LOSSES:
        if "frozen" in settings:
            _ablate(_test_spec(chosen, "frozen", loss), f"test_frozen_{loss}")
        _write_spec(_test_spec(chosen, "ft2", loss), DOCS / f"test_ft2_{loss}.yaml")
    if "ft2" not in settings:
        return
    # A subset of named arms keeps the run ids of the whole grid (the ablation runner hashes each
    # run's settings), so the tiers fill the same run folders the whole grid would.
    for tier in TIERS:
        for loss in FT_LOSSES:
            spec = yaml.safe_load((DOCS / f"test_ft2_{loss}.yaml").read_text())
            arms = spec["grid"]["loss.regularizers"]
            spec["grid"]["loss.regularizers"] = {k: v for k, v in arms.items() if k in tier}
            _ablate(spec, f"test_ft2_{loss}", ROOT / spec["output_dir"] / f"tier-{tier[0]}.yaml")


def _agreement() -> list:
    out = DOCS / "diagnose.json"
    if not out.exists():
        cmd = [sys.executable, "-m", "langdml", "diagnose", "--dataset", DATASET, "--json"]
        for model in ("minilm", "mpnet", f"file:{ORACLE}"):
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
        setting, loss = spec_path.stem.split("_", 2)[1:]
        if (out / "results.md").exists():
            text = (out / "results.md").read_text()
            text = re.sub(r"(/[\w.+-]+)+/(runs/shapes_study)", r"\2", text)
            (DOCS / f"{spec_path.stem}.md").write_text(text)
        for path in sorted((out / "runs").glob("*/metrics.json")):
            row = _row(path, setting, loss)
            if row:
                rows.append(row)
    with open(DOCS / "results.csv", "w", newline="") as fh:
        keys = ["setting", "loss", "arm", "seed", "recall@1", "map@r", "r_precision", "run"]
        writer = csv.DictWriter(fh, keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    agree = _agreement()
    lines = _summary(rows)
    lines += ["", "Agreement (`langdml diagnose --dataset shapes`, train classes):", "", "```"]
    lines += [json.dumps(agree, indent=1), "```", ""]
    (DOCS / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))


def _row(path: Path, setting: str, loss: str) -> dict | None:
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    cfg, final = metrics["config"], metrics.get("final") or {}
    if "recall@1" not in final:
        return None
    text, lang = cfg["text"], cfg["loss"]["language"]
    if cfg["loss"]["regularizers"] in ([], "none", ["none"]):
        arm = "none"
    elif text["text_model"].startswith("file:"):
        arm = "oracle"
    elif lang.get("shuffled_names"):
        arm = f"shuffled_{text['text_model']}"
    else:
        arm = f"names_{text['text_model']}"
    return {
        **final,
        "setting": setting,
        "loss": loss,
        "arm": arm,
        "seed": cfg["seed"],
        "run": path.parent.name,
    }


def _summary(rows: list[dict]) -> list[str]:
    lines = [
        "| setting | base loss | arm | R@1 | MAP@R | ΔR@1 vs none (wins) | ΔR@1 vs shuffled (wins) "
        "| seeds |",
        "|---|---|---|---:|---:|---|---|---:|",
    ]
    for setting, loss in sorted({(r["setting"], r["loss"]) for r in rows}):
        cell = [r for r in rows if r["setting"] == setting and r["loss"] == loss]
        by_arm = {a: {r["seed"]: r for r in cell if r["arm"] == a} for a in ARMS}
        for arm in ARMS:
            got = by_arm[arm]
            if not got:
                continue
            r1 = [100 * r["recall@1"] for r in got.values()]
            mr = [100 * r["map@r"] for r in got.values()]
            lines.append(
                f"| {setting} | {loss} | {arm} | {_ms(r1)} | {_ms(mr)} | "
                f"{_delta(got, by_arm['none'])} | {_delta(got, by_arm['shuffled_minilm'])} "
                f"| {len(got)} |"
            )
    return lines


def _ms(vals: list[float]) -> str:
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.mean(vals):.2f} ± {sd:.2f}"


def _delta(got: dict, ref: dict) -> str:
    diffs = [100 * (got[s]["recall@1"] - ref[s]["recall@1"]) for s in got if s in ref]
    if not diffs or got is ref:
        return ""
    return f"{statistics.mean(diffs):+.2f} ({sum(d > 0 for d in diffs)}/{len(diffs)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=["targets", "tune", "test", "report", "all"])
    parser.add_argument(
        "--settings", default="frozen,ft2", help="comma-separated: frozen, ft2 (test phase)"
    )
    args = parser.parse_args()
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    if unknown := sorted(set(settings) - set(SETTINGS)):
        raise SystemExit(f"unknown --settings {unknown}; expected frozen and/or ft2")
    if args.phase in ("targets", "all"):
        targets()
    if args.phase in ("tune", "all"):
        tune()
    if args.phase in ("test", "all"):
        test(settings)
    if args.phase in ("report", "all"):
        report()


if __name__ == "__main__":
    main()
