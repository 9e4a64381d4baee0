"""The one image opener and file rule (``langdml.data.images``): every PIL mode decoded exactly, the
folder walk shared by datasets and ``--images DIR``, class-name normalisation and clashes."""

from __future__ import annotations

import os
import unicodedata
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from langdml.data import load_dataset
from langdml.data.images import BACKGROUND, IMAGE_EXTENSIONS, open_rgb, to_rgb
from langdml.errors import DataError


def _gradient(h: int = 48, w: int = 64) -> np.ndarray:
    """An 8-bit grayscale picture with structure (ramps and a bright square)."""
    y, x = np.mgrid[0:h, 0:w]
    img = (x * 255 // (w - 1)).astype(np.uint8)
    img[10:30, 20:40] = 255 - img[10:30, 20:40]
    img[y > 40] = 17
    return img


def test_16_bit_png_decodes_like_its_8_bit_twin(tmp_path):
    g8 = _gradient()
    Image.fromarray(g8, mode="L").save(tmp_path / "g8.png")
    Image.fromarray(g8.astype(np.uint16) * 257).save(tmp_path / "g16.png")  # full 16-bit range
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    a = np.asarray(open_rgb(tmp_path / "g8.png"), dtype=np.int64)
    b = np.asarray(open_rgb(tmp_path / "g16.png"), dtype=np.int64)
    assert a.shape == b.shape == (*g8.shape, 3)
    assert np.abs(a - b).max() == 0
    # PIL's own convert("RGB") clips 16-bit values to white: the failure this opener prevents.
    clipped = np.asarray(Image.open(tmp_path / "g16.png").convert("RGB"))
    assert (clipped == 255).mean() > 0.9 and (b == 255).mean() < 0.5


def test_16_bit_png_embeds_like_its_8_bit_twin(tmp_path):
    from langdml.models import create_backbone, image_transform

    rng = np.random.default_rng(0)
    g8 = np.clip(_gradient(96, 96).astype(int) + rng.integers(-20, 20, (96, 96)), 0, 255)
    g8 = g8.astype(np.uint8)
    Image.fromarray(g8, mode="L").save(tmp_path / "g8.png")
    Image.fromarray(g8.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    model, info = create_backbone(weights="packaged")
    tf = image_transform(64, mean=info.mean, std=info.std)
    with torch.no_grad():
        e8, e16 = (model(tf(open_rgb(tmp_path / n))[None]) for n in ("g8.png", "g16.png"))
        clipped = model(tf(Image.open(tmp_path / "g16.png").convert("RGB"))[None])
    cos = torch.nn.functional.cosine_similarity
    assert float(cos(e8, e16)) >= 0.99
    assert float(cos(e8, clipped)) < float(cos(e8, e16))  # the test can tell clipping apart


def test_32_bit_modes_are_scaled_not_clipped():
    g8 = _gradient()
    as_i = Image.fromarray(g8.astype(np.int32) * 257, mode="I")  # a 16-bit file opened as I
    as_f = Image.fromarray(g8.astype(np.float32) / 255.0, mode="F")  # floats in [0, 1]
    for img in (as_i, as_f):
        out = np.asarray(to_rgb(img))
        assert out.dtype == np.uint8 and np.abs(out[..., 0].astype(int) - g8).max() <= 1
    wide = Image.fromarray(g8.astype(np.float32) * 1000.0 - 5.0, mode="F")  # outside [0, 1]
    out = np.asarray(to_rgb(wide))[..., 0]
    assert out.min() == 0 and out.max() == 255  # stretched over its own range
    big = Image.fromarray(g8.astype(np.int32) * 1_000_000, mode="I")  # beyond 16 bits
    assert np.asarray(to_rgb(big))[..., 0].max() == 255


def test_transparency_goes_onto_the_documented_background(tmp_path):
    rgba = Image.new("RGBA", (8, 8), (200, 10, 10, 0))
    rgba.putpixel((0, 0), (200, 10, 10, 255))
    out = np.asarray(to_rgb(rgba))
    assert tuple(out[0, 0]) == (200, 10, 10) and tuple(out[4, 4]) == BACKGROUND
    la = Image.new("LA", (4, 4), (0, 128))  # half-transparent black
    assert abs(int(np.asarray(to_rgb(la))[0, 0, 0]) - 127) <= 1
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.info["transparency"] = 1  # palette entry 1 (green) is the transparent one
    pal.save(tmp_path / "p.png", transparency=1)
    out = np.asarray(open_rgb(tmp_path / "p.png"))
    assert tuple(out[0, 0]) == (0, 0, 0) and tuple(out[2, 2]) == BACKGROUND
    Image.new("RGBA", (4, 4), (0, 0, 255, 0)).save(tmp_path / "clear.webp", lossless=True)
    assert tuple(np.asarray(open_rgb(tmp_path / "clear.webp"))[1, 1]) == BACKGROUND


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        # premultiplied: gray 50 at alpha 128 is gray 100 half covering white: 100/2 + 255/2
        ("La", (50, 128), (177, 177, 177)),
        ("RGBa", (10, 20, 30, 128), (137, 147, 157)),
        ("PA", (0, 0), BACKGROUND),  # palette entry 0 (black), fully transparent
        ("RGBX", (10, 20, 30, 0), (10, 20, 30)),  # X is padding, not alpha
    ],
)
def test_premultiplied_and_padded_modes(mode, value, expected):
    out = np.asarray(to_rgb(Image.new(mode, (4, 4), value)))
    assert np.abs(out[1, 1].astype(int) - np.asarray(expected)).max() <= 1, out[1, 1]


def test_cmyk_and_other_modes(tmp_path):
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    cmyk.save(tmp_path / "c.jpg", quality=100)
    r, g, b = np.asarray(open_rgb(tmp_path / "c.jpg"))[2, 2].astype(int)
    assert r > 230 and g < 25 and b < 25
    one_bit = Image.new("1", (4, 4), 1)
    assert tuple(np.asarray(to_rgb(one_bit))[0, 0]) == (255, 255, 255)
    ycc = Image.new("RGB", (4, 4), (10, 120, 240)).convert("YCbCr")
    assert np.abs(np.asarray(to_rgb(ycc)).astype(int) - [10, 120, 240]).max() <= 3
    lab = Image.new("RGB", (4, 4), (128, 128, 128)).convert("LAB")
    grey = np.asarray(to_rgb(lab)).astype(int)[0, 0]
    assert np.ptp(grey) <= 3 and 100 < grey[0] < 160


def test_animation_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=50)
    frames[0].save(tmp_path / "a.png", save_all=True, append_images=frames[1:])
    for name in ("a.gif", "a.png"):
        with Image.open(tmp_path / name) as im:
            assert im.n_frames == 2
        r, g, b = np.asarray(open_rgb(tmp_path / name))[4, 4].astype(int)
        assert r > 200 and b < 50, name


def test_decompression_bomb_warning_is_one_langdml_line(tmp_path, monkeypatch, capsys):
    from langdml.cli import _formatwarning

    path = tmp_path / "large.png"
    Image.new("RGB", (20, 20)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # 400 pixels: warn (error above 600)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        open_rgb(path)
    assert len(caught) == 1
    w = caught[0]
    line = _formatwarning(w.message, w.category, w.filename, w.lineno)
    assert line.startswith("langdml: warning: image ") and "large.png" in line
    assert line.count("\n") == 1 and "site-packages" not in line and "400 pixels" in line


@pytest.mark.parametrize("kind", ["missing", "dir", "garbage", "truncated"])
def test_unreadable_files_are_one_line_naming_the_file(tmp_path, kind):
    path = tmp_path / "x.png"
    if kind == "dir":
        path.mkdir()
    elif kind == "garbage":
        path.write_bytes(os.urandom(200))
    elif kind == "truncated":
        Image.fromarray(_gradient()).save(path)
        path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError) as info:
        open_rgb(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def _litter(cls_dir):
    """Files and folders the image rule skips, next to real images."""
    Image.new("RGB", (8, 8), (1, 2, 3)).save(cls_dir / ".hidden.png")
    (cls_dir / "._a.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")  # macOS resource fork
    for litter in (".Trash-1000", "__MACOSX", ".git"):
        (cls_dir / litter).mkdir()
        Image.new("RGB", (8, 8)).save(cls_dir / litter / "b.png")
    (cls_dir / "notes.txt").write_text("not an image")


def _tree(tmp_path):
    root = tmp_path / "data"
    for c, ext in (("cat", ".tif"), ("dog", ".PNG"), ("eel", ".jpeg")):
        (root / c).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (40 * i, 90, 7)).save(root / c / f"{i}{ext}")
        _litter(root / c)
    (root / ".Trash-0").mkdir()
    Image.new("RGB", (8, 8)).save(root / ".Trash-0" / "z.png")
    return root


def test_datasets_and_images_dir_walk_the_same_files(tmp_path):
    from langdml.inference.commands import folder_images

    root = _tree(tmp_path)
    ds = load_dataset(f"imagefolder:{root}")
    paths, labels, names = folder_images(root)
    assert ds.class_names == names == ["cat", "dog", "eel"]
    assert sorted(map(str, ds.images.items)) == sorted(paths)
    assert len(paths) == 6 and labels.tolist() == ds.labels.tolist()
    assert {".tif", ".tiff"} <= set(IMAGE_EXTENSIONS)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_named_like_an_image_is_never_read(tmp_path):
    from langdml.inference.commands import folder_images

    root = _tree(tmp_path)
    os.mkfifo(root / "cat" / "x.png")  # opening it for reading would block forever
    ds = load_dataset(f"imagefolder:{root}")
    assert not any(str(p).endswith("x.png") for p in ds.images.items)
    assert not any(p.endswith("x.png") for p in folder_images(root)[0])
    with pytest.raises(DataError, match="not a regular file"):
        open_rgb(root / "cat" / "x.png")


def test_search_image_on_a_directory_says_it_is_not_a_file(tmp_path):
    with pytest.raises(DataError, match="is not a regular file"):
        open_rgb(tmp_path)


def test_unicode_and_whitespace_variants_are_one_class_with_one_warning(tmp_path):
    root = tmp_path / "data"
    nfc, nfd = unicodedata.normalize("NFC", "Café"), unicodedata.normalize("NFD", "Café")
    assert nfc != nfd
    for folder in (nfc, nfd, "big  dog", "big dog ", "Eel", "eel"):
        (root / folder).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / folder / "0.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset(f"imagefolder:{root}")
    assert sorted(ds.class_names) == sorted([nfc, "big dog", "Eel", "eel"])
    assert int(ds.class_counts()[ds.class_names.index(nfc)]) == 2
    assert int(ds.class_counts()[ds.class_names.index("big dog")]) == 2
    assert len(caught) == 1
    line = str(caught[0].message)
    assert "\n" not in line and repr(nfc) in line and repr(nfd) in line
    assert "'big  dog'" in line and "'big dog '" in line and "'Eel'" in line and "'eel'" in line


def test_file_embeddings_match_nfd_names(tmp_path):
    import json

    from safetensors.torch import save_file

    from langdml.text import precompute_text_embeddings

    emb = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    names = [unicodedata.normalize("NFD", "crème brûlée"), "dog"]
    meta = {"names": json.dumps(names)}
    save_file({"embeddings": emb}, str(tmp_path / "e.safetensors"), metadata=meta)
    out = precompute_text_embeddings(
        ["dog", unicodedata.normalize("NFC", "Crème  Brûlée")],
        model=f"file:{tmp_path / 'e.safetensors'}",
        cache_dir=tmp_path / "c",
    )
    torch.testing.assert_close(out.embeddings, torch.nn.functional.normalize(emb[[1, 0]], dim=1))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_link_to_a_fifo_is_neither_walked_nor_read(tmp_path):
    from langdml.data.images import walk_images

    (tmp_path / "c").mkdir()
    os.mkfifo(tmp_path / "pipe")
    os.symlink(tmp_path / "pipe", tmp_path / "c" / "y.jpg")
    Image.new("RGB", (4, 4)).save(tmp_path / "c" / "ok.jpg")
    assert [os.path.basename(p) for p in walk_images(tmp_path / "c")] == ["ok.jpg"]
    with pytest.raises(DataError, match="not a regular file"):
        open_rgb(tmp_path / "c" / "y.jpg")


def test_search_image_that_is_a_directory_is_one_line(tmp_path):
    from langdml.inference.run import open_image

    with pytest.raises(DataError, match="is not a regular file"):
        open_image(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        open_image(tmp_path / "absent.png")


def test_index_file_class_names_are_nfc_too():
    from langdml.data.names import clean_class_name

    nfd = unicodedata.normalize("NFD", "001.Café_crème")
    assert nfd != unicodedata.normalize("NFC", nfd)
    assert clean_class_name(nfd) == unicodedata.normalize("NFC", "café crème")
