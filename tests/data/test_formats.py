"""On-disk dataset loaders (cub200, cars196, sop, imagefolder, hf) on tiny generated trees.

Each test writes the format's files itself and checks the loader against what it wrote: the
expected (relative path → class name) table is built independently of the loader.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from langdml.data import class_disjoint_split, load_dataset
from langdml.data.formats import (
    clean_class_name,
    load_cars196,
    load_cub200,
    load_hf,
    load_imagefolder,
    load_sop,
    natural_key,
    official_split,
)
from langdml.errors import DataError


def _png(path: Path, value: int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 255 - value, value // 2)
    Image.new(mode, (8, 8), color).save(path)


def _table(ds, root: Path) -> dict[str, str]:
    """relative path → class name, as the loaded dataset says."""
    return {
        Path(p).relative_to(root).as_posix(): ds.class_names[lab]
        for p, lab in zip(ds.images.items, ds.labels, strict=True)
    }


def _check_images_rgb(ds) -> None:
    for i in range(len(ds)):
        img = ds.image(i)
        assert img.mode == "RGB" and img.size == (8, 8)


# ---------------------------------------------------------------------------- clean_class_name


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("001.Black_footed_Albatross", "black footed albatross"),
        ("200.Common_Yellowthroat", "common yellowthroat"),
        ("  017.Cardinal ", "cardinal"),
        ("Sooty__Albatross", "sooty albatross"),
        ("3.5 inch floppy", "3.5 inch floppy"),  # a number, not an id prefix
        ("coffee_maker", "coffee maker"),
    ],
)
def test_clean_class_name(raw, clean):
    assert clean_class_name(raw) == clean


def test_natural_key_orders_digit_runs_numerically():
    names = ["10.c", "2.b", "1.a", "b", "a", "02.b"]
    assert sorted(names, key=natural_key) == ["1.a", "02.b", "2.b", "10.c", "a", "b"]


# ---------------------------------------------------------------------------- CUB-200-2011

CUB_CLASSES = {  # class id -> folder
    1: "001.Black_footed_Albatross",
    2: "002.Laysan_Albatross",
    3: "003.Sooty_Albatross",
    4: "004.Groove_billed_Ani",
}
CUB_IMAGES = {  # image id -> (class id, file name); ids deliberately out of file order
    7: (1, "Black_Footed_Albatross_0001.jpg"),
    2: (1, "Black_Footed_Albatross_0002.jpg"),
    5: (2, "Laysan_Albatross_0001.jpg"),
    1: (2, "Laysan_Albatross_0002.jpg"),
    3: (2, "Laysan_Albatross_0003.jpg"),
    9: (3, "Sooty_Albatross_0001.jpg"),
    4: (4, "Groove_Billed_Ani_0001.jpg"),
    8: (4, "Groove_Billed_Ani_0002.jpg"),
}


def _write_cub(parent: Path, images=None, classes=None) -> Path:
    images = CUB_IMAGES if images is None else images
    classes = CUB_CLASSES if classes is None else classes
    root = parent / "CUB_200_2011"
    root.mkdir(parents=True)
    lines_img, lines_lab = [], []
    for k, (image_id, (class_id, fname)) in enumerate(images.items()):
        rel = f"{classes.get(class_id, 'unknown')}/{fname}"
        _png(root / "images" / rel, 30 * k, mode="L" if k == 0 else "RGB")
        lines_img.append(f"{image_id} {rel}")
        lines_lab.append(f"{image_id} {class_id}")
    (root / "images.txt").write_text("\n".join(lines_img) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(reversed(lines_lab)) + "\n")
    # classes.txt out of id order too: labels must follow ids, not file order
    (root / "classes.txt").write_text("\n".join(f"{i} {n}" for i, n in reversed(classes.items())))
    return root


def test_cub200_loads_official_layout(tmp_path):
    root = _write_cub(tmp_path)
    ds = load_cub200(str(root))
    assert ds.name == "cub200"
    assert len(ds) == len(CUB_IMAGES) and ds.num_classes == 4
    assert ds.class_names == [
        "black footed albatross",
        "laysan albatross",
        "sooty albatross",
        "groove billed ani",
    ]
    expected = {
        f"images/{CUB_CLASSES[c]}/{f}": clean_class_name(CUB_CLASSES[c])
        for c, f in CUB_IMAGES.values()
    }
    assert _table(ds, root) == expected
    # images ordered by image id; labels = class id - 1
    ids = sorted(CUB_IMAGES)
    assert ds.labels.tolist() == [CUB_IMAGES[i][0] - 1 for i in ids]
    _check_images_rgb(ds)  # image 7 was written in mode "L"
    # the parent folder works as well, with the same content fingerprint
    assert load_cub200(tmp_path).fingerprint == ds.fingerprint


def test_cub200_split_and_load_dataset_spec(tmp_path):
    root = _write_cub(tmp_path)
    ds = load_dataset("cub200:" + str(root))
    split = class_disjoint_split(ds)
    assert split.train.class_names == ["black footed albatross", "laysan albatross"]
    assert split.test.class_names == ["sooty albatross", "groove billed ani"]
    assert len(split.train) == 5 and len(split.test) == 3
    assert sorted(split.test.labels.tolist()) == [0, 1, 1]


def test_cub200_drops_classes_without_images_keeping_id_order(tmp_path):
    classes = {**CUB_CLASSES, 0: "000.Never_Photographed", 3: "003.Sooty_Albatross", 6: "006.X"}
    ds = load_cub200(_write_cub(tmp_path, classes=classes))
    assert ds.num_classes == 4 and "never photographed" not in ds.class_names
    assert ds.labels.tolist() == [CUB_IMAGES[i][0] - 1 for i in sorted(CUB_IMAGES)]


def test_cub200_fingerprint_keys_on_content_not_location(tmp_path):
    a = load_cub200(_write_cub(tmp_path / "a"))
    moved = tmp_path / "elsewhere" / "CUB_200_2011"
    shutil.copytree(tmp_path / "a" / "CUB_200_2011", moved)
    assert load_cub200(moved).fingerprint == a.fingerprint
    relabelled = dict(CUB_IMAGES)
    relabelled[9] = (4, "Sooty_Albatross_0001.jpg")
    b = load_cub200(_write_cub(tmp_path / "b", images=relabelled))
    assert b.fingerprint != a.fingerprint


def test_cub200_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_cub200(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="images.txt not found"):
        load_cub200(tmp_path / "empty")

    root = _write_cub(tmp_path / "noclasses")
    (root / "classes.txt").unlink()
    with pytest.raises(DataError, match="missing classes.txt"):
        load_cub200(root)

    root = _write_cub(tmp_path / "unknown", images={**CUB_IMAGES, 10: (9, "x.jpg")})
    with pytest.raises(DataError, match=r"class id\(s\) \[9\] not in classes.txt"):
        load_cub200(root)

    root = _write_cub(tmp_path / "missing")
    (root / "images" / CUB_CLASSES[3] / "Sooty_Albatross_0001.jpg").unlink()
    with pytest.raises(DataError, match="1 of 8 images listed in images.txt are missing, first: "):
        load_cub200(root)

    root = _write_cub(tmp_path / "malformed")
    with (root / "image_class_labels.txt").open("a") as f:
        f.write("11 two\n")
    with pytest.raises(DataError, match="image_class_labels.txt line 9"):
        load_cub200(root)

    root = _write_cub(tmp_path / "unlabelled")
    lines = (root / "image_class_labels.txt").read_text().splitlines()
    (root / "image_class_labels.txt").write_text("\n".join(lines[1:]))
    with pytest.raises(DataError, match="have no label in image_class_labels.txt"):
        load_cub200(root)


def test_unreadable_image_is_an_error_naming_the_file(tmp_path):
    root = _write_cub(tmp_path)
    bad = root / "images" / CUB_CLASSES[4] / "Groove_Billed_Ani_0002.jpg"
    bad.write_bytes(b"not an image")
    ds = load_cub200(root)  # existence is checked at load, decoding lazily
    i = [Path(p) for p in ds.images.items].index(bad)
    with pytest.raises(DataError, match=f"cannot read image {bad}"):
        ds.image(i)


# ---------------------------------------------------------------------------- Cars196

CARS_NAMES = [
    "AM General Hummer SUV 2000",
    " Acura RL  Sedan 2012",  # whitespace is collapsed
    "BMW M3 Coupe 2012",
    "smart fortwo Convertible 2012",
]
CARS_ANNOS = [(1, 3), (2, 1), (3, 4), (4, 2), (5, 1), (6, 3), (7, 4)]  # (image number, class id)


def _write_cars_mat(root: Path, annos=CARS_ANNOS, names=CARS_NAMES, make_images=True) -> Path:
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    # The real file: a 1×N MATLAB struct array and a 1×C cell array of strings.
    dtype = [
        ("relative_im_path", "O"),
        ("bbox_x1", "O"),
        ("bbox_y1", "O"),
        ("bbox_x2", "O"),
        ("bbox_y2", "O"),
        ("class", "O"),
        ("test", "O"),
    ]
    ann = np.zeros((1, len(annos)), dtype=dtype)
    for k, (num, cls) in enumerate(annos):
        rel = f"car_ims/{num:06d}.jpg"
        if make_images:
            _png(root / rel, 20 * k)
        box = [np.array([[v]], dtype=np.uint16) for v in (1, 1, 7, 7)]
        ann[0, k] = (rel, *box, np.array([[cls]], dtype=np.uint8), np.array([[k % 2]], np.uint8))
    cell = np.empty((1, len(names)), dtype=object)
    for k, n in enumerate(names):
        cell[0, k] = n
    savemat(root / "cars_annos.mat", {"annotations": ann, "class_names": cell})
    return root


def test_cars196_from_mat(tmp_path):
    root = _write_cars_mat(tmp_path / "cars")
    for target in (root, root / "cars_annos.mat"):
        ds = load_cars196(target)
        assert ds.name == "cars196"
        assert ds.class_names == [" ".join(n.split()) for n in CARS_NAMES]
        assert [Path(p).name for p in ds.images.items] == [f"{n:06d}.jpg" for n, _ in CARS_ANNOS]
        assert ds.labels.tolist() == [c - 1 for _, c in CARS_ANNOS]
    _check_images_rgb(ds)
    split = class_disjoint_split(ds)
    assert split.train.class_names == ["AM General Hummer SUV 2000", "Acura RL Sedan 2012"]
    assert len(split.train) == 3 and len(split.test) == 4


def test_cars196_from_class_folders(tmp_path):
    root = tmp_path / "cars_folders"
    counts = {"smart fortwo Convertible 2012": 2, "Acura RL Sedan 2012": 3}
    counts |= {"AM General Hummer SUV 2000": 1, "BMW M3 Coupe 2012": 2}
    expected = {}
    for name, n in counts.items():
        for k in range(n):
            _png(root / name / f"{k:05d}.jpg", 40 * k)
            expected[f"{name}/{k:05d}.jpg"] = name
    ds = load_cars196(root)
    # AM < Acura (uppercase first) and "smart" last: codepoint order like the official ids
    assert ds.class_names == [
        "AM General Hummer SUV 2000",
        "Acura RL Sedan 2012",
        "BMW M3 Coupe 2012",
        "smart fortwo Convertible 2012",
    ]
    assert _table(ds, root) == expected
    assert class_disjoint_split(ds).test.class_names == ds.class_names[2:]


def test_cars196_train_test_class_folders_are_merged(tmp_path):
    root = tmp_path / "car_data"
    _png(root / "train" / "Acura RL Sedan 2012" / "a.jpg", 1)
    _png(root / "train" / "BMW M3 Coupe 2012" / "b.jpg", 2)
    _png(root / "test" / "Acura RL Sedan 2012" / "c.jpg", 3)
    _png(root / "test" / "BMW M3 Coupe 2012" / "d.jpg", 4)
    ds = load_cars196(root)
    assert ds.class_names == ["Acura RL Sedan 2012", "BMW M3 Coupe 2012"]
    assert _table(ds, root) == {
        "test/Acura RL Sedan 2012/c.jpg": "Acura RL Sedan 2012",
        "train/Acura RL Sedan 2012/a.jpg": "Acura RL Sedan 2012",
        "test/BMW M3 Coupe 2012/d.jpg": "BMW M3 Coupe 2012",
        "train/BMW M3 Coupe 2012/b.jpg": "BMW M3 Coupe 2012",
    }


def test_cars196_bad_inputs(tmp_path):
    root = _write_cars_mat(tmp_path / "unknown", annos=[*CARS_ANNOS, (8, 7)])
    with pytest.raises(DataError, match=r"class id\(s\) \[7\] outside 1..4"):
        load_cars196(root)
    root = _write_cars_mat(tmp_path / "noimages", make_images=False)
    with pytest.raises(DataError, match="7 of 7 images listed in cars_annos.mat are missing"):
        load_cars196(root)
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "cars_annos.mat").write_bytes(b"definitely not matlab" * 10)
    with pytest.raises(DataError, match="cannot read .* as a MATLAB file"):
        load_cars196(tmp_path / "garbage")
    from scipy.io import savemat

    (tmp_path / "wrongmat").mkdir()
    savemat(tmp_path / "wrongmat" / "cars_annos.mat", {"something": np.zeros(3)})
    with pytest.raises(DataError, match="must hold a struct array 'annotations'"):
        load_cars196(tmp_path / "wrongmat")
    (tmp_path / "neither").mkdir()
    with pytest.raises(DataError, match="no cars_annos.mat and no class folders"):
        load_cars196(tmp_path / "neither")


# ---------------------------------------------------------------------------- SOP

SOP_HEADER = "image_id class_id super_class_id path"


def _write_sop(parent: Path, train_rows, test_rows) -> Path:
    root = parent / "Stanford_Online_Products"
    for file, rows in (("Ebay_train.txt", train_rows), ("Ebay_test.txt", test_rows)):
        lines = [SOP_HEADER]
        for image_id, class_id, super_id, rel in rows:
            _png(root / rel, 10 * image_id)
            lines.append(f"{image_id} {class_id} {super_id} {rel}")
        root.mkdir(parents=True, exist_ok=True)
        (root / file).write_text("\n".join(lines) + "\n")
    return root


SOP_TRAIN = [
    (1, 1, 1, "bicycle_final/111085122871_0.JPG"),
    (2, 1, 1, "bicycle_final/111085122871_1.JPG"),
    (3, 2, 1, "bicycle_final/111265328556_0.JPG"),
    (4, 3, 2, "chair_final/121434939587_0.JPG"),
]
SOP_TEST = [
    (5, 4, 3, "coffee_maker_final/130954712845_0.JPG"),
    (6, 5, 2, "chair_final/131108396226_0.JPG"),
    (7, 5, 2, "chair_final/131108396226_1.JPG"),
    (8, 6, 3, "coffee_maker_final/131209218424_0.JPG"),
]


def test_sop_loads_with_super_class_names(tmp_path):
    root = _write_sop(tmp_path, SOP_TRAIN, SOP_TEST)
    ds = load_sop(tmp_path)  # the parent folder works
    assert ds.name == "sop" and len(ds) == 8 and ds.num_classes == 6
    # class name = super-class name, so names repeat
    assert ds.class_names == [
        "bicycle",
        "bicycle",
        "chair",
        "coffee maker",
        "chair",
        "coffee maker",
    ]
    assert ds.labels.tolist() == [r[1] - 1 for r in SOP_TRAIN + SOP_TEST]
    assert ds.extras["super_class"] == [ds.class_names[lab] for lab in ds.labels]
    assert ds.extras["super_class_id"] == [r[2] for r in SOP_TRAIN + SOP_TEST]
    assert ds.extras["official_split"] == ["train"] * 4 + ["test"] * 4
    assert [Path(p).relative_to(root).as_posix() for p in ds.images.items] == [
        r[3] for r in SOP_TRAIN + SOP_TEST
    ]
    _check_images_rgb(ds)
    # train classes 1..3 come first, so the first-half rule IS the official split here
    half, official = class_disjoint_split(ds), official_split(ds)
    assert half.train.labels.tolist() == official.train.labels.tolist() == [0, 0, 1, 2]
    assert len(half.test) == len(official.test) == 4
    assert half.test.class_names == ["coffee maker", "chair", "coffee maker"]
    assert official.test.extras["official_split"] == ["test"] * 4


def test_sop_official_split_when_halves_are_unequal(tmp_path):
    # Real SOP has 11318 train / 11316 test classes: the first-half rule (11317) differs by one.
    ds = load_sop(_write_sop(tmp_path, SOP_TRAIN, SOP_TEST[:1]))
    assert ds.num_classes == 4
    split = official_split(ds)
    assert split.train.num_classes == 3 and split.test.class_names == ["coffee maker"]
    # the protocol split follows the official one, not the first-half rule (which would give 2)
    default = class_disjoint_split(ds)
    assert default.train.class_names == split.train.class_names
    assert default.test.class_names == split.test.class_names
    # any other fraction (e.g. carving validation classes) uses the first-classes rule
    assert class_disjoint_split(ds, 0.25).train.num_classes == 1


def test_sop_bad_inputs(tmp_path):
    root = _write_sop(tmp_path / "both", SOP_TRAIN, [(5, 3, 2, "chair_final/x_0.JPG")])
    with pytest.raises(DataError, match="class id 3 appears in both"):
        load_sop(root)
    root = _write_sop(tmp_path / "notest", SOP_TRAIN, SOP_TEST)
    (root / "Ebay_test.txt").unlink()
    with pytest.raises(DataError, match="missing Ebay_test.txt"):
        load_sop(root)
    root = _write_sop(tmp_path / "header", SOP_TRAIN, SOP_TEST)
    text = (root / "Ebay_train.txt").read_text().replace(SOP_HEADER, "id class path")
    (root / "Ebay_train.txt").write_text(text)
    with pytest.raises(DataError, match="Ebay_train.txt line 1: expected the header"):
        load_sop(root)
    root = _write_sop(tmp_path / "missing", SOP_TRAIN, SOP_TEST)
    (root / SOP_TEST[2][3]).unlink()
    with pytest.raises(DataError, match="1 of 8 images .* missing, first: .*131108396226_1.JPG"):
        load_sop(root)
    (tmp_path / "cub_like").mkdir()
    with pytest.raises(DataError, match="Ebay_train.txt not found"):
        load_sop(tmp_path / "cub_like")


# ---------------------------------------------------------------------------- imagefolder


def test_imagefolder_classes_files_and_nesting(tmp_path):
    root = tmp_path / "flowers"
    _png(root / "10.tulip" / "a.png", 1)
    _png(root / "2.rose" / "b.JPG", 2, mode="L")
    _png(root / "2.rose" / "sub" / "c.jpeg", 3)  # nested: included
    _png(root / "1.daisy" / "d.WebP", 4)
    _png(root / "1.daisy" / "e.BMP", 5)
    _png(root / "1.daisy" / ".hidden.png", 6)  # hidden: ignored
    _png(root / "1.daisy" / ".cache" / "f.png", 7)  # hidden folder: ignored
    (root / "1.daisy" / "notes.txt").write_text("not an image")
    (root / "9.empty").mkdir()  # no images: class skipped
    _png(root / "loose.png", 8)  # not in a class folder: ignored
    ds = load_imagefolder(root)
    assert ds.name == "imagefolder:flowers"
    assert ds.class_names == ["1.daisy", "2.rose", "10.tulip"]  # natural order, names as given
    assert _table(ds, root) == {
        "1.daisy/d.WebP": "1.daisy",
        "1.daisy/e.BMP": "1.daisy",
        "2.rose/b.JPG": "2.rose",
        "2.rose/sub/c.jpeg": "2.rose",
        "10.tulip/a.png": "10.tulip",
    }
    _check_images_rgb(ds)
    split = class_disjoint_split(ds)
    assert split.train.class_names == ["1.daisy"]
    assert split.test.class_names == ["2.rose", "10.tulip"] and len(split.test) == 3
    via_spec = load_dataset(f"imagefolder:{root}")
    assert via_spec.fingerprint == ds.fingerprint
    assert list(via_spec.images.items) == list(ds.images.items)


def test_relative_paths_resolve_against_the_working_directory(tmp_path, monkeypatch):
    _png(tmp_path / "cls" / "a.png", 1)
    monkeypatch.chdir(tmp_path)
    for spec in (".", "./", "cls/.."):
        ds = load_imagefolder(spec)
        assert ds.class_names == ["cls"]
        assert ds.images.items == [str((tmp_path / "cls" / "a.png").resolve())]
    monkeypatch.chdir("/")
    assert ds.image(0).mode == "RGB"  # absolute: still loads after the working directory changed


def test_imagefolder_bad_inputs(tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir()
    (tmp_path / "empty" / "b" / "readme.md").write_text("x")
    with pytest.raises(DataError, match="no images .* in the class folders"):
        load_imagefolder(tmp_path / "empty")
    _png(tmp_path / "flat" / "x.png", 1)
    _png(tmp_path / "flat" / "y.png", 2)
    with pytest.raises(DataError, match=r"no class folders \(2 images lie directly in it\)"):
        load_imagefolder(tmp_path / "flat")
    with pytest.raises(DataError, match="is not a folder"):
        load_imagefolder(tmp_path / "flat" / "x.png")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'absent'}")


# ---------------------------------------------------------------------------- HF datasets


def _hf_split(n: int, labels, names, offset: int = 0, extra_label=None):
    import datasets

    cols = {
        "img": [Image.new("L", (8, 8), 10 * (i + offset)) for i in range(n)],
        "fine_label": list(labels),
    }
    feats = {"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=names)}
    if extra_label is not None:
        cols = {"coarse_label": list(extra_label), **cols}
        feats = {"coarse_label": datasets.ClassLabel(names=["animal", "plant"]), **feats}
    return datasets.Dataset.from_dict(cols, features=datasets.Features(feats))


FINE = ["oak", "cat", "rose", "dog"]


@pytest.fixture
def hf_dir(tmp_path):
    import datasets

    dd = datasets.DatasetDict(
        {
            "train": _hf_split(4, [0, 1, 1, 0], FINE, extra_label=[1, 0, 0, 1]),
            "test": _hf_split(3, [3, 2, 3], FINE, offset=4, extra_label=[0, 1, 0]),
        }
    )
    path = tmp_path / "hf_saved"
    dd.save_to_disk(str(path))
    return path


def test_hf_saved_dataset_dict(hf_dir):
    ds = load_hf(f"{hf_dir}?image=img&label=fine_label")
    assert ds.name == "hf:hf_saved"
    assert len(ds) == 7 and ds.class_names == FINE  # ClassLabel names, id order
    assert ds.labels.tolist() == [0, 1, 1, 0, 3, 2, 3]
    assert ds.extras["split"] == ["train"] * 4 + ["test"] * 3
    _check_images_rgb(ds)
    assert np.asarray(ds.image(5))[0, 0].tolist() == [50, 50, 50]  # row 5 = test row 1
    split = class_disjoint_split(ds)
    assert split.train.class_names == ["oak", "cat"] and len(split.train) == 4
    # the image loader survives pickling (DataLoader workers)
    load = pickle.loads(pickle.dumps(ds.images.load))
    assert np.asarray(load(6)).tolist() == np.asarray(ds.image(6)).tolist()


def test_hf_default_columns_and_split_option(hf_dir):
    # defaults: the first Image column and the first ClassLabel column (coarse_label here)
    coarse = load_hf(str(hf_dir))
    assert coarse.class_names == ["animal", "plant"]
    assert coarse.labels.tolist() == [1, 0, 0, 1, 0, 1, 0]
    train = load_dataset(f"hf:{hf_dir}?split=train&label=fine_label")
    assert train.class_names == ["oak", "cat"]  # classes without images in the split are dropped
    assert train.labels.tolist() == [0, 1, 1, 0]
    both = load_hf(f"{hf_dir}?split=test+train&label=fine_label")
    assert both.extras["split"] == ["test"] * 3 + ["train"] * 4
    assert both.class_names == FINE and both.labels.tolist() == [3, 2, 3, 0, 1, 1, 0]
    fingerprints = {coarse.fingerprint, train.fingerprint, both.fingerprint}
    assert len(fingerprints) == 3
    assert load_hf(str(hf_dir)).fingerprint == coarse.fingerprint


def test_hf_plain_value_labels(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict(
        {
            "image": [Image.new("RGB", (8, 8)) for _ in range(5)],
            "species": ["wren", "crow", "wren", "auk", "crow"],
            "num": [10, 2, 10, 2, 33],
        },
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "species": datasets.Value("string"),
                "num": datasets.Value("int64"),
            }
        ),
    )
    ds.save_to_disk(str(tmp_path / "plain"))
    by_name = load_hf(f"{tmp_path / 'plain'}?label=species")
    assert by_name.class_names == ["auk", "crow", "wren"]
    assert by_name.labels.tolist() == [2, 1, 2, 0, 1]
    by_num = load_hf(f"{tmp_path / 'plain'}?label=num")
    assert by_num.class_names == ["2", "10", "33"]  # numeric order, str(value)
    assert by_num.labels.tolist() == [1, 0, 1, 0, 2]


def test_hf_bad_inputs(hf_dir, tmp_path):
    import datasets

    with pytest.raises(DataError, match="unknown option 'colour'"):
        load_hf(f"{hf_dir}?colour=red")
    with pytest.raises(DataError, match="image column 'picture' not in"):
        load_hf(f"{hf_dir}?image=picture")
    with pytest.raises(DataError, match="label column 'nope' not in"):
        load_hf(f"{hf_dir}?label=nope")
    with pytest.raises(DataError, match="split 'validation' not in .* available: train, test"):
        load_hf(f"{hf_dir}?split=validation")
    with pytest.raises(DataError, match="holds .* not images or image paths"):
        load_hf(f"{hf_dir}?image=fine_label")
    with pytest.raises(DataError, match="does not exist"):
        load_hf(str(tmp_path / "missing_dir"))
    # a hub name cannot be fetched offline: one line saying how to provide it
    with pytest.raises(DataError, match=r"from the hub .*save_to_disk\(DIR\).*hf:DIR"):
        load_dataset("hf:someone/some-dataset-that-is-not-cached")

    unlabelled = datasets.DatasetDict({"test": _hf_split(2, [-1, 1], FINE)})
    unlabelled.save_to_disk(str(tmp_path / "unlabelled"))
    with pytest.raises(DataError, match=r"1 row\(s\) .* have no class"):
        load_hf(str(tmp_path / "unlabelled"))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "state.json").write_text("{")
    with pytest.raises(DataError, match="cannot read .* as a HF dataset"):
        load_hf(str(tmp_path / "junk"))
