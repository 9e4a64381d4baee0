"""Language guidance (Roth et al., CVPR 2022, "Integrating Language Guidance into Vision-based
Deep Metric Learning"): pull the batch's image-similarity distribution toward the similarity
distribution of the class names' text embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from langdml.errors import LangDMLError

from ._common import (
    as_fp32,
    check_batch,
    check_labels_below,
    cosine_matrix,
    fp32_region,
    log_softmax,
)
from .registry import MODES as _MODES
from .registry import canonical_mode

_DIRECTIONS = ("backward", "forward")


class LanguageGuidanceLoss(nn.Module):
    """(T²/B) Σ_i KL(P_img,i ‖ P_lang,i), P_·,i = softmax_j(S_·[i, j] / T)  ("backward").

    S_img = Z Zᵀ (Z L2-normalised); S_lang[i, j] = (1/k) Σ_t cos(e^(t)_{y_i}, e^(t)_{y_j}) + shift;
    entries with y_i = y_j (diagonal included) are set to 1 + shift in both. The language side
    carries no gradient; "forward" uses KL(P_lang,i ‖ P_img,i). ``class_text_embeddings`` is
    (C, d) class-name embeddings (ELG, k = 1) or (C, k, d) pseudo-label embeddings (PLG);
    labels index its rows. mode="proxy" applies the same KL to proxy-proxy similarities (rows =
    the proxies, labels = their classes), for proxy-based losses: our own extension, not in the
    paper or the authors' code, which compare the batch's samples only.
    """

    def __init__(
        self,
        class_text_embeddings: Tensor,
        temperature: float = 1.0,
        shift: float = 1.0,
        direction: str = "backward",
        mode: str = "batch",
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        text = torch.as_tensor(class_text_embeddings)
        if not text.is_floating_point() or text.ndim not in (2, 3):
            raise LangDMLError(
                "LanguageGuidanceLoss: class_text_embeddings must be a float (C, d) or (C, k, d) "
                f"tensor, got {text.dtype} of shape {tuple(text.shape)}"
            )
        if not bool(torch.isfinite(text).all()):
            raise LangDMLError("LanguageGuidanceLoss: class_text_embeddings contain NaN or Inf")
        if num_classes is not None and text.shape[0] != num_classes:
            raise LangDMLError(
                f"LanguageGuidanceLoss: class_text_embeddings has {text.shape[0]} rows, "
                f"expected one per class ({num_classes})"
            )
        if direction not in _DIRECTIONS:
            raise LangDMLError(
                f"LanguageGuidanceLoss: direction must be one of {_DIRECTIONS}, got {direction!r}"
            )
        mode = canonical_mode(mode, "LanguageGuidanceLoss")
        if mode not in _MODES:
            raise LangDMLError(f"LanguageGuidanceLoss: mode must be one of {_MODES}, got {mode!r}")
        if temperature <= 0:
            raise LangDMLError(f"LanguageGuidanceLoss: temperature must be > 0, got {temperature}")
        text = F.normalize(text.detach().to(torch.float32), dim=-1)
        if text.ndim == 2:
            text = text[:, None, :]
        # (C, C) mean over pseudo-labels t of cos(e^(t)_c, e^(t)_c').
        sims = torch.einsum("ctd,etd->ce", text, text) / text.shape[1]
        self.register_buffer("class_similarity", sims)
        self.num_classes = int(text.shape[0])
        self.temperature = float(temperature)
        self.shift = float(shift)
        self.direction = direction
        self.mode = mode

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        proxies: Tensor | None = None,
        proxy_labels: Tensor | None = None,
    ) -> Tensor:
        if self.mode == "proxy":
            if proxies is None or proxy_labels is None:
                raise LangDMLError(
                    "LanguageGuidanceLoss: mode='proxy' needs the base loss's proxies; "
                    "use a proxy-based base loss or mode='batch'"
                )
            embeddings, labels = proxies, proxy_labels
        check_batch(embeddings, labels, "LanguageGuidanceLoss")
        check_labels_below(labels, self.num_classes, "LanguageGuidanceLoss")
        labels = labels.to(device=embeddings.device, dtype=torch.long)
        with fp32_region(embeddings):
            return self._kl(cosine_matrix(as_fp32(embeddings)), labels)

    def _kl(self, s_img: Tensor, labels: Tensor) -> Tensor:
        sims = self.class_similarity.to(s_img.device)
        s_lang = sims[labels][:, labels] + self.shift
        same = labels[:, None] == labels[None, :]
        top = torch.full_like(s_img, 1.0 + self.shift)
        s_img = torch.where(same, top, s_img)
        s_lang = torch.where(same, top, s_lang)
        t = self.temperature
        log_p_img = log_softmax(s_img / t, dim=1)
        log_p_lang = log_softmax(s_lang / t, dim=1).detach()
        if self.direction == "backward":
            kl = (log_p_img.exp() * (log_p_img - log_p_lang)).sum()
        else:
            kl = (log_p_lang.exp() * (log_p_lang - log_p_img)).sum()
        return kl * (t * t) / s_img.shape[0]
