"""``langdml search INDEX``: one or many queries (images, a folder of images, or class names)
against an index folder, optionally re-ranked over the index's gallery.

Image queries go through the traced tower the index folder carries
(:mod:`langdml.inference.tower_file`): no run, no timm or torchvision. Without one (``--no-tower``,
older folders), with ``--run-dir`` or for class names the run is reopened for its image tower or
text side — never its dataset. A query costs the imports, the tower's load and one forward
pass. Every query is embedded in one batch and searched in one call; with several queries each
result is one line (``--json``: one JSON object per line).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from langdml.errors import LangDMLError, check_int


def index_run(index, device: str, run_dir: str | None = None):
    """The run an index was built with (``run_dir``, else the folder the index recorded),
    checked against the index's fingerprint."""
    from langdml.inference.index import GALLERY
    from langdml.inference.run import load_run

    fp = index.table.fingerprint
    gallery = Path(index.folder or ".") / GALLERY
    recorded = fp.get("run_dir")
    if run_dir is None:
        if not recorded:
            raise LangDMLError(
                f"{str(gallery)!r} records no run directory; pass it with --run-dir or rebuild "
                "the index with langdml index"
            )
        if not Path(recorded).is_dir():
            raise LangDMLError(
                f"run directory {recorded!r} (recorded in {str(gallery)!r} when the index was "
                "built) does not exist: moved or deleted? pass its new place with --run-dir DIR"
            )
    where = run_dir or recorded
    checkpoint = "best" if fp.get("checkpoint") == "best.pt" else "last"
    run = load_run(where, checkpoint, device=device)
    now = run.fingerprint()
    for key in ("config_sha256", "checkpoint_sha256"):
        if now[key] != fp.get(key):
            how = "is not the run the index was built with" if run_dir else "changed since"
            raise LangDMLError(
                f"run {str(where)!r} {how} (the index {str(index.folder)!r} records {key} "
                f"{fp.get(key)}, the run has {now[key]}); rebuild it with langdml index"
            )
    return run


def query_items(args) -> list[str]:
    """The queries named on the command line, checked before the run is loaded."""
    if args.text is not None:
        return list(args.text)
    if args.images is not None:
        from langdml.data.images import walk_images

        folder = Path(args.images)
        if not folder.is_dir():
            raise LangDMLError(f"--images {args.images!r} is not a directory of images")
        found = sorted(walk_images(folder))
        if not found:
            raise LangDMLError(f"--images {args.images!r} holds no image files")
        return found
    for item in args.image:
        image = Path(item)
        if image.is_dir():
            raise LangDMLError(
                f"--image {item!r} is a directory; expected an image file (or use --images DIR)"
            )
        if not image.exists():
            raise LangDMLError(f"--image {item!r} does not exist")
    return list(args.image)


def _params(items: list[str], flag: str) -> dict:
    """KEY=VALUE flags parsed; none given imports nothing (the config's parser is pydantic's)."""
    if not items:
        return {}
    from langdml.eval.commands import parse_search_params

    return parse_search_params(items, flag)


def _reranking(args, index):
    """The checked re-ranking of ``--rerank`` (None: none), before the run is loaded."""
    params = _params(args.rerank_param, "--rerank-param")
    if args.rerank == "none":
        if params:
            raise LangDMLError("--rerank-param needs --rerank qe or --rerank k_reciprocal")
        return None
    from langdml.eval.rerank import check_rerank

    spec = check_rerank(args.rerank, params)
    kind, _ = index.search_kind
    if kind != "exact":
        raise LangDMLError(
            f"--rerank {args.rerank} re-ranks an exact search; this index is {kind} "
            "(rebuild it with langdml index --search exact)"
        )
    return spec


def _search(index, q, k: int, reranking):
    if reranking is None:
        return index.search(q, k)
    from langdml.eval.rerank import rerank_search

    table = index.table
    return rerank_search(
        q, table.embeddings, min(k, len(index)), spec=reranking, metric=table.metric, device="cpu"
    )


def _embed_queries(index, queries: list[str], args):
    """Images by the tower the index folder carries (no run, no timm), unless ``--run-dir`` names
    the run or the folder has none; class names always by the run's text side."""
    if args.text is None and args.run_dir is None and args.device == "cpu":
        tower = index.portable_tower()
        if tower is not None:
            return tower.embed(queries)
    run = index_run(index, args.device, args.run_dir)
    return run.embed_text(queries) if args.text is not None else run.embed(queries)


def run_search(args) -> int:
    from langdml.devices import check_device
    from langdml.inference.index import GalleryIndex

    check_device(args.device)
    check_int(args.k, "-k", meaning="neighbours to return")
    index = GalleryIndex.load(args.index_dir)
    index.set_search_params(_params(args.search_param, "--search-param"))
    queries = query_items(args)
    reranking = _reranking(args, index)
    q = _embed_queries(index, queries, args)
    scores, rows = _search(index, q, args.k, reranking)
    kind, params = index.search_kind
    if kind != "exact" and not args.json:
        how = ", ".join(f"{k} {v}" for k, v in params.items())
        print(f"approximate {kind} index ({how}): neighbours may be missed")
    for n, query in enumerate(queries):
        results = _results(index, scores[n], rows[n])
        if args.json:
            search = {"kind": kind, **params}
            if reranking is not None:
                search["rerank"] = {"method": reranking.method, **reranking.params}
            out = {"query": query, "metric": index.table.metric, "search": search}
            print(json.dumps({**out, "results": results}))
            continue
        if len(queries) > 1:
            print(f"query {query}")
        for hit in results:
            name = hit["class_name"] or "-"
            print(f"{hit['rank']:>3}  {hit['score']:+.4f}  {name:<30}  {hit['path']}")
    return 0


def _results(index, scores: np.ndarray, rows: np.ndarray) -> list[dict]:
    table = index.table
    return [
        {
            "rank": r + 1,
            "score": float(s),
            "path": table.paths[i],
            "label": int(table.labels[i]),
            "class_name": table.class_name(i),
        }
        for r, (s, i) in enumerate(zip(scores, rows, strict=True))
        if i >= 0
    ]
