"""S2SD: simultaneous similarity-based self-distillation (Roth et al., "S2SD: Simultaneous
Similarity-based Self-Distillation for Deep Metric Learning", ICML 2021)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from langdml.errors import LangDMLError

from ._common import as_fp32, check_batch, cosine_matrix, fp32_region, log_softmax, normalize


def similarity_distillation(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """(T²/B) Σ_i KL(σ(S_t[i, :] / T) ‖ σ(S_s[i, :] / T)): S_s, S_t the (B, B) cosine matrices
    of the student and teacher embeddings (rows L2-normalised, diagonal included), σ a row
    softmax. The teacher side is detached: only the student receives a gradient."""
    return _distill(_student_log_p(student, temperature), teacher, temperature)


def _student_log_p(student: Tensor, temperature: float) -> Tensor:
    return log_softmax(cosine_matrix(student) / temperature, dim=1)


def _distill(log_p_student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """similarity_distillation from the student's row log-softmax, so S2SDLoss builds it once
    for all its teachers."""
    t = temperature
    with torch.no_grad():
        z = normalize(as_fp32(teacher.detach()))
        log_p_teacher = log_softmax((z @ z.T) / t, dim=1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum()
    return kl * (t * t) / log_p_student.shape[0]


class S2SDLoss(nn.Module):
    """S2SD (Roth et al., ICML 2021): auxiliary high-dimensional embedding heads g_k, trained with
    the base DML loss, distil their batch-similarity structure into the target embedding f:

        L = ½ [L_DML(f) + (1/m) Σ_k L_DML^k(g_k)] + w · (1/m) Σ_k KL_T(f ← g_k)
            + w_feat · KL_T(f ← φ)   [with features, from the ``feature_delay``-th call on]

    KL_T(f ← g) = (T²/B) Σ_i KL(σ(S_g[i]/T) ‖ σ(S_f[i]/T)) with S the cosine matrix of the batch
    and σ a row softmax (``similarity_distillation``); the teacher (g_k, or the backbone
    features φ) is detached, so the heads learn only from their own DML loss and the
    distillation trains the target path. m = number of heads, T = ``temperature``, w =
    ``weight``, w_feat = ``feature_weight``. This is the paper's MSDF objective (multiple heads,
    DSD distillation, feature-space distillation) in the form of the authors' code
    (github.com/MLforHealth/S2SD): the ½ averaging of the DML terms and the per-head mean of
    the KL terms are theirs. Defaults are theirs: T = 1, w = 50, w_feat = 50, delay 1000.

    Call: ``loss(embeddings, labels)`` like every loss, where ``embeddings`` is the row-wise
    concatenation [f | g_1 | … | g_m | φ] of the target embedding (B, d), the m auxiliary
    embeddings (B, d_k) — each an MLP head Linear(f_dim, d_k)-ReLU-Linear(d_k, d_k) on the
    pooled backbone features, d_k e.g. 512/1024/1536/2048 — and optionally those pooled
    features φ (B, f_dim; the authors sum global average and max pooling): the columns are
    split by ``embedding_sizes`` = (d, d_1, …, d_m), and any remaining columns are φ.
    ``EmbeddingModel(x, concat_aux=True)`` returns exactly that. The trainer adds the heads'
    parameters to the model's optimizer group and ``proxy_parameters()`` (proxies of
    proxy-based base/head losses) to the proxy group, and evaluates with the target embedding
    only. ``build_loss`` with ``s2sd: {dims: [...]}`` makes the target and head losses from
    one base config.
    ``proxies`` / ``proxy_labels`` are the target loss's (for proxy-level language guidance),
    ``last_terms`` holds the detached terms after each call.

    Valid values: one auxiliary loss per head (>= 1); temperature > 0; weight, feature_weight
    >= 0; feature_delay an int >= 0.
    """

    def __init__(
        self,
        target_loss: nn.Module,
        auxiliary_losses: Sequence[nn.Module],
        *,
        embedding_sizes: Sequence[int],
        temperature: float = 1.0,
        weight: float = 50.0,
        feature_weight: float = 50.0,
        feature_delay: int = 1000,
    ) -> None:
        super().__init__()
        if len(auxiliary_losses) < 1:
            raise LangDMLError("S2SDLoss: needs at least one auxiliary loss (one per head)")
        sizes = [int(d) for d in embedding_sizes]
        if len(sizes) != len(auxiliary_losses) + 1 or min(sizes) < 1:
            raise LangDMLError(
                f"S2SDLoss: embedding_sizes must be (target, one per head) = "
                f"{len(auxiliary_losses) + 1} positive sizes, got {list(embedding_sizes)}"
            )
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)) or (
            temperature <= 0
        ):
            raise LangDMLError(f"S2SDLoss: temperature must be > 0, got {temperature!r}")
        if not float(weight) >= 0 or not float(feature_weight) >= 0:
            raise LangDMLError(
                f"S2SDLoss: weight and feature_weight must be >= 0, got {weight}, {feature_weight}"
            )
        if (
            not isinstance(feature_delay, int)
            or isinstance(feature_delay, bool)
            or (feature_delay < 0)
        ):
            raise LangDMLError(
                f"S2SDLoss: feature_delay must be an int >= 0, got {feature_delay!r}"
            )
        self.target_loss = target_loss
        self.auxiliary_losses = nn.ModuleList(auxiliary_losses)
        self.temperature = float(temperature)
        self.weight = float(weight)
        self.feature_weight = float(feature_weight)
        self.feature_delay = feature_delay
        self.embedding_sizes = sizes
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self._last: dict[str, Tensor] = {}

    @property
    def proxies(self) -> Tensor | None:
        return getattr(self.target_loss, "proxies", None)

    @property
    def proxy_labels(self) -> Tensor | None:
        return getattr(self.target_loss, "proxy_labels", None)

    @property
    def last_terms(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._last.items()}

    def proxy_parameters(self) -> list[nn.Parameter]:
        out: list[nn.Parameter] = []
        for loss in (self.target_loss, *self.auxiliary_losses):
            getter = getattr(loss, "proxy_parameters", None)
            out.extend(getter() if getter is not None else [])
        return out

    def split(self, embeddings: Tensor) -> tuple[Tensor, list[Tensor], Tensor | None]:
        """(target, [auxiliary], features or None) of the concatenated embeddings."""
        need = sum(self.embedding_sizes)
        if embeddings.ndim != 2 or embeddings.shape[1] < need:
            raise LangDMLError(
                f"S2SDLoss: expected (B, >= {need}) embeddings = [target | heads "
                f"{self.embedding_sizes[1:]} | features], got {tuple(embeddings.shape)}"
            )
        parts = list(torch.split(embeddings[:, :need], self.embedding_sizes, dim=1))
        features = embeddings[:, need:] if embeddings.shape[1] > need else None
        return parts[0], parts[1:], features

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        target, auxiliary, features = self.split(embeddings)
        self._check(target, auxiliary, labels, features)
        if target.shape[0] == 0:
            return (as_fp32(target) * 0.0).sum()
        with fp32_region(target):
            x = as_fp32(target)
            dml_target = self.target_loss(x, labels)
            dml_heads = torch.stack(
                [loss(as_fp32(a), labels) for loss, a in zip(self.auxiliary_losses, auxiliary)]
            ).mean()
            log_p = _student_log_p(x, self.temperature)  # shared by every teacher
            kl = torch.stack([_distill(log_p, a, self.temperature) for a in auxiliary]).mean()
            total = 0.5 * (dml_target + dml_heads) + self.weight * kl
            terms = {"target": dml_target, "heads": dml_heads, "distill": kl}
            use_features = features is not None and int(self.calls) >= self.feature_delay
            if use_features and self.feature_weight > 0:
                kl_feat = _distill(log_p, features, self.temperature)
                total = total + self.feature_weight * kl_feat
                terms["feature_distill"] = kl_feat
        if self.training:
            self.calls += 1
        terms["total"] = total
        self._last = {k: v.detach() for k, v in terms.items()}
        return total

    def _check(
        self, target: Tensor, auxiliary: Sequence[Tensor], labels: Tensor, features: Tensor | None
    ) -> None:
        check_batch(target, labels, "S2SDLoss")
        if isinstance(auxiliary, Tensor) or len(auxiliary) != len(self.auxiliary_losses):
            raise LangDMLError(
                f"S2SDLoss: expected a list of {len(self.auxiliary_losses)} auxiliary embeddings"
            )
        for i, emb in enumerate(auxiliary):
            check_batch(emb, labels, f"S2SDLoss (auxiliary head {i})")
        if features is not None:
            check_batch(features, labels, "S2SDLoss (features)")
