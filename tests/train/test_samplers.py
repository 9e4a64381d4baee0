"""Batch samplers (train.sampler): the exact composition of class-balanced and hierarchical
batches, epoch length and coverage, determinism, the config's batch sizes and the errors."""

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from langdml.config import load_config
from langdml.errors import ConfigError, LangDMLError
from langdml.train.categories import class_categories
from langdml.train.sampler import (
    ClassBalancedSampler,
    HierarchicalSampler,
    MPerClassSampler,
    build_sampler,
)

# 7 classes of 5, 3, 4, 1, 6, 2, 3 images (class 3 has a single image)
SIZES = [5, 3, 4, 1, 6, 2, 3]
LABELS = np.repeat(np.arange(len(SIZES)), SIZES)


def test_class_balanced_batches_hold_n_classes_times_n_per_class():
    sampler = ClassBalancedSampler(LABELS, n_classes=3, n_per_class=2, seed=4)
    batches = sampler.epoch(0)
    assert len(sampler) == len(batches) == 3  # ceil(7 classes / 3)
    seen = set()
    for batch in batches:
        assert len(batch) == 6
        labels = LABELS[batch]
        counts = Counter(labels.tolist())
        assert sorted(counts.values()) == [2, 2, 2]  # 3 distinct classes x 2 images
        for c in counts:
            rows = batch[labels == c]
            assert len(set(rows.tolist())) == min(2, SIZES[c])  # distinct where the class can
        seen |= set(counts)
    assert seen == set(range(7))  # every class once per epoch (the last batch topped up)
    assert [b.tolist() for b in sampler.epoch(0)] == [b.tolist() for b in batches]
    assert [b.tolist() for b in sampler.epoch(1)] != [b.tolist() for b in batches]


def test_class_balanced_iterations_override_and_errors():
    assert len(ClassBalancedSampler(LABELS, 2, 2, iterations_per_epoch=10).epoch(3)) == 10
    with pytest.raises(ConfigError, match="exceeds the size of every class"):
        ClassBalancedSampler(LABELS, 2, 7)
    with pytest.raises(ConfigError, match="only 7"):
        ClassBalancedSampler(LABELS, 8, 2)


# 10 classes in 3 categories: {0,1,2,3} -> 0, {4,5,6} -> 1, {7,8,9} -> 2
CATEGORIES = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
H_LABELS = np.repeat(np.arange(10), [3, 4, 2, 5, 3, 3, 1, 4, 2, 3])


def _blocks(batch, size):
    return [batch[i : i + size] for i in range(0, len(batch), size)]


def test_hierarchical_batches_are_categories_of_classes_of_images():
    sampler = HierarchicalSampler(
        H_LABELS,
        CATEGORIES,
        n_categories=2,
        n_classes=2,
        n_per_class=2,
        seed=1,
        iterations_per_epoch=9,
    )
    batches = sampler.epoch(0)
    assert len(batches) == 9
    batch_cats, visits = [], {g: [] for g in range(3)}  # per category: its classes per visit
    for batch in batches:
        assert len(batch) == 8
        cats = []
        for cat_block in _blocks(batch, 4):  # category by category ...
            cat_labels = H_LABELS[cat_block]
            assert len(set(CATEGORIES[cat_labels].tolist())) == 1
            cats.append(int(CATEGORIES[cat_labels[0]]))
            classes = []
            for class_block in _blocks(cat_block, 2):  # ... class by class
                assert len(set(H_LABELS[class_block].tolist())) == 1
                c = int(H_LABELS[class_block[0]])
                n_imgs = int((H_LABELS == c).sum())
                assert len(set(class_block.tolist())) == min(2, n_imgs)
                classes.append(c)
            assert len(set(classes)) == 2  # distinct classes within the category
            visits[cats[-1]].append(classes)
        assert len(set(cats)) == 2  # distinct categories within the batch
        batch_cats.append(cats)
    # round-robins: the first ceil(3 / 2) = 2 batches hold all 3 categories, and a category's
    # first ceil(members / 2) visits all of its classes
    assert {c for cats in batch_cats[:2] for c in cats} == {0, 1, 2}
    for g, members in enumerate(([0, 1, 2, 3], [4, 5, 6], [7, 8, 9])):
        first = visits[g][: -(-len(members) // 2)]
        assert {c for v in first for c in v} == set(members), (g, visits[g])
    again = sampler.epoch(0)
    assert all((a == b).all() for a, b in zip(again, batches))


def test_hierarchical_default_epoch_length_and_errors():
    sampler = HierarchicalSampler(H_LABELS, CATEGORIES, 1, 3, 2)
    assert len(sampler) == len(H_LABELS) // 6
    with pytest.raises(ConfigError, match="2 of 3 categories have fewer than n_classes=4 .*has 3"):
        HierarchicalSampler(H_LABELS, CATEGORIES, 1, 4, 2)
    with pytest.raises(ConfigError, match="n_categories=4 exceeds the 3 categories"):
        HierarchicalSampler(H_LABELS, CATEGORIES, 4, 2, 2)


@pytest.mark.parametrize(
    ("over", "batch", "classes", "per_class"),
    [
        ({"train.sampler": "class_balanced"}, 64, 32, 2),
        (
            {"train.sampler": "class_balanced", "train.n_classes": 5, "train.n_per_class": 3},
            15,
            5,
            3,
        ),
        (
            {"train.sampler": "class_balanced", "train.batch_size": 12, "train.n_per_class": 4},
            12,
            3,
            4,
        ),
        ({"train.sampler": "hierarchical", "train.n_categories": 2}, 64, 16, 2),
        (
            {"train.sampler": "hierarchical", "train.n_categories": 2, "train.n_classes": 3},
            12,
            3,
            2,
        ),
    ],
)
def test_config_resolves_the_batch(over, batch, classes, per_class):
    t = load_config(None, over).train
    assert (t.batch_size, t.n_classes, t.n_per_class) == (batch, classes, per_class)
    # the saved config (explicit sizes) loads back to the same batch
    again = load_config(None, {f"train.{k}": v for k, v in t.model_dump().items()}).train
    assert (again.batch_size, again.n_classes, again.n_per_class) == (batch, classes, per_class)


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"train.n_classes": 4}, "applies to train.sampler class_balanced"),
        ({"train.sampler": "hierarchical"}, "needs train.n_categories"),
        ({"train.sampler": "class_balanced", "train.n_categories": 2}, "hierarchical only"),
        (
            {"train.sampler": "class_balanced", "train.batch_size": 10, "train.n_classes": 3},
            "batch_size 10 disagrees",
        ),
        ({"train.sampler": "class_balanced", "train.batch_size": 9}, "not divisible"),
    ],
)
def test_config_errors_are_one_line(over, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(None, over)
    assert "\n" not in str(err.value)


def test_default_sampler_is_the_m_per_class_one():
    cfg = load_config(None, {"train.batch_size": 6, "train.m_per_class": 2, "seed": 3})
    train = SimpleNamespace(labels=LABELS, name="x", class_names=[])
    built = build_sampler(cfg, train)
    direct = MPerClassSampler(LABELS, 6, 2, seed=3)
    assert type(built) is MPerClassSampler
    assert all((a == b).all() for a, b in zip(built.epoch(2), direct.epoch(2)))


def test_categories_come_from_the_hierarchy_level(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("class_name,group\na,birds/sea\nb,birds/land\nc,fish/sea\nd,birds/sea\n")
    train = SimpleNamespace(name="imagefolder:x:train", class_names=["a", "b", "c", "d"])
    over = {"eval.hierarchy": str(path), "train.sampler": "hierarchical", "train.n_categories": 1}
    assert class_categories(load_config(None, over), train).tolist() == [0, 0, 1, 0]
    fine = load_config(None, {**over, "train.category_level": 1})
    codes = class_categories(fine, train).tolist()
    assert codes[0] == codes[3] and len({codes[0], codes[1], codes[2]}) == 3
    with pytest.raises(ConfigError, match="category_level 2 is past"):
        class_categories(load_config(None, {**over, "train.category_level": 2}), train)
    with pytest.raises(ConfigError, match="needs class categories"):
        class_categories(load_config(None, {**over, "eval.hierarchy": "none"}), train)


def _column_data(categories_per_image, labels, names):
    from langdml.data import ImageDataset, ImageSource

    return ImageDataset(
        "imagefolder:x:train",
        ImageSource(list(range(len(labels))), lambda i: None),
        labels,
        names,
        extras={"category": categories_per_image},
    )


def test_categories_come_from_the_data_category_column(tmp_path):
    names = ["a", "b", "c", "d"]
    labels = [0, 0, 1, 2, 2, 3]
    train = _column_data(["sea", "sea", "land", "sea", "sea", "air"], labels, names)
    over = {"train.sampler": "hierarchical", "train.n_categories": 1}
    # names sorted: air 0, land 1, sea 2
    assert class_categories(load_config(None, over), train).tolist() == [2, 1, 2, 0]
    # eval.hierarchy none turns off the metrics' hierarchy, not the data's own column
    cfg = load_config(None, {**over, "eval.hierarchy": "none"})
    assert class_categories(cfg, train).tolist() == [2, 1, 2, 0]
    # an explicit hierarchy file wins over the column
    path = tmp_path / "h.csv"
    path.write_text("a,x\nb,y\nc,y\nd,x\n")
    assert class_categories(
        load_config(None, {**over, "eval.hierarchy": str(path)}), train
    ).tolist() == [0, 1, 1, 0]
    with pytest.raises(ConfigError, match="category_level 1 is past the one level"):
        class_categories(load_config(None, {**over, "train.category_level": 1}), train)
    torn = _column_data(["sea", "land", "land", "sea", "sea", "air"], labels, names)
    with pytest.raises(LangDMLError, match="class 'a' has two categories"):
        class_categories(load_config(None, over), torn)


def test_category_codes_of_a_mapping():
    from langdml.train.categories import category_codes

    assert category_codes({0: "b", 1: "a", 2: "b"}, 3).tolist() == [1, 0, 1]
    with pytest.raises(ConfigError, match="1 of 3 training classes have no category"):
        category_codes({0: "b", 2: "b"}, 3)


def test_hierarchical_sampler_batches_follow_the_category_column():
    # 6 classes of 3 images; categories by class: x x y y z z
    labels = np.repeat(np.arange(6), 3)
    per_image = [["x", "x", "y", "y", "z", "z"][c] for c in labels]
    train = _column_data(per_image, labels, [f"c{i}" for i in range(6)])
    over = {
        "train.sampler": "hierarchical",
        "train.n_categories": 1,
        "train.n_classes": 2,
        "train.n_per_class": 2,
        "train.iterations_per_epoch": 6,
    }
    sampler = build_sampler(load_config(None, over), train)
    for batch in sampler.epoch(0):
        classes = sorted(set(labels[batch].tolist()))
        assert classes in ([0, 1], [2, 3], [4, 5])  # both classes of one category
