"""Split files (data.split_file) on a small image folder built here: query / gallery roles drive
training's and `langdml evaluate`'s metrics (checked against a loop reference written from the
Recall@k / MAP@R definitions), bad files are one line each before any work, and
`langdml data split` writes seeded, class-disjoint files that round-trip."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from langdml.cli import main
from langdml.config import load_config
from langdml.data import ImageDataset, ImageSource, class_splits, load_dataset
from langdml.data.hierarchy import class_categories
from langdml.data.roles import eval_roles
from langdml.errors import DataError

N_CLASSES, PER_CLASS = 12, 5
# roles of image k of every val / test class: (is_query, is_gallery)
ROLES = [(True, False), (True, True), (True, True), (False, True), (False, False)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """12 class folders of 5 noisy 32 px images, classes a colour each (close colours)."""
    root = tmp_path_factory.mktemp("icons")
    rng = np.random.default_rng(0)
    for c in range(N_CLASSES):
        colour = rng.integers(60, 200, size=3)
        (root / f"icon_{c:02d}").mkdir()
        for k in range(PER_CLASS):
            pixels = np.clip(colour + rng.normal(0, 70, size=(32, 32, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / f"icon_{c:02d}" / f"{k}.png")
    return root


def _part_of(c: int) -> str:
    return "train" if c < 6 else "val" if c < 9 else "test"


def _role_rows():
    rows = []
    for c in range(N_CLASSES):
        for k in range(PER_CLASS):
            q, g = ROLES[k] if _part_of(c) != "train" else (False, False)
            rows.append(
                [
                    f"icon_{c:02d}/{k}.png",
                    f"icon_{c:02d}",
                    _part_of(c),
                    str(q),
                    str(g),
                    "warm" if c % 2 else "cold",
                ]
            )
    return rows


def _write(path, rows, header=("path", "label", "split", "is_query", "is_gallery", "category")):
    delimiter = "," if path.suffix == ".csv" else "\t"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _reference(emb, labels, is_query, is_gallery, ks):
    """Recall@k and MAP@R (Musgrave et al. 2020) by loops: each query searches the gallery rows
    other than itself, ties by ascending row."""
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    hits, aps = {k: [] for k in ks}, []
    for i in np.flatnonzero(is_query):
        gallery = [j for j in range(len(x)) if is_gallery[j] and j != i]
        R = sum(labels[j] == labels[i] for j in gallery)
        if R == 0:
            continue
        sims = {j: float(np.dot(x[i].astype(np.float64), x[j].astype(np.float64))) for j in gallery}
        rel = [labels[j] == labels[i] for j in sorted(gallery, key=lambda j: (-sims[j], j))]
        for k in ks:
            hits[k].append(any(rel[:k]))
        found, ap = 0, 0.0
        for rank, r in enumerate(rel[:R], start=1):
            found += r
            ap += found / rank if r else 0.0
        aps.append(ap / R)
    out = {f"recall@{k}": float(np.mean(v)) for k, v in hits.items()}
    out["map@r"] = float(np.mean(aps))
    return out


def _config(folder, tmp_path, split_file, **over):
    settings = {
        "data.dataset": f"imagefolder:{folder}",
        "data.cache_dir": str(tmp_path / "cache"),
        "data.split_file": str(split_file),
        "model.image_size": 32,
        "model.embedding_dim": 16,
        "train.epochs": 2,
        "train.batch_size": 6,
        "train.m_per_class": 2,
        "train.iterations_per_epoch": 2,
        "train.progress": False,
        "eval.every": 1,
        "eval.recall_at": [1, 2, 4],
        "output_dir": str(tmp_path / "run"),
    }
    return load_config(None, {**settings, **over})


def _check_against_reference(metrics, run, ks=(1, 2, 4)):
    from langdml.experiment import embed

    emb = embed(run.model, run.config, run.data).numpy()
    part = run.data.eval
    ref = _reference(emb, part.labels, part.extras["is_query"], part.extras["is_gallery"], ks)
    assert set(ref) <= set(metrics)
    for key, value in ref.items():
        assert metrics[key] == pytest.approx(value, abs=1e-6), key
    return ref


def test_roles_drive_training_and_evaluation(folder, tmp_path, capsys):
    from langdml.experiment import open_run
    from langdml.train import train

    split_file = _write(tmp_path / "split.tsv", _role_rows())
    result = train(_config(folder, tmp_path, split_file))
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["eval_split"] == "val" and summary["final"] == result.metrics
    # the file's val rows are a validation split: the best epoch is chosen on them
    assert "best_unavailable" not in summary and summary["best"]["epoch"] in (1, 2)
    assert open_run(tmp_path / "run", "best").epoch == summary["best"]["epoch"]
    run = open_run(tmp_path / "run")
    assert run.data.train.num_classes == 6 and run.data.eval.num_classes == 3
    roles = eval_roles(run.data.eval)
    # 3 val classes x (3 queries, 3 gallery images); two queries per class are in the gallery
    assert len(roles.query) == 9 and len(roles.gallery) == 9
    assert (roles.self_index >= 0).sum() == 6
    ref = _check_against_reference(result.metrics, run)
    assert 0 < ref["map@r"] < 1  # not a trivial set: the check can tell orders apart
    # per_class.csv comes from the same roles: its query-weighted Recall@1 is the overall one
    with open(tmp_path / "run" / "per_class.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["queries"]) for r in rows] == [3, 3, 3]
    assert np.mean([float(r["recall@1"]) for r in rows]) == pytest.approx(ref["recall@1"])
    # `langdml evaluate` on the test classes: the test part's roles
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run"), "--split", "test"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["split"] == "test"
    _check_against_reference(printed, open_run(tmp_path / "run", split="test"))


def test_a_bad_file_fails_before_any_work(folder, tmp_path):
    from langdml.train import train

    rows = _role_rows()
    rows[31][3] = "maybe"  # an is_query cell of a val image
    bad = _write(tmp_path / "bad.tsv", rows)
    with pytest.raises(DataError, match=r"bad\.tsv: line 33: is_query 'maybe'") as err:
        train(_config(folder, tmp_path, bad))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    assert not list((tmp_path / "cache").rglob("*.pt"))  # no features were extracted


def _edit(rows, i, column, value):
    rows = [list(r) for r in rows]
    rows[i][column] = value
    return rows


BAD_FILES = {
    "unknown path": (
        _edit(_role_rows(), 0, 0, "icon_00/none.png"),
        r"line 2: path "
        r"'icon_00/none.png' is not an image of dataset",
    ),
    "path outside the root": (
        _edit(_role_rows(), 1, 0, "../icon_00/0.png"),
        r"line 3: path '\.\./icon_00/0\.png' is outside the dataset root",
    ),
    "absolute path": (
        _edit(_role_rows(), 1, 0, "/etc/hosts"),
        r"line 3: path '/etc/hosts' is outside the dataset root",
    ),
    "class in two splits": (
        _edit(_role_rows(), 4, 2, "test"),
        r"line 6: class 'icon_00' has split 'test' here but 'train' on line 2",
    ),
    "query without gallery": (
        [r for r in _role_rows() if not (r[1] == "icon_07" and r[4] == "True")],
        r"line \d+: query 'icon_07/0\.png' \(class 'icon_07'\) has no gallery image",
    ),
    "bad boolean": (_edit(_role_rows(), 40, 4, "2"), r"line 42: is_gallery '2' is not a boolean"),
    "bad split": (_edit(_role_rows(), 0, 2, "dev"), r"line 2: split 'dev' is not one of"),
    "wrong label": (
        _edit(_role_rows(), 2, 1, "icon_05"),
        r"line 4: label 'icon_05' but 'icon_00/2\.png' is in class 'icon_00'",
    ),
    "path twice": (_role_rows() + [_role_rows()[0]], r"path 'icon_00/0\.png' is listed twice"),
    "two categories": (
        _edit(_role_rows(), 3, 5, "warm"),
        r"line 5: class 'icon_00' has category 'warm' here but 'cold'",
    ),
    "role on a train row": (
        _edit(_role_rows(), 0, 3, "true"),
        r"line 2: a train row cannot be a query",
    ),
    "no test rows": ([r for r in _role_rows() if r[2] != "test"], r"no test rows"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_are_one_line_naming_file_line_and_value(folder, tmp_path, case):
    rows, message = BAD_FILES[case]
    path = _write(tmp_path / "split.tsv", rows)
    ds = load_dataset(f"imagefolder:{folder}")
    with pytest.raises(DataError, match=message) as err:
        class_splits(ds, split_file=path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_bad_headers(folder, tmp_path):
    ds = load_dataset(f"imagefolder:{folder}")
    rows = [[r[0], r[1]] for r in _role_rows()]
    cases = [
        (("path",), [[r[0]] for r in rows], "missing column 'label'"),
        (("path", "label", "is_query"), [r + ["1"] for r in rows], "missing column 'is_gallery'"),
        (("path", "label", "is_querry"), [r + ["1"] for r in rows], "unknown column 'is_querry'"),
    ]
    for header, body, message in cases:
        path = _write(tmp_path / "split.csv", body, header)
        with pytest.raises(DataError, match=message) as err:
            class_splits(ds, split_file=path)
        assert "line 1" in str(err.value) and "\n" not in str(err.value)
    path = _write(tmp_path / "short.csv", [["icon_00/0.png"]], ("path", "label"))
    with pytest.raises(DataError, match="line 2: 1 cells, expected 2"):
        class_splits(ds, split_file=path)


def _parts(splits):
    return {p: getattr(splits, p) for p in ("train", "val", "test") if getattr(splits, p)}


def test_data_split_is_seeded_class_disjoint_and_round_trips(folder, tmp_path, capsys):
    spec = f"imagefolder:{folder}"
    args = ["--val-fraction", "0.3", "--query-gallery", "0.4"]
    out = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        out[name] = tmp_path / f"{name}.csv"
        assert main(["data", "split", spec, "-o", str(out[name]), "--seed", str(seed), *args]) == 0
    assert out["a"].read_bytes() == out["b"].read_bytes()
    assert out["a"].read_bytes() != out["c"].read_bytes()
    with open(out["a"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == N_CLASSES * PER_CLASS
    split_of = {}
    for row in rows:
        assert split_of.setdefault(row["label"], row["split"]) == row["split"]  # class-disjoint
    assert sorted(split_of.values()).count("train") == 4  # 6 train classes minus 2 validation
    for label, part in split_of.items():
        mine = [r for r in rows if r["label"] == label]
        queries = sum(r["is_query"] == "true" for r in mine)
        galleries = sum(r["is_gallery"] == "true" for r in mine)
        assert (queries, galleries) == ((0, 0) if part == "train" else (2, 3))
    # the file gives exactly the classes a seeded-order run with the same settings uses
    ds = load_dataset(spec)
    from_file = _parts(class_splits(ds, split_file=out["a"]))
    seeded = _parts(class_splits(ds, 0.5, 0.3, class_order="seeded", split_seed=3))
    assert set(from_file) == set(seeded) == {"train", "val", "test"}
    for part in seeded:
        assert sorted(from_file[part].class_names) == sorted(seeded[part].class_names)
        assert sorted(from_file[part].images.items) == sorted(seeded[part].images.items)
    natural = class_splits(ds, 0.5, 0.3)
    assert natural.test.class_names != seeded["test"].class_names
    # and the roles read back are the file's
    roles = eval_roles(from_file["test"])
    assert len(roles.query) == 2 * from_file["test"].num_classes
    assert (roles.self_index == -1).all()
    assert main(["data", "split", spec, "-o", str(tmp_path / "x.csv"), "--query-gallery", "2"]) == 2
    assert "--query-gallery must be none, all or a query fraction" in capsys.readouterr().err


def test_query_gallery_all_is_leave_one_out(folder, tmp_path):
    from langdml.eval import retrieval_metrics

    path = tmp_path / "all.tsv"
    assert (
        main(["data", "split", f"imagefolder:{folder}", "-o", str(path), "--query-gallery", "all"])
        == 0
    )
    test = class_splits(load_dataset(f"imagefolder:{folder}"), split_file=path).test
    roles = eval_roles(test)
    assert len(roles.query) == len(roles.gallery) == len(test)
    assert (roles.self_index == np.arange(len(test))).all()
    emb = np.random.default_rng(1).normal(size=(len(test), 8)).astype(np.float32)
    parts = ("recall", "map_r")
    with_roles = retrieval_metrics(
        emb, test.labels, emb, test.labels, self_index=roles.self_index, include=parts
    )
    assert with_roles == pytest.approx(retrieval_metrics(emb, test.labels, include=parts))


def test_class_order_seeded_config(folder, tmp_path):
    from langdml.experiment import prepare_data

    over = {"data.split_file": None, "data.class_order": "seeded", "data.split_seed": 5}
    cfg = _config(folder, tmp_path, "", **over)
    a, b = prepare_data(cfg), prepare_data(cfg)
    assert a.eval.class_names == b.eval.class_names
    ds = load_dataset(f"imagefolder:{folder}")
    expected = class_splits(ds, class_order="seeded", split_seed=5)
    assert a.eval.class_names == expected.test.class_names
    assert a.eval.class_names != class_splits(ds).test.class_names
    assert set(a.eval.class_names).isdisjoint(a.train.class_names)


def test_class_categories_and_subset_files(folder, tmp_path):
    rows = [r for r in _role_rows() if not r[0].endswith("4.png")]  # 4 images per class
    ds = load_dataset(f"imagefolder:{folder}")
    splits = class_splits(ds, split_file=_write(tmp_path / "s.tsv", rows))
    assert len(splits.train) == 6 * 4 and splits.val.num_classes == 3
    cats = class_categories(splits.train)
    assert cats == {c: "warm" if c % 2 else "cold" for c in range(6)}
    with pytest.raises(DataError, match="no class categories"):
        class_categories(ds)


def test_table_datasets_are_named_by_row_number(tmp_path):
    from langdml.data.split_writer import write_split_file

    images = [Image.new("RGB", (8, 8), (i, i, i)) for i in range(12)]
    ds = ImageDataset(
        "rows",
        ImageSource(list(range(12)), images.__getitem__),
        np.repeat(np.arange(4), 3),
        ["a", "b", "c", "d"],
    )
    path = write_split_file(ds, tmp_path / "rows.tsv", seed=1, query_gallery="all")
    first = path.read_text().splitlines()[1].split("\t")
    assert first[0] == "0" and first[1] == "a"
    splits = class_splits(ds, split_file=path)
    assert splits.train.num_classes == 2 and splits.test.num_classes == 2
    _write(tmp_path / "bad.tsv", [["12", "d"]], ("path", "label"))
    with pytest.raises(
        DataError,
        match=r"path '12' is not an image of dataset rows \(its "
        r"images are table rows, named 0\.\.11\)",
    ):
        class_splits(ds, split_file=tmp_path / "bad.tsv")


def test_a_reranked_search_of_a_gallery_holding_the_queries_is_refused_before_training(
    folder, tmp_path
):
    from langdml.errors import ConfigError
    from langdml.experiment import prepare_data

    split_file = _write(tmp_path / "split.tsv", _role_rows())
    cfg = _config(folder, tmp_path, split_file, **{"eval.rerank": "qe"})
    with pytest.raises(ConfigError, match="eval.rerank 'qe' cannot search a gallery"):
        prepare_data(cfg)
    assert not list((tmp_path / "cache").rglob("*.pt"))
