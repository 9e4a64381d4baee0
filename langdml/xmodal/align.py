"""Put images and class-name text in one space by training on the TRAIN classes only.

Two trainers, both on precomputed inputs (frozen features or a trained model's embeddings, and
class-name text embeddings), both returning a :class:`CrossModalModel`:

- :func:`train_alignment` — learned alignment: a text projection head g (and optionally an image
  head f) trained with a symmetric InfoNCE objective between images and class names;
- :func:`train_text_proxies` — language as proxies: an image head f trained with a
  :class:`~langdml.xmodal.TextProxyAnchorLoss` / :class:`~langdml.xmodal.TextProxyNCALoss`, whose
  proxies g(e_c) are the text projection.

Neither ever sees a test class; at test time the text side embeds the unseen class names.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from langdml.errors import LangDMLError
from langdml.losses.text_proxies import TEXT_PROXY_LOSSES, TextProjection, class_rows
from langdml.models import EmbeddingHead
from langdml.xmodal.config import method_default

IMAGE_HEADS = ("none", "linear", "mlp")
# Trainer options and their defaults: the xmodal config's (one definition for CLI, methods and
# trainers), plus the trainers' own (train_alignment fits a text head alone unless asked).
_COMMON = ("epochs", "batch_size", "lr", "weight_decay", "seed", "device")
ALIGN_OPTIONS = ("image_head", "embedding_dim", "text_head", "temperature", *_COMMON)
PROXY_OPTIONS = ("loss", "loss_kwargs", "image_head", "embedding_dim", "projection")
PROXY_OPTIONS += ("proxy_lr_multiplier", *_COMMON)
_OWN_DEFAULTS = {"aligned": {"image_head": "none", "embedding_dim": None}}
_CONFIG_NAME = {"text_head": "projection"}


def _options(who: str, method: str, names: tuple[str, ...], given: dict[str, Any]):
    """``given`` keyword options over the defaults, as attributes; an unknown one is a
    TypeError as for any Python function."""
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise TypeError(f"{who}() got unexpected keyword arguments {unknown}")
    own = _OWN_DEFAULTS.get(method, {})
    values = {
        n: own[n] if n in own else method_default(method, _CONFIG_NAME.get(n, n)) for n in names
    }
    return types.SimpleNamespace(**{**values, **given})


def options_from(config: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """A trainer's keyword options taken from an XmodalConfig (its method's defaults filled)."""
    return {n: config.get(_CONFIG_NAME.get(n, n)) for n in names}


def _fit(opt, step, n: int, o) -> None:
    """``o.epochs`` full passes over n rows in shuffled batches (seeded), ``step(idx)`` → loss."""
    gen = torch.Generator().manual_seed(o.seed)
    with _cpu_threads(o.device):
        for _ in range(o.epochs):
            for idx in _batches(n, o.batch_size, gen):
                loss = step(idx.to(o.device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()


class CrossModalModel(nn.Module):
    """Image head f and text head g into one d-dimensional space (unit rows on both sides).

    ``image_head=None`` means the image inputs already live in the joint space (e.g. a trained
    run's embeddings) and are only L2-normalised.
    """

    def __init__(self, text_head: nn.Module, image_head: nn.Module | None = None) -> None:
        super().__init__()
        self.text_head = text_head
        self.image_head = image_head

    def _device(self) -> torch.device:
        return next(self.text_head.parameters()).device

    @torch.no_grad()
    def embed_images(self, x: Tensor, batch_size: int = 4096) -> Tensor:
        """(n, D) image inputs → (n, d) unit rows (float32, CPU)."""
        self.eval()
        out = []
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(self._device()).float()
            z = self.image_head(xb) if self.image_head is not None else xb
            out.append(F.normalize(z, dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.out_dim(x))

    def out_dim(self, x: Tensor) -> int:
        probe = x[:1].to(self._device()).float()
        return int((self.image_head(probe) if self.image_head is not None else probe).shape[-1])

    @torch.no_grad()
    def embed_texts(self, text: Tensor) -> Tensor:
        """(n, d_text) name embeddings → (n, d) unit rows (float32, CPU)."""
        self.eval()
        t = class_rows(text, "CrossModalModel.embed_texts", dim=_text_dim(self.text_head))
        return F.normalize(self.text_head(t.to(self._device())), dim=-1).cpu()


def _text_dim(head: nn.Module) -> int | None:
    dim = getattr(head, "text_dim", None)
    return int(dim) if dim is not None else None


class _ProjectionOf(nn.Module):
    """The ``project`` method of a text-proxy loss as a text head."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss
        self.text_dim = loss.text_dim

    def forward(self, text: Tensor) -> Tensor:
        return self.loss.project(text)


def _check_inputs(
    images: Tensor, labels: Any, class_text: Tensor, who: str
) -> tuple[Tensor, Tensor, Tensor]:
    x = torch.as_tensor(images)
    if not x.is_floating_point() or x.ndim != 2 or x.shape[0] < 1:
        raise LangDMLError(
            f"{who}: image inputs must be a non-empty float (N, D) tensor, got {x.dtype} of shape "
            f"{tuple(x.shape)}"
        )
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if y.ndim != 1 or len(y) != len(x):
        raise LangDMLError(f"{who}: {tuple(y.shape)} labels for {len(x)} images; expected (N,)")
    text = class_rows(class_text, who)
    if int(y.min()) < 0 or int(y.max()) >= len(text):
        raise LangDMLError(
            f"{who}: labels span [{int(y.min())}, {int(y.max())}] but there are {len(text)} "
            "class-name embeddings; expected one text row per class"
        )
    return x.float(), y, text


def _image_head(kind: str, in_dim: int, out_dim: int | None) -> nn.Module | None:
    if kind == "none":
        return None
    if kind not in IMAGE_HEADS:
        raise LangDMLError(f"unknown image head {kind!r}; expected one of {', '.join(IMAGE_HEADS)}")
    return EmbeddingHead(in_dim, out_dim or in_dim, kind=kind, normalize=False)


@contextlib.contextmanager
def _cpu_threads(device: str, threads: int = 1) -> Iterator[None]:
    """Run the small-matrix training loops single-threaded on the CPU: their ops are too small
    to gain from intra-op threads, and on a busy 2-core machine the thread hand-off made a
    training step 11x slower (measured: 9.4 s vs 0.85 s for 5 epochs of a linear alignment)."""
    if not str(device).startswith("cpu"):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[Tensor]:
    order = torch.randperm(n, generator=gen)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def info_nce(z_img: Tensor, labels: Tensor, z_text: Tensor, temperature: float) -> Tensor:
    """Symmetric image↔class-name InfoNCE over unit rows, s = cosine / τ:

    L_i2t = mean_i −log softmax_c(s(z_i, t_c))[y_i]          (all classes' names are candidates)
    L_t2i = mean_{c in batch} −(1/|P_c|) Σ_{i∈P_c} log softmax_j(s(t_c, z_j))[i]   (batch images)
    L = (L_i2t + L_t2i) / 2, P_c the batch images of class c.
    """
    logits = z_img @ z_text.T / temperature  # (B, C)
    i2t = F.cross_entropy(logits, labels)
    present = torch.unique(labels)
    t_logits = logits[:, present].T  # (C_b, B)
    log_p = t_logits - torch.logsumexp(t_logits, dim=1, keepdim=True)
    pos = (present[:, None] == labels[None, :]).float()
    t2i = -((log_p * pos).sum(1) / pos.sum(1)).mean()
    return 0.5 * (i2t + t2i)


def train_alignment(
    image_inputs: Tensor, labels: Any, class_text: Tensor, **options: Any
) -> CrossModalModel:
    """Learned alignment on the TRAIN classes: minimise :func:`info_nce` over minibatches.

    ``image_inputs`` (N, D) are a trained model's embeddings (``image_head="none"``: kept fixed,
    only the text head g: d_text → D learns) or frozen trunk features (``image_head="linear"`` or
    ``"mlp"``: an image head f: D → ``embedding_dim`` learns jointly with g). ``class_text`` is
    (C, d_text), row c the name of class c. Adam(W), full passes over the images in shuffled
    batches, deterministic for a given ``seed``. Options (defaults: XmodalConfig for method
    aligned): image_head, embedding_dim, text_head, temperature, epochs, batch_size, lr,
    weight_decay, seed, device.
    """
    who = "train_alignment"
    o = _options(who, "aligned", ALIGN_OPTIONS, options)
    x, y, text = _check_inputs(image_inputs, labels, class_text, who)
    if o.temperature <= 0:
        raise LangDMLError(f"{who}: temperature must be > 0, got {o.temperature}")
    torch.manual_seed(o.seed)
    img = _image_head(o.image_head, x.shape[1], o.embedding_dim)
    if img is None and o.embedding_dim not in (None, x.shape[1]):
        raise LangDMLError(
            f"{who}: embedding_dim={o.embedding_dim} needs an image head; with image_head='none' "
            f"the joint space is the image inputs' ({x.shape[1]}-d)"
        )
    out_dim = x.shape[1] if img is None else (o.embedding_dim or x.shape[1])
    model = CrossModalModel(TextProjection(text.shape[1], out_dim, o.text_head), img).to(o.device)
    opt = torch.optim.AdamW(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    x, y, text = x.to(o.device), y.to(o.device), text.to(o.device)
    model.train()

    def step(idx: Tensor) -> Tensor:
        xb = x[idx]
        z = F.normalize(model.image_head(xb) if img is not None else xb, dim=-1)
        t = F.normalize(model.text_head(text), dim=-1)
        return info_nce(z, y[idx], t, o.temperature)

    _fit(opt, step, len(x), o)
    return model.eval()


def train_text_proxies(
    image_inputs: Tensor, labels: Any, class_text: Tensor, **options: Any
) -> CrossModalModel:
    """Language as proxies on the TRAIN classes: image head f and text projection g trained with
    a text-proxy loss ``L(f(x), y)`` whose proxies are g(e_c). ``image_head="none"`` keeps the
    image inputs fixed (then ``embedding_dim`` is their dimension) and fits g alone. The text
    side of the returned model is ``loss.project``. Options (defaults: XmodalConfig for method
    text_proxies): loss, loss_kwargs, image_head, embedding_dim, projection,
    proxy_lr_multiplier, epochs, batch_size, lr, weight_decay, seed, device.
    """
    who = "train_text_proxies"
    o = _options(who, "text_proxies", PROXY_OPTIONS, options)
    x, y, text = _check_inputs(image_inputs, labels, class_text, who)
    if o.loss not in TEXT_PROXY_LOSSES:
        raise LangDMLError(
            f"{who}: unknown loss {o.loss!r}; expected one of {', '.join(TEXT_PROXY_LOSSES)}"
        )
    torch.manual_seed(o.seed)
    img = _image_head(o.image_head, x.shape[1], o.embedding_dim)
    dim = o.embedding_dim if img is not None else x.shape[1]
    criterion = TEXT_PROXY_LOSSES[o.loss](
        text, dim, num_classes=len(text), projection=o.projection, **dict(o.loss_kwargs or {})
    ).to(o.device)
    groups = [{"params": criterion.proxy_parameters(), "lr": o.lr * o.proxy_lr_multiplier}]
    if img is not None:
        img.to(o.device)
        groups.append({"params": list(img.parameters()), "lr": o.lr})
    opt = torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)
    x, y = x.to(o.device), y.to(o.device)
    if img is not None:
        img.train()

    def step(idx: Tensor) -> Tensor:
        xb = x[idx]
        return criterion(img(xb) if img is not None else xb, y[idx])

    _fit(opt, step, len(x), o)
    return CrossModalModel(_ProjectionOf(criterion), img).eval()
