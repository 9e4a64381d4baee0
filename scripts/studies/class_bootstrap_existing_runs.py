"""Re-evaluate finished ablation runs for per-class results and mistake severity, and compare the
class x seed bootstrap CI of each delta with the seeds-only one (for runs made before
per_class.csv existed). Reads checkpoints and cached features only; writes nothing.

    LANGDML_CACHE=cache python scripts/studies/class_bootstrap_existing_runs.py \\
        runs/emoji_ablation \\
        multi_similarity:language,direction proxy_anchor:language,direction
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from langdml.ablation.class_bootstrap import paired_class_seed_bootstrap
from langdml.experiment import embed, eval_group_codes, final_details, open_run


def _cell(root: Path, rows: list[dict], base: str, reg: str) -> list[tuple]:
    """Per seed: (queries, per-class R@1, per-class MAP@R, severity metrics)."""
    out = []
    chosen = [r for r in rows if r["loss.base.name"] == base and r["loss.regularizers"] == reg]
    for r in sorted(chosen, key=lambda r: int(r["seed"])):
        run = open_run(root / "runs" / r["run_id"], device="cpu")
        run.data.group_codes = eval_group_codes(run.config, run.config.data.dataset, run.data.eval)
        per_class, severity = final_details(
            run.config, embed(run.model, run.config, run.data), run.data
        )
        n = np.array([x["queries"] for x in per_class])
        r1 = np.nan_to_num([x["recall@1"] for x in per_class])
        ap = np.nan_to_num([x["map@r"] for x in per_class])
        check = float((n * r1).sum() / n.sum())
        print(
            f"{base} {reg} seed {r['seed']}: R@1 results.csv {float(r['recall@1']):.5f}, "
            f"from per-class {check:.5f}; " + ", ".join(f"{k} {v:.4f}" for k, v in severity.items())
        )
        out.append((n, r1, ap, severity))
    return out


def main(root: str, *specs: str) -> None:
    root_dir = Path(root)
    rows = list(csv.DictReader(open(root_dir / "results.csv", encoding="utf-8")))
    for spec in specs:
        base, _, regs = spec.partition(":")
        ref = _cell(root_dir, rows, base, "none")
        for reg in regs.split(","):
            cell = _cell(root_dir, rows, base, reg)
            for i, metric in ((1, "recall@1"), (2, "map@r")):
                a, b = np.stack([x[i] for x in cell]), np.stack([x[i] for x in ref])
                d, lo, hi = paired_class_seed_bootstrap(a, b, cell[0][0])
                _, slo, shi = paired_class_seed_bootstrap(a, b, cell[0][0], resample_classes=False)
                print(
                    f"| {base} | {reg} | {metric} | {d * 100:+.2f} | [{lo * 100:+.2f}, "
                    f"{hi * 100:+.2f}] | [{slo * 100:+.2f}, {shi * 100:+.2f}] |"
                )
            for key in cell[0][3]:
                none_v = np.mean([x[3][key] for x in ref])
                reg_v = np.mean([x[3][key] for x in cell])
                print(f"| {base} | {reg} | {key} | none {none_v:.4f} | {reg} {reg_v:.4f} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
