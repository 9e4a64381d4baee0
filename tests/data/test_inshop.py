"""The In-Shop format (inshop:PATH) on a tiny fake folder: loading, errors, and a frozen-trunk run
end to end whose query -> gallery metrics match a loop reference written from the definitions."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from langdml.config import load_config
from langdml.data import class_disjoint_split, load_dataset
from langdml.data.roles import eval_roles
from langdml.errors import DataError

HEADER = "image_name item_id evaluation_status"
# (gender, category, item, statuses of its images)
ITEMS = [("WOMEN", "Dresses", i, ["train"] * 4) for i in range(1, 4)]
ITEMS += [("MEN", "Denim", i, ["train"] * 4) for i in range(4, 7)]
ITEMS += [
    ("WOMEN", "Blouses_Shirts", i, ["query", "query", "gallery", "gallery", "gallery"])
    for i in range(7, 10)
]
ITEMS += [
    ("MEN", "Tees_Tanks", i, ["query", "query", "gallery", "gallery", "gallery"])
    for i in range(10, 12)
]


def _make(root, items=ITEMS, extra_lines=()):
    """The download's layout: Eval/list_eval_partition.txt, images under Img/img/..."""
    rng = np.random.default_rng(0)
    lines = []
    for gender, cat, item, statuses in items:
        colour = rng.integers(0, 256, size=3)
        for k, status in enumerate(statuses):
            rel = f"img/{gender}/{cat}/id_{item:08d}/{k:02d}_1_front.png"
            path = root / "Img" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = np.clip(colour + rng.normal(0, 40, size=(48, 48, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(path)
            lines.append(f"{rel} id_{item:08d} {status}")
    lines += list(extra_lines)
    (root / "Eval").mkdir(parents=True, exist_ok=True)
    text = f"{len(lines)}\n{HEADER}\n" + "\n".join(lines) + "\n"
    (root / "Eval" / "list_eval_partition.txt").write_text(text)
    return root


@pytest.fixture(scope="module")
def inshop(tmp_path_factory):
    return _make(tmp_path_factory.mktemp("inshop"))


def test_loads_items_names_and_the_query_gallery_split(inshop):
    ds = load_dataset(f"inshop:{inshop}")
    assert ds.num_classes == 11 and len(ds) == 6 * 4 + 5 * 5
    assert ds.class_names[0] == "women dresses" and ds.class_names[-1] == "men tees tanks"
    assert ds.shares_names
    split = class_disjoint_split(ds)
    assert split.train.num_classes == 6 and split.test.num_classes == 5
    assert eval_roles(split.train) is None  # training classes: leave-one-out if evaluated
    roles = eval_roles(split.test)
    q, g = roles.query, roles.gallery
    assert len(q) == 10 and len(g) == 15 and (roles.self_index == -1).all()
    marks = np.asarray(split.test.extras["official_split"])
    assert set(marks[q]) == {"query"} and set(marks[g]) == {"gallery"}


def test_bad_partition_files_are_one_line(tmp_path):
    mixed = [("WOMEN", "Dresses", 1, ["train", "query"]), ("MEN", "Denim", 2, ["gallery"])]
    with pytest.raises(DataError, match="train and in query/gallery"):
        load_dataset(f"inshop:{_make(tmp_path / 'a', mixed)}")
    with pytest.raises(DataError, match="line 7") as err:
        load_dataset(f"inshop:{_make(tmp_path / 'b', ITEMS[:1], ['img/x.png id_1 test'])}")
    assert "\n" not in str(err.value)
    root = _make(tmp_path / "c", ITEMS[:1])
    (root / "Eval" / "list_eval_partition.txt").write_text("1\nimage_name item_id\n")
    with pytest.raises(DataError, match="header"):
        load_dataset(f"inshop:{root}")
    root = _make(tmp_path / "d", ITEMS[:1], ["img/WOMEN/Dresses/id_9/gone.png id_9 train"])
    with pytest.raises(DataError, match="missing"):
        load_dataset(f"inshop:{root}")
    with pytest.raises(DataError, match="list_eval_partition.txt not found"):
        load_dataset(f"inshop:{tmp_path}")


def _reference(q, q_lab, g, g_lab, ks):
    """Queries search the gallery only (no leave-one-out): Recall@k and MAP@R, loops."""
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    hits, aps = {k: [] for k in ks}, []
    for i in range(len(q)):
        R = int((g_lab == q_lab[i]).sum())
        if R == 0:
            continue
        sims = [
            float(np.dot(qn[i].astype(np.float64), gn[j].astype(np.float64))) for j in range(len(g))
        ]
        order = sorted(range(len(g)), key=lambda j: (-sims[j], j))
        rel = [g_lab[j] == q_lab[i] for j in order]
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


def _config(inshop, tmp_path, hierarchy):
    return load_config(
        None,
        {
            "data.dataset": f"inshop:{inshop}",
            "data.cache_dir": str(tmp_path / "cache"),
            "model.image_size": 48,
            "model.embedding_dim": 16,
            "train.epochs": 2,
            "train.batch_size": 8,
            "train.m_per_class": 2,
            "train.iterations_per_epoch": 3,
            "train.progress": False,
            "eval.every": 1,
            "eval.recall_at": [1, 2, 4],
            "eval.hierarchy": str(hierarchy),
            "output_dir": str(tmp_path / "run"),
        },
    )


def _severity_reference(top1_pairs, path_of):
    """Same-group top-1 error rate and mean LCA height (Bertinetto et al. 2020) by loops."""
    errors = [(t, p) for t, p in top1_pairs if t != p]
    same = np.mean([path_of[t][0] == path_of[p][0] for t, p in errors])
    heights = []
    for t, p in errors:
        full_t, full_p = (*path_of[t], t), (*path_of[p], p)
        shared = next((i for i, (a, b) in enumerate(zip(full_t, full_p)) if a != b), 3)
        heights.append(len(full_t) - shared)
    return same, float(np.mean(heights))


def test_a_hierarchy_with_unknown_classes_fails_before_training(inshop, tmp_path):
    from langdml.train import train

    bad = tmp_path / "h.tsv"
    bad.write_text("women blouses shirts\twomen/tops\n")
    with pytest.raises(DataError, match="'men tees tanks'") as err:
        train(_config(inshop, tmp_path, bad))
    assert "\n" not in str(err.value) and not (tmp_path / "run" / "checkpoint.pt").exists()


def test_train_and_evaluate_query_against_gallery(inshop, tmp_path):
    from langdml.experiment import embed, open_run
    from langdml.train import train

    hierarchy = tmp_path / "h.tsv"
    hierarchy.write_text("women blouses shirts\twomen/tops\nmen tees tanks\tmen/tops\n")
    result = train(_config(inshop, tmp_path, hierarchy))
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["final"] == result.metrics
    run = open_run(tmp_path / "run")
    emb = embed(run.model, run.config, run.data).numpy()
    labels = run.data.eval.labels
    roles = eval_roles(run.data.eval)
    q, g = roles.query, roles.gallery
    ref = _reference(emb[q], labels[q], emb[g], labels[g], (1, 2, 4))
    for key, value in ref.items():
        assert result.metrics[key] == pytest.approx(value, abs=1e-6), key
    # per_class.csv: one row per test item; its query-weighted Recall@1 is the overall one
    with open(tmp_path / "run" / "per_class.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and all(int(r["queries"]) == 2 for r in rows)
    mean_r1 = np.mean([float(r["recall@1"]) for r in rows])
    assert mean_r1 == pytest.approx(result.metrics["recall@1"])
    # mistake severity of the top-1 gallery neighbour, over the item classes
    qn = emb[q] / np.linalg.norm(emb[q], axis=1, keepdims=True)
    gn = emb[g] / np.linalg.norm(emb[g], axis=1, keepdims=True)
    top1 = [int(labels[g][int(np.argmax(gn @ v))]) for v in qn]
    names = run.data.eval.class_names
    path_of = {
        c: ("women" if names[c].startswith("women") else "men", "tops") for c in range(len(names))
    }
    hier = summary["hierarchy"]
    pairs = list(zip(labels[q].tolist(), top1))
    assert any(t != p for t, p in pairs)  # a 2-epoch head on noise images makes mistakes
    same, severity = _severity_reference(pairs, path_of)
    assert hier["hier/top1_error_same_group"] == pytest.approx(same)
    assert hier["hier/mistake_severity"] == pytest.approx(severity)
    assert 0.0 <= hier["hier/hp@1"] <= 1.0


def test_a_split_file_names_inshop_classes_by_id_and_its_roles_replace_the_statuses(
    inshop, tmp_path
):
    from langdml.data import class_splits, write_split_file

    ds = load_dataset(f"inshop:{inshop}")
    path = write_split_file(ds, tmp_path / "s.csv", seed=2, query_gallery=0.4)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    # class names are shared (the category folder): labels are class ids, names the category
    assert rows[0]["path"] == "img/WOMEN/Dresses/id_00000001/00_1_front.png"
    assert rows[0]["label"] == "0" and rows[0]["category"] == "women dresses"
    splits = class_splits(ds, split_file=path)
    seeded = class_splits(ds, class_order="seeded", split_seed=2)
    assert sorted(splits.test.images.items) == sorted(seeded.test.images.items)
    roles = eval_roles(splits.test)
    written = {r["path"]: r["is_query"] == "true" for r in rows}
    root = str(inshop / "Img") + "/"
    assert [written[p.removeprefix(root)] for p in splits.test.images.items] == [
        i in set(roles.query) for i in range(len(splits.test))
    ]
