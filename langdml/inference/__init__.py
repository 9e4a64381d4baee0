"""Using a trained run: embed images and class names, index and search a gallery, export the image
tower, and an HTML report of what the run learned (exports load lazily: the CLI starts without
torch)."""

from langdml._lazy import lazy_getattr

_EXPORTS = {
    "GalleryIndex": "langdml.inference.index",
    "GalleryTable": "langdml.inference.index",
    "load_embeddings": "langdml.inference.index",
    "save_embeddings": "langdml.inference.index",
    "ImageTower": "langdml.inference.run",
    "LoadedRun": "langdml.inference.run",
    "load_run": "langdml.inference.run",
    "export_run": "langdml.inference.export",
    "write_report": "langdml.inference.report",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
