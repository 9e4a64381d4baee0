"""PML's distance classes as settings: a loss or miner accepts one only when it is the
distance langdml computes for that class (its PML default, or the few variants listed in the
class's docstring); anything else raises one line naming it. PML's own distance objects are
read the same way (by class name and their ``normalize_embeddings`` / ``p`` / ``power``)."""

from __future__ import annotations

from typing import Any

from langdml.errors import LangDMLError


class _Distance:
    kind = ""

    def __init__(self, normalize_embeddings: bool = True, p: float = 2, power: float = 1) -> None:
        self.normalize_embeddings = bool(normalize_embeddings)
        self.p = p
        self.power = power

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(normalize_embeddings={self.normalize_embeddings}, "
            f"p={self.p}, power={self.power})"
        )


class LpDistance(_Distance):
    """||a - b||_p ** power, of L2-normalised embeddings when ``normalize_embeddings``."""

    kind = "lp"


class DotProductSimilarity(_Distance):
    """a · b (of L2-normalised embeddings when ``normalize_embeddings``: the cosine)."""

    kind = "dot"


class CosineSimilarity(DotProductSimilarity):
    """The cosine: DotProductSimilarity of L2-normalised embeddings."""

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get("normalize_embeddings", True) is False:
            raise LangDMLError("CosineSimilarity always normalises; got normalize_embeddings=False")
        super().__init__(**{**kwargs, "normalize_embeddings": True})


_KINDS = {"LpDistance": "lp", "DotProductSimilarity": "dot", "CosineSimilarity": "dot"}


def distance_key(distance: Any) -> tuple:
    """(kind, normalize_embeddings, p, power) of one of ours or of a PML distance object."""
    kind = getattr(distance, "kind", None) or _KINDS.get(type(distance).__name__)
    if kind is None:
        raise LangDMLError(
            f"distance {type(distance).__name__} is not supported; expected LpDistance, "
            "CosineSimilarity or DotProductSimilarity"
        )
    p = float(getattr(distance, "p", 2))
    return (
        kind,
        bool(getattr(distance, "normalize_embeddings", True)),
        p if kind == "lp" else 2.0,
        float(getattr(distance, "power", 1)),
    )


def describe(key: tuple) -> str:
    kind, normalize, p, power = key
    name = "LpDistance" if kind == "lp" else "DotProductSimilarity"
    extra = f", p={p:g}" if kind == "lp" else ""
    return f"{name}(normalize_embeddings={normalize}{extra}, power={power:g})"
