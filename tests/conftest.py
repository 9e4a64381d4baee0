import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def emoji_cache(tmp_path_factory):
    """A cache dir holding the built emoji benchmark (built once per test session)."""
    from langdml.data.emoji import build_emoji

    root = tmp_path_factory.mktemp("cache")
    build_emoji(cache_dir=root)
    return root


@pytest.fixture(scope="session")
def emoji_subset_folder(emoji_cache, tmp_path_factory):
    """An imagefolder tree of 24 emoji classes (all their styles), for fast end-to-end tests."""
    from langdml.data import load_dataset

    ds = load_dataset("emoji", cache_dir=emoji_cache)
    root = tmp_path_factory.mktemp("emoji24")
    for i in range(len(ds)):
        label = int(ds.labels[i])
        if label >= 24:
            continue
        folder = root / f"{label:03d}.{ds.class_names[label].replace(' ', '_')}"
        folder.mkdir(exist_ok=True)
        ds.image(i).resize((48, 48)).save(folder / f"{ds.extras['style'][i]}.png")
    return root
