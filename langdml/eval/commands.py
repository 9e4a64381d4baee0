"""`langdml evaluate RUN_DIR`: recompute a run's retrieval metrics and print them as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="retrieval metrics of a trained run, as JSON")
    p.add_argument("run_dir")
    p.add_argument(
        "--checkpoint",
        choices=["last", "best", "final"],
        default="last",
        help="last (the last epoch, default) or best (final: the old word for last)",
    )
    p.add_argument(
        "--split",
        choices=["test", "val"],
        default=None,
        help="held-out classes to evaluate (default: the run's own eval split)",
    )
    add_search_args(p, "the run's eval.search")
    add_rerank_args(p, "the run's eval.rerank")
    p.add_argument(
        "--query-sample",
        type=int,
        default=None,
        metavar="Q",
        help="kNN metrics over Q seeded queries instead of all (every row stays in the "
        "gallery): exact metrics of a sample, to price --search on a large set",
    )
    p.add_argument(
        "--concat",
        nargs="+",
        default=None,
        metavar="RUN_DIR",
        help="also evaluate the concatenation of this run's embeddings with these runs' (each "
        "L2-normalised, then the whole; MLRC's 4 fold models x 128-d -> 512-d)",
    )
    p.add_argument(
        "--per-class",
        default=None,
        metavar="PATH",
        help="also write the evaluated split's per-class rows (class, queries, recall@1, map@r; "
        "the format of the run's per_class.csv, exact search) to this CSV file",
    )
    p.set_defaults(func=_evaluate)


def add_search_args(p: argparse.ArgumentParser, default: str) -> None:
    """``--search`` and ``--search-param`` (shared with ``langdml index``)."""
    p.add_argument(
        "--search",
        choices=["exact", "ivf", "hnsw", "auto"],
        default=None,
        help="kNN search: exact, an approximate faiss index for large sets, or auto (the "
        f"cheapest search reaching --target-recall, measured) (default: {default})",
    )
    p.add_argument(
        "--target-recall",
        type=float,
        default=None,
        metavar="R",
        help="with --search auto: the neighbour recall to reach on the query sample (default 0.95)",
    )
    p.add_argument(
        "--search-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a search parameter, repeatable: ivf nlist/nprobe/train_size, hnsw "
        "M/efConstruction/efSearch, any recall_queries (e.g. --search-param nprobe=128)",
    )


def add_rerank_args(p: argparse.ArgumentParser, default: str) -> None:
    """``--rerank`` and ``--rerank-param`` (shared with ``langdml search``)."""
    p.add_argument(
        "--rerank",
        choices=["none", "qe", "k_reciprocal"],
        default=None,
        help="re-rank each query's exact neighbours: qe (query expansion) or k_reciprocal "
        f"(Zhong et al. 2017) (default: {default})",
    )
    p.add_argument(
        "--rerank-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a re-ranking parameter, repeatable: qe n/alpha, k_reciprocal k1/k2/lambda/"
        "candidates (e.g. --rerank-param k1=20)",
    )


def search_options(args: argparse.Namespace) -> tuple[str | None, dict]:
    """(``--search``, its parameters) with ``--target-recall`` folded in, checked."""
    from langdml.errors import LangDMLError

    params = parse_search_params(args.search_param)
    target = getattr(args, "target_recall", None)
    if target is not None:
        if args.search != "auto":
            raise LangDMLError(
                f"--target-recall {target} applies to --search auto only (got --search "
                f"{args.search or 'unset'})"
            )
        params["target_recall"] = target
    return args.search, params


def parse_search_params(items: list[str], flag: str = "--search-param") -> dict:
    """``["nprobe=128", ...]`` -> ``{"nprobe": 128}`` (values parsed as YAML)."""
    from langdml.config import parse_value
    from langdml.errors import LangDMLError

    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise LangDMLError(f"{flag} {item!r} must look like KEY=VALUE, e.g. nprobe=128")
        params[key.strip()] = parse_value(value)
    return params


def _with_search(cfg, search: str | None, search_params: dict | None, rerank=None):
    """cfg with eval.search / eval.search_params replaced (--search) or updated (params only),
    and eval.rerank / eval.rerank_params replaced when ``rerank`` = (method, params) is given."""
    from langdml.eval.ann import check_search
    from langdml.eval.rerank import check_rerank

    fields = cfg.eval.model_dump()
    if search is not None or search_params:
        kind = search or cfg.eval.search
        params = dict(search_params or {})
        if search is None:
            params = {**cfg.eval.search_params, **params}
        check_search(kind, params)  # one clear line before the config sees it
        fields.update(search=kind, search_params=params)
    if rerank is not None:
        check_rerank(*rerank)
        fields.update(rerank=rerank[0], rerank_params=dict(rerank[1]))
    if fields == cfg.eval.model_dump():
        return cfg
    from langdml.config import validate_config

    cfg.eval = validate_config({**cfg.to_dict(), "eval": fields}).eval  # one line if refused
    return cfg


def _per_class_target(path: str | Path) -> Path:
    """``path`` for the per-class CSV, checked before any work: a file in an existing, writable
    folder (:func:`langdml.io.check_writable`)."""
    from langdml.errors import LangDMLError
    from langdml.io import check_writable

    path = Path(path)
    if path.is_dir():
        raise LangDMLError(f"per-class CSV {path} is a directory; pass a file path")
    if not path.parent.is_dir():
        raise LangDMLError(
            f"per-class CSV {path}: the directory {path.parent} does not exist; create it or "
            "choose another path"
        )
    return check_writable(path, "--per-class")


def evaluate_run(
    run_dir: str | Path,
    checkpoint: str = "last",
    split: str | None = None,
    search: str | None = None,
    search_params: dict | None = None,
    per_class: str | Path | None = None,
    query_sample: int | None = None,
    rerank: str | None = None,
    rerank_params: dict | None = None,
) -> dict:
    """A run's metrics on its held-out classes; ``search`` / ``search_params`` override the
    run's ``eval.search`` / ``eval.search_params`` (``search`` alone replaces both). With a
    class hierarchy (``eval.hierarchy``) the result has training's ``hierarchy`` mistake-severity
    metrics; ``per_class`` writes the per-class rows (``per_class.csv``'s format) atomically to
    that file. Both come from an exact search, as at the end of training. ``query_sample``: kNN
    metrics over that many seeded queries (the run's seed; the same rows for every search), to
    price an approximate search where exact over all queries is too slow. ``rerank`` /
    ``rerank_params`` replace the run's ``eval.rerank`` / ``eval.rerank_params``. With
    ``search="auto"`` the result names the search chosen (``search_choice``)."""
    from langdml.eval.ann import check_search
    from langdml.eval.autotune import recorded_choices
    from langdml.eval.metrics import check_query_sample
    from langdml.eval.rerank import check_rerank
    from langdml.experiment import embed, evaluate_run_embeddings, open_run

    if search is not None:
        check_search(search, search_params)  # fail before loading anything
    reranking = None if rerank is None else (rerank, dict(rerank_params or {}))
    if reranking is not None:
        check_rerank(*reranking)
    check_query_sample(query_sample)
    target = None if per_class is None else _per_class_target(per_class)
    run = open_run(run_dir, checkpoint, split=split)
    cfg, data = _with_search(run.config, search, search_params, reranking), run.data
    emb = embed(run.model, cfg, data)
    want_details = target is not None or data.group_codes is not None
    with recorded_choices() as choices:
        found = evaluate_run_embeddings(
            cfg, emb, data, details=want_details, query_sample=query_sample
        )
    details: dict = {}
    if found.hierarchy:
        details["hierarchy"] = found.hierarchy
    if target is not None:
        details["per_class"] = str(found.write_per_class(target))
    return {
        "run_dir": str(run.run_dir),
        "checkpoint": run.checkpoint,
        "epoch": run.epoch,
        "split": data.eval_split,
        **({"search": cfg.eval.search} if cfg.eval.search != "exact" else {}),
        **({"search_choice": choices[-1].summary()} if choices else {}),
        **({"rerank": cfg.eval.rerank} if cfg.eval.rerank != "none" else {}),
        **({"query_sample": query_sample} if query_sample else {}),
        **found.metrics,
        **details,
    }


def evaluate_concatenated(
    run_dirs: list[str | Path], checkpoint: str = "last", split: str | None = None
) -> dict:
    """Metrics of the runs' embeddings concatenated: each run's (L2-normalised) embedding of the
    same held-out images, side by side, L2-normalised again — MLRC's evaluation of its 4
    cross-validation models as one 4 x 128 = 512-d embedding. The runs must share the
    evaluation images (same dataset and ``split``); the first run's eval settings apply."""
    import torch

    from langdml.errors import LangDMLError
    from langdml.experiment import embed, evaluate_run_embeddings, open_run

    parts, first = [], None
    for run_dir in run_dirs:
        run = open_run(run_dir, checkpoint, split=split)
        if first is None:
            first = run
        elif run.data.eval.fingerprint != first.data.eval.fingerprint:
            raise LangDMLError(
                f"{run_dir} evaluates other images than {first.run_dir} "
                f"({run.data.eval.name} vs {first.data.eval.name}); concatenate runs of one split"
            )
        parts.append(torch.nn.functional.normalize(embed(run.model, run.config, run.data), dim=1))
    z = torch.nn.functional.normalize(torch.cat(parts, dim=1), dim=1)
    metrics = evaluate_run_embeddings(first.config, z, first.data).metrics
    return {
        "runs": [str(r) for r in run_dirs],
        "checkpoint": first.checkpoint,
        "split": first.data.eval_split,
        "dim": int(z.shape[1]),
        **metrics,
    }


def _evaluate(args: argparse.Namespace) -> int:
    search, params = search_options(args)
    rerank_params = parse_search_params(args.rerank_param, "--rerank-param")
    if rerank_params and args.rerank is None:
        from langdml.errors import LangDMLError

        raise LangDMLError("--rerank-param needs --rerank qe or --rerank k_reciprocal")
    result = evaluate_run(
        args.run_dir,
        args.checkpoint,
        args.split,
        search,
        params,
        args.per_class,
        args.query_sample,
        args.rerank,
        rerank_params,
    )
    if args.concat:
        runs = [args.run_dir, *args.concat]
        result["concatenated"] = evaluate_concatenated(runs, args.checkpoint, args.split)
    print(json.dumps(result, indent=2))
    return 0
