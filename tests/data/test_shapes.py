"""The shapes benchmark: a seeded, pinned, class-disjoint build whose class names are the visual
attributes of the images. Builds here are the full class list with 2 images of 32 px per class
(seconds); the images of a class are the same draws at any count."""

import hashlib
import itertools
import json
import math
import warnings

import numpy as np
import pytest

from langdml.cli import main
from langdml.data import class_disjoint_split, load_dataset, shapes
from langdml.data.shape_render import BACKGROUNDS, COLOURS, FILLS, RENDER_STYLES, SHAPES, render
from langdml.errors import DataError

SMALL = {"images_per_class": 2, "image_size": 32}


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    shapes.build_shapes(cache_dir=root, **SMALL)
    return root


@pytest.fixture
def small_defaults(monkeypatch):
    """The CLI builds with the module's defaults: make them the small build's."""
    monkeypatch.setattr(shapes, "IMAGES_PER_CLASS", SMALL["images_per_class"])
    monkeypatch.setattr(shapes, "IMAGE_SIZE", SMALL["image_size"])


def _pixels(ds) -> list[bytes]:
    return [ds.image(i).tobytes() for i in range(len(ds))]


def test_build_is_a_function_of_the_seed(small_cache, tmp_path):
    a = load_dataset("shapes", cache_dir=small_cache)
    shapes.build_shapes(cache_dir=tmp_path, **SMALL)
    again = load_dataset("shapes", cache_dir=tmp_path)
    assert again.fingerprint == a.fingerprint
    assert _pixels(again) == _pixels(a)
    assert np.array_equal(again.labels, a.labels)
    other = shapes.build_shapes(cache_dir=tmp_path, seed=1, **SMALL)
    assert other.name == "shapes-seed1"
    b = shapes.load_shapes(cache_dir=tmp_path, seed=1)
    assert b.fingerprint != a.fingerprint
    assert np.array_equal(b.labels, a.labels) and b.class_names == a.class_names
    differ = sum(x != y for x, y in zip(_pixels(a), _pixels(b)))
    assert differ == len(a)  # every image is a new draw


def test_pinned_class_list_matches_its_checksum_and_derivation(monkeypatch):
    data = shapes.PIN_FILE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == shapes.PIN_SHA256
    # the file is what class_table derives from the seed, so it can be regenerated, not edited
    assert shapes.table_text(shapes.class_table()) == data.decode("utf-8")
    pinned = shapes.pinned_classes()
    assert [c.id for c in pinned] == list(range(len(COLOURS) * len(FILLS) * len(SHAPES)))
    monkeypatch.setattr(shapes, "PIN_SHA256", "0" * 64)
    with pytest.raises(DataError, match="does not match its pinned SHA-256"):
        shapes.pinned_classes()


def test_class_names_are_the_attribute_words(small_cache):
    ds = load_dataset("shapes", cache_dir=small_cache)
    assert ds.num_classes == 384 and len(ds) == 384 * SMALL["images_per_class"]
    combos = {(c, f, s) for c, f, s in itertools.product(COLOURS, FILLS, SHAPES)}
    assert {tuple(n.split(" ")) for n in ds.class_names} == combos
    for i in range(0, len(ds), 7):
        name = ds.class_names[ds.labels[i]]
        assert name == f"{ds.extras['colour'][i]} {ds.extras['fill'][i]} {ds.extras['shape'][i]}"
    # the pinned file's names are the ones the dataset serves
    assert ds.class_names == [c.name for c in shapes.pinned_classes()]


def test_split_is_class_disjoint_with_every_attribute_seen(small_cache):
    ds = load_dataset("shapes", cache_dir=small_cache)
    split = class_disjoint_split(ds)
    assert not set(split.train.class_names) & set(split.test.class_names)
    assert split.train.num_classes == split.test.num_classes == 192
    assert len(split.train) + len(split.test) == len(ds)
    for attr in ("colour", "fill", "shape"):  # unseen combinations of seen attribute values
        assert set(split.test.extras[attr]) <= set(split.train.extras[attr])
    pinned = {c.name: c for c in shapes.pinned_classes()}
    assert all(pinned[n].id < 192 for n in split.train.class_names)


def test_holdout_test_classes_hold_the_unseen_colour(small_cache):
    ds = load_dataset("shapes:holdout", cache_dir=small_cache)
    split = class_disjoint_split(ds)
    held = shapes.HOLDOUT_COLOUR
    assert not set(split.train.class_names) & set(split.test.class_names)
    assert held not in split.train.extras["colour"]
    assert not any(n.startswith(held + " ") for n in split.train.class_names)
    purple = [n for n in split.test.class_names if n.split(" ")[0] == held]
    assert len(purple) == len(FILLS) * len(SHAPES)  # every class of that colour is a test class
    assert set(split.test.extras["colour"]) - set(split.train.extras["colour"]) == {held}
    # same images as `shapes`, relabelled: each image keeps its class name
    plain = load_dataset("shapes", cache_dir=small_cache)
    for i in range(0, len(ds), 11):
        assert ds.class_names[ds.labels[i]] == plain.class_names[plain.labels[i]]
    with pytest.raises(DataError, match="shapes:holdout"):
        load_dataset("shapes:nosuch", cache_dir=small_cache)


def _ink(img) -> np.ndarray:
    """Pixels of a red shape: saturated red, far from the light, low-saturation backgrounds."""
    a = np.asarray(img, dtype=np.int32)
    return (a[..., 0] > 140) & (a[..., 1] < 110) & (a[..., 2] < 110)


def test_renderings_vary_within_a_class():
    draws = [render("red", "heart", "solid", np.random.default_rng([7, i]), 128) for i in range(16)]
    masks = [_ink(img) for img, _ in draws]
    assert all(m.sum() > 200 for m in masks)
    ys, xs = zip(*(np.argwhere(m).mean(axis=0) for m in masks))
    assert np.std(xs) > 4 and np.std(ys) > 4  # position
    areas = [int(m.sum()) for m in masks]
    assert max(areas) / min(areas) > 1.4  # scale
    # rotation: the heart's tip (its ink pixel farthest from the centroid) points every way
    angles = []
    for m, x, y in zip(masks, xs, ys):
        pts = np.argwhere(m)
        far = pts[np.argmax(((pts - [y, x]) ** 2).sum(axis=1))]
        angles.append(math.atan2(far[0] - y, far[1] - x))
    quadrants = {int((a + math.pi) // (math.pi / 2)) % 4 for a in angles}
    assert len(quadrants) >= 3
    nuisance = [n for _, n in draws]
    assert len({n["background"] for n in nuisance}) >= 3
    assert len({n["render_style"] for n in nuisance}) >= 3
    assert len({n["stroke"] for n in nuisance}) >= 2
    assert len({img.tobytes() for img, _ in draws}) == len(draws)


def test_built_classes_vary_their_nuisance(small_cache):
    ds = load_dataset("shapes", cache_dir=small_cache)
    for key, values in (("background", BACKGROUNDS), ("render_style", RENDER_STYLES)):
        assert set(ds.extras[key]) == set(values)
        per_class = {}
        for label, v in zip(ds.labels.tolist(), ds.extras[key]):
            per_class.setdefault(label, set()).add(v)
        mixed = sum(len(v) > 1 for v in per_class.values())
        assert mixed > ds.num_classes / 3  # two draws of 4 values differ 3/4 of the time


def _arrow(built):
    (arrow,) = built.glob("*.arrow")
    return arrow


@pytest.mark.parametrize("how", ["truncate", "bitflip"])
def test_damaged_cache_is_reported_and_rebuilt_on_load(tmp_path, how):
    built = shapes.build_shapes(cache_dir=tmp_path, **SMALL)
    before = _pixels(load_dataset("shapes", cache_dir=tmp_path))
    arrow = _arrow(built)
    blob = bytearray(arrow.read_bytes())
    if how == "truncate":
        arrow.write_bytes(bytes(blob[: len(blob) // 2]))
    else:
        blob[len(blob) // 2] ^= 0xFF
        arrow.write_bytes(bytes(blob))
    with pytest.warns(UserWarning) as record:
        after = load_dataset("shapes", cache_dir=tmp_path)
    lines = [str(w.message) for w in record if "rebuilding" in str(w.message)]
    assert len(lines) == 1 and str(arrow) in lines[0], lines
    assert _pixels(after) == before  # rebuilt at the size it had
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt cache verifies
        assert _pixels(load_dataset("shapes", cache_dir=tmp_path)) == before


def test_cli_build_repairs_and_info_reports(tmp_path, small_defaults, capsys):
    args = ["data", "build", "shapes", "--cache-dir", str(tmp_path)]
    assert main(args) == 0
    assert "built" in capsys.readouterr().out
    assert main(args) == 0
    assert "every file matches its checksum" in capsys.readouterr().out
    arrow = _arrow(shapes.dataset_dir(cache_dir=tmp_path))
    arrow.write_bytes(arrow.read_bytes()[:100])
    with pytest.warns(UserWarning, match="rebuilding"):
        assert main(args) == 0
    out = capsys.readouterr().out
    assert "repaired" in out and str(arrow) in out

    assert main(["data", "info", "shapes", "--cache-dir", str(tmp_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_classes"] == 384 and info["num_images"] == 768
    assert info["train_classes"] == info["test_classes"] == 192
    assert info["class_list_sha256"] == shapes.PIN_SHA256
    assert info["colours"] == "8 in train; all also in test"
    assert sum(info["images_per_render_style"].values()) == 768
    assert main(["data", "info", "shapes:holdout", "--cache-dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert f"test only: {shapes.HOLDOUT_COLOUR}" in text and "7 in train" in text
    assert "fills: 6 in train; all also in test" in text


def test_a_build_of_other_sizes_is_rebuilt_not_reused(tmp_path):
    shapes.build_shapes(cache_dir=tmp_path, images_per_class=2, image_size=24)
    with pytest.warns(UserWarning, match="2 images of 24 px.*rebuilding it with 3 of 24 px"):
        shapes.build_shapes(cache_dir=tmp_path, images_per_class=3, image_size=24)
    assert len(load_dataset("shapes", cache_dir=tmp_path)) == 3 * 384
    with pytest.raises(DataError, match="at least 2 images per class"):
        shapes.build_shapes(cache_dir=tmp_path, images_per_class=1)


def test_unbuilt_dataset_names_the_build_command(tmp_path, capsys):
    assert main(["data", "info", "shapes", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "langdml data build shapes" in err[0]
