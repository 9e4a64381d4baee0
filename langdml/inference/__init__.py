"""Using a trained run: embed images and class names, index and search a gallery, export the image
tower, and an HTML report of what the run learned."""

from langdml.inference.index import GalleryIndex, GalleryTable, load_embeddings, save_embeddings
from langdml.inference.run import ImageTower, LoadedRun, load_run

__all__ = [
    "GalleryIndex",
    "GalleryTable",
    "ImageTower",
    "LoadedRun",
    "load_embeddings",
    "load_run",
    "save_embeddings",
]
