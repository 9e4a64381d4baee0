"""The report's pictures as base64 PNG strings: learning curves, the t-SNE map, the similarity
heatmaps, image thumbnails (matplotlib with the Agg backend; nothing touches a display)."""

from __future__ import annotations

import base64
import functools
import io
from collections.abc import Callable
from typing import Any

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def literal_text(fn: Callable) -> Callable:
    """Draw ``fn``'s figure with every string as plain text: a class name such as
    ``$\\undefined$`` is shown as written, never parsed as mathtext (which can fail)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
            return fn(*args, **kwargs)

    return wrapper


def figure_png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _pyplot().close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def image_png(image, size: int = 96) -> str:
    """A PIL image → base64 PNG thumbnail fitting ``size``×``size``."""
    from langdml.data.images import to_rgb

    im = to_rgb(image)
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@literal_text
def learning_curves(log: list[dict[str, Any]]) -> str | None:
    """Training loss per epoch and the evaluation metrics at the epochs that evaluated."""
    if not log:
        return None
    plt = _pyplot()
    fig, (ax_loss, ax_eval) = plt.subplots(1, 2, figsize=(10, 3.4))
    epochs = [r["epoch"] for r in log]
    for key in sorted({k for r in log for k in r if k.startswith("loss")}):
        ax_loss.plot(epochs, [r.get(key, np.nan) for r in log], marker="o", ms=3, label=key)
    ax_loss.set(xlabel="epoch", title="training loss")
    ax_loss.legend(fontsize=7)
    evals = [r for r in log if "recall@1" in r]
    for key in ("recall@1", "recall@4", "map@r", "nmi"):
        if evals and key in evals[0]:
            values = [r[key] for r in evals]
            ax_eval.plot([r["epoch"] for r in evals], values, marker="o", label=key)
    ax_eval.set(xlabel="epoch", title="held-out classes", ylim=(0, 1))
    ax_eval.legend(fontsize=7)
    return figure_png(fig)


@literal_text
def tsne_map(embeddings: np.ndarray, labels: np.ndarray, seed: int = 0, limit: int = 2000) -> str:
    """2-D t-SNE of (at most ``limit``, seeded) embeddings, colored by class."""
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    rows = np.arange(len(embeddings))
    if len(rows) > limit:
        rows = np.sort(rng.choice(rows, limit, replace=False))
    x = embeddings[rows]
    perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
    xy = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 6.5))
    classes = labels[rows]
    colors = plt.get_cmap("tab20")((classes % 20) / 19.0)
    ax.scatter(xy[:, 0], xy[:, 1], c=colors, s=9, linewidths=0)
    ax.set(xticks=[], yticks=[], title=f"t-SNE of {len(x)} test embeddings, colored by class")
    return figure_png(fig)


@literal_text
def heatmaps(image_sim: np.ndarray, name_sim: np.ndarray, names: list[str]) -> str:
    """Train classes' image-similarity and name-similarity matrices side by side."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 6))
    for ax, sim, title in zip(
        axes,
        (image_sim, name_sim),
        ("image similarity (class centroids)", "name similarity"),
        strict=True,
    ):
        im = ax.imshow(sim, cmap="viridis", vmin=-1, vmax=1)
        ax.set_title(title)
        ticks = np.arange(len(names))
        ax.set_xticks(ticks, names, rotation=90, fontsize=6)
        ax.set_yticks(ticks, names, fontsize=6)
    fig.colorbar(im, ax=axes, shrink=0.6)
    return figure_png(fig)
