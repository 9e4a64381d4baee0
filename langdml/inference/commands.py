"""``langdml embed``, ``index``, ``search``, ``export`` and ``report``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from langdml.errors import LangDMLError, check_int
from langdml.eval.commands import add_search_args, search_options


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a trained run directory")
    p.add_argument("--checkpoint", default="last", choices=["last", "best"])
    p.add_argument("--device", default="cpu")


def _gallery_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="a dataset SPEC (emoji, imagefolder:PATH, cub200:PATH, ...)")
    src.add_argument("--images", help="a folder of images (subfolders name their class)")
    p.add_argument(
        "--split",
        default="test",
        choices=["test", "train", "all"],
        help="with --dataset: the run's test classes (default), train classes or all",
    )
    p.add_argument("--cache-dir", help="cache root for --dataset (default: the run's)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-progress", action="store_true")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="embed images with a trained run → .safetensors")
    _run_args(p)
    _gallery_args(p)
    p.add_argument("-o", "--output", required=True, help="OUT.safetensors")
    p.set_defaults(func=run_embed)

    p = sub.add_parser("index", help="build a faiss index of a gallery with a trained run")
    _run_args(p)
    _gallery_args(p)
    add_search_args(p, "exact")
    p.add_argument(
        "--no-tower",
        action="store_true",
        help="do not store the traced image tower in the index folder (searches then reopen "
        "the run, which must stay where it is)",
    )
    p.add_argument("-o", "--output", required=True, help="INDEX_DIR")
    p.set_defaults(func=run_index)

    p = sub.add_parser("search", help="search an index by an image or by a class name")
    p.add_argument("index_dir")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--image", nargs="+", help="query images (one or more)")
    q.add_argument("--images", metavar="DIR", help="every image in DIR queries (batch mode)")
    q.add_argument("--text", nargs="+", help="class names (runs trained with a text-proxy loss)")
    p.add_argument("-k", type=int, default=10)
    p.add_argument(
        "--rerank",
        choices=["none", "qe", "k_reciprocal"],
        default="none",
        help="re-rank the neighbours over the index's gallery (exact indexes): qe (query "
        "expansion) or k_reciprocal (Zhong et al. 2017)",
    )
    p.add_argument(
        "--rerank-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a re-ranking parameter: qe n/alpha, k_reciprocal k1/k2/lambda/candidates",
    )
    p.add_argument(
        "--search-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an approximate index's search-time parameter: efSearch (hnsw) or nprobe (ivf)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--run-dir",
        help="the run the index was built with, where it is now (default: the folder the index "
        "recorded; the run's config and checkpoint must be the ones the index was built with)",
    )
    p.set_defaults(func=run_search)

    p = sub.add_parser("export", help="export the image tower to TorchScript or ONNX + model card")
    _run_args(p)
    p.add_argument("--format", required=True, help="torchscript or onnx")
    p.add_argument("-o", "--output", required=True, help="FILE (the model card is FILE.json)")
    p.set_defaults(func=run_export)

    p = sub.add_parser("report", help="a self-contained HTML report of a run or an ablation")
    _run_args(p)
    p.add_argument("-o", "--output", help="report.html (default: RUN_DIR/report.html)")
    p.add_argument(
        "--cell-reports",
        action="store_true",
        help="ablation folder: also write each finished cell run's report.html (slow)",
    )
    p.add_argument("--queries", type=int, default=8, help="query rows in the retrieval grid")
    p.add_argument("-k", type=int, default=6, help="neighbours per query")
    p.set_defaults(func=run_report)


def _load(args):
    from langdml.devices import check_device
    from langdml.inference.run import load_run

    return load_run(args.run_dir, args.checkpoint, device=check_device(args.device))


def folder_images(folder: str | Path) -> tuple[list[str], np.ndarray, list[str]]:
    """Image files under ``folder`` by the datasets' image-file rule (:mod:`langdml.data.images`),
    in natural order, labelled by their first subfolder (-1 at top level); subfolder names are
    class names normalised as the dataset loaders normalise them
    (:func:`langdml.data.names.normalise_class_name`)."""
    from langdml.data.images import IMAGE_EXTENSIONS, walk_images
    from langdml.data.names import natural_key, normalise_class_name

    root = Path(folder)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise LangDMLError(f"image folder {str(root)!r} {what}")
    rel = sorted(
        (os.path.relpath(f, root).replace(os.sep, "/") for f in walk_images(root)), key=natural_key
    )
    if not rel:
        raise LangDMLError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {str(root)!r}")
    groups = [normalise_class_name(r.split("/")[0]) if "/" in r else None for r in rel]
    names = sorted({g for g in groups if g is not None}, key=natural_key)
    position = {n: i for i, n in enumerate(names)}
    labels = np.asarray([position[g] if g is not None else -1 for g in groups], np.int64)
    return [str(root / r) for r in rel], labels, names


def gallery_table(run, args):
    """Embed ``--images DIR`` or ``--dataset SPEC`` (``--split``) → GalleryTable."""
    from langdml.inference.index import GalleryTable
    from langdml.inference.run import dataset_paths, select_split

    progress = not args.no_progress
    metric = run.config.eval.metric
    if args.images:
        paths, labels, names = folder_images(args.images)
        emb = run.embed(paths, batch_size=args.batch_size, progress=progress)
        return GalleryTable(emb, labels, paths, names, run.fingerprint(), metric, args.images)
    from langdml.data import load_dataset

    dataset = load_dataset(args.dataset, cache_dir=args.cache_dir or run.config.data.cache_dir)
    part, rows = select_split(run, dataset, args.split, spec=args.dataset)
    emb = run.embed_dataset(dataset, batch_size=args.batch_size, progress=progress)[rows]
    all_paths = dataset_paths(dataset, args.dataset)  # once, not once per row
    paths = [all_paths[i] for i in rows]
    source = f"{args.dataset} ({args.split})"
    return GalleryTable(
        emb, part.labels, paths, list(part.class_names), run.fingerprint(), metric, source
    )


def run_embed(args) -> int:
    from langdml.inference.index import save_embeddings
    from langdml.io import check_writable

    check_int(args.batch_size, "--batch-size", meaning="images per forward pass")
    check_writable(args.output, "-o")  # before any image is embedded
    table = gallery_table(_load(args), args)
    path = save_embeddings(args.output, table)
    print(f"{len(table.paths)} embeddings ({table.embeddings.shape[1]}-d) → {path}")
    return 0


def run_index(args) -> int:
    from langdml.eval.ann import check_search
    from langdml.inference.index import FAISS, GALLERY, GalleryIndex
    from langdml.inference.index_folder import check_target
    from langdml.inference.tower_file import TOWER
    from langdml.io import check_writable

    search, params = search_options(args)
    search = search or "exact"
    check_search(search, params)  # one clear line before the run is loaded
    check_int(args.batch_size, "--batch-size", meaning="images per forward pass")
    check_writable(args.output, "-o", folder=True)
    check_target(args.output, (GALLERY, FAISS, TOWER))  # other files there: refused before work
    run = _load(args)
    index = GalleryIndex(gallery_table(run, args), search=search, search_params=params)
    folder = index.save(args.output, tower=None if args.no_tower else portable_tower(run))
    kind, resolved = index.search_kind
    how = ", ".join(f"{k} {v}" for k, v in resolved.items())
    if index.choice is not None:
        print(index.choice.summary())
    print(f"{kind} index{f' ({how})' if how else ''} of {len(index)} images → {folder}")
    return 0


def portable_tower(run):
    """The run's image tower traced for the index folder, with its eval view."""
    from langdml.experiment import run_preprocessing
    from langdml.inference.tower_file import trace_tower

    pre = run_preprocessing(run.config)
    return trace_tower(run.tower(), pre.image_size), pre.eval_view()


def run_search(args) -> int:
    from langdml.inference.search import run_search as search

    return search(args)


def run_export(args) -> int:
    from langdml.inference.export import FORMATS, card_path, export_run

    if args.format not in FORMATS:  # before reopening the run
        raise LangDMLError(
            f"unknown export format {args.format!r}; expected one of {', '.join(FORMATS)}"
        )
    from langdml.io import check_writable

    check_writable(args.output, "-o")  # a read-only place or a folder: one line, before the work
    path = export_run(_load(args), args.format, args.output)
    print(f"{args.format} image tower → {path} (model card {card_path(path)})")
    return 0


def run_report(args) -> int:
    from langdml.inference.ablation_report import is_ablation_dir, write_ablation_report
    from langdml.io import check_writable

    check_int(args.queries, "--queries", meaning="rows of the retrieval grid")
    check_int(args.k, "-k", meaning="neighbours per query")
    if is_ablation_dir(args.run_dir):
        out = Path(args.output) if args.output else Path(args.run_dir) / "report.html"
        check_writable(out, "-o")
        write_ablation_report(args.run_dir, out, cell_reports=args.cell_reports)
        print(f"ablation report → {out}")
        return 0
    from langdml.inference.report import write_report

    if args.output:
        check_writable(args.output, "-o")  # before the run is loaded and embedded
    run = _load(args)
    out = Path(args.output) if args.output else run.run_dir / "report.html"
    check_writable(out, "-o")
    write_report(run, out, queries=args.queries, k=args.k)
    print(f"report → {out}")
    return 0
