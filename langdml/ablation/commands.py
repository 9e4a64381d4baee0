"""`langdml ablate ABLATION.yaml [--workers N] [--backend local|slurm|ray ...] [--status]`."""

from __future__ import annotations

import argparse

from langdml.ablation.backends import BACKENDS


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ablate", help="run a grid of configs × seeds; resumable; writes a table and plot"
    )
    p.add_argument("ablation", help="ablation YAML (base config + grid + seeds [+ backend])")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes (local)")
    p.add_argument("--output-dir", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--status",
        action="store_true",
        help="print done/running/stale/failed/pending per run and exit (submits nothing)",
    )
    b = p.add_argument_group("backend (overrides the ablation file's backend: section)")
    b.add_argument("--backend", choices=BACKENDS, default="local", help="default: local")
    b.add_argument(
        "--cpus-per-cell",
        type=int,
        default=None,
        help="threads/CPUs per cell; default: local cores/workers, slurm 4, ray 1",
    )
    b.add_argument("--gpus-per-cell", type=float, default=None, help="default 0")
    b.add_argument(
        "--prepare",
        choices=("here", "job"),
        default=None,
        help="shared features/text embeddings in this process or in one job first "
        "(default: here on local, job on slurm/ray)",
    )
    s = p.add_argument_group("slurm (submitit)")
    s.add_argument("--partition", default=None)
    s.add_argument("--time", default=None, help="per job: MINUTES, HH:MM:SS or D-HH:MM:SS (4h)")
    s.add_argument("--mem", default=None, help="per job, e.g. 64G")
    s.add_argument(
        "--sbatch-extra",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="any sbatch option, repeatable: --sbatch-extra account=lab --sbatch-extra exclusive",
    )
    s.add_argument(
        "--slurm-executor",
        choices=("slurm", "local", "debug"),
        default=None,
        help="local/debug: run the same submission on this machine (submitit's executors)",
    )
    s.add_argument(
        "--detach", action="store_true", help="submit and return; rerun later to collect"
    )
    r = p.add_argument_group("ray")
    r.add_argument("--ray-address", default=None, help="auto, HOST:6379 or ray://HOST:10001")
    p.set_defaults(func=_ablate)


def _flags(args: argparse.Namespace) -> dict:
    from langdml.ablation.backends import parse_sbatch_extra

    return {
        "cpus_per_cell": args.cpus_per_cell,
        "gpus_per_cell": args.gpus_per_cell,
        "prepare": args.prepare,
        "slurm.partition": args.partition,
        "slurm.time": args.time,
        "slurm.mem": args.mem,
        "slurm.sbatch_extra": parse_sbatch_extra(args.sbatch_extra),
        "slurm.executor": args.slurm_executor,
        "ray.address": args.ray_address,
    }


def _ablate(args: argparse.Namespace) -> int:
    from langdml.errors import ConfigError
    from langdml.packaged_configs import resolve_config

    args.ablation = str(resolve_config(args.ablation))  # a path, or a shipped config's name
    if args.status:
        from langdml.ablation.status import ablation_status, format_status

        print(format_status(*ablation_status(args.ablation, args.output_dir)))
        return 0
    from langdml.ablation import run_ablation

    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.workers != 1 and args.backend != "local":
        raise ConfigError(
            f"--workers is for --backend local; {args.backend} sizes cells with "
            "--cpus-per-cell / --gpus-per-cell"
        )
    if args.detach and args.backend != "slurm":
        raise ConfigError("--detach is for --backend slurm")
    result = run_ablation(
        args.ablation,
        workers=args.workers,
        output_dir=args.output_dir,
        progress=not args.no_progress,
        backend=args.backend,
        backend_flags=_flags(args),
        detach=args.detach,
    )
    print(result.markdown)
    print(
        f"results: {result.output_dir}/results.csv, results.md"
        + (f", {result.plot_path.name}" if result.plot_path else "")
    )
    return _report_failures(result.rows)


def _report_failures(rows: list[dict]) -> int:
    """Failed runs on stderr, one line each with its reason; 1 when any failed, else 0."""
    import sys

    failed = [r for r in rows if r.get("status") == "failed"]
    if not failed:
        return 0
    print(
        f"langdml: error: {len(failed)} of {len(rows)} runs failed (rerun the same command to "
        "retry them; each run's error.txt holds the traceback):",
        file=sys.stderr,
    )
    for r in failed:
        print(f"  {r['run_id']}: {r.get('error') or 'failed'}", file=sys.stderr)
    return 1
