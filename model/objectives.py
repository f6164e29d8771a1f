"""FMFA training objectives as pure functions (docs/method.md, "Losses").

Every loss takes float32 tensors and returns a scalar tensor. Notation: B = batch,
D = embedding width, C = identities, L = text tokens, P = image patches.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from configs.validation import ASDM_MODES
from .max_similarity import max_dot_product

EPSILON = 1e-8


def _same_identity(pids: torch.Tensor) -> torch.Tensor:
    """y[i, j] = [pid_i == pid_j] as float  ->  [B, B]."""
    return (pids.reshape(-1, 1) == pids.reshape(1, -1)).float()


def _identity_targets(pids: torch.Tensor) -> torch.Tensor:
    """q[i, j] = [pid_i == pid_j] / #{k: pid_k == pid_i}  ->  [B, B]."""
    same = _same_identity(pids)
    return same / same.sum(dim=1, keepdim=True)


def _row_kl(logits: torch.Tensor, log_targets: torch.Tensor) -> torch.Tensor:
    """sum_j p_ij (log p_ij - log q_ij) for p = softmax(logits) per row  ->  [rows]."""
    return (F.softmax(logits, dim=1) * (F.log_softmax(logits, dim=1) - log_targets)).sum(dim=1)


def _adaptive_weights(cosine: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, *,
                      factor: float, mode: str) -> torch.Tensor:
    """A-SDM row weights w_i >= 1 (not detached, as in the reference)  ->  [rows].

    ``cosine``: 1 + factor * (c[i, m_i] - c[i, g_i]) where m_i is the most similar
    column and g_i the first column of the same identity (1 where they agree); the
    authors' code. ``probability``: 1 + factor * (max_k p_ik - p_ii) on the softmax
    probabilities of the row; the paper's formula.
    """
    if mode == "cosine":
        rows = torch.arange(cosine.shape[0], device=cosine.device)
        best, matched = logits.argmax(dim=1), targets.argmax(dim=1)
        gap = cosine[rows, best] - cosine[rows, matched]
        return torch.where(best != matched, gap * factor + 1, torch.ones_like(gap))
    if mode == "probability":
        probs = F.softmax(logits, dim=1)
        return (probs.max(dim=1).values - probs.diagonal()) * factor + 1
    raise ValueError(f"asdm mode must be one of {ASDM_MODES}, got {mode!r}")


def sdm_loss(image_feats: torch.Tensor, text_feats: torch.Tensor, pids: torch.Tensor,
             logit_scale: float | torch.Tensor, adaptive: bool = False,
             adaptive_factor: float = 0.1, adaptive_mode: str = "cosine") -> torch.Tensor:
    """Similarity distribution matching (IRRA); with ``adaptive=True``, FMFA's A-SDM.

    Args:
        image_feats, text_feats: [B, D] global embeddings (any norm).
        pids: [B] identities.
        logit_scale: s, the inverse temperature (50).
        adaptive_factor, adaptive_mode: see :func:`_adaptive_weights`.
    Returns:
        KL(i2t) + KL(t2i), each the mean over rows (weighted per row when adaptive).
    """
    t2i_cos = F.normalize(text_feats, dim=1, eps=0.0) @ F.normalize(image_feats, dim=1, eps=0.0).t()
    targets = _identity_targets(pids)
    log_targets = torch.log(targets + EPSILON)
    loss = t2i_cos.new_zeros(())
    for cosine in (t2i_cos.t(), t2i_cos):  # rows = images, then rows = texts
        logits = logit_scale * cosine
        row_kl = _row_kl(logits, log_targets)
        if adaptive:
            row_kl = _adaptive_weights(cosine, logits, targets, factor=adaptive_factor, mode=adaptive_mode) * row_kl
        loss = loss + row_kl.mean()
    return loss


def itc_loss(image_feats: torch.Tensor, text_feats: torch.Tensor,
             logit_scale: float | torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over the batch, [B, D] x 2 -> mean of the two directions."""
    logits = logit_scale * F.normalize(image_feats, dim=1, eps=0.0) @ F.normalize(text_feats, dim=1, eps=0.0).t()
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def cmpm_loss(image_feats: torch.Tensor, text_feats: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
    """Cross-modal projection matching (IRRA's form), [B, D] x 2, pids [B].

    Each embedding is projected on the *normalised* embeddings of the other modality;
    the target rows are the identity mask divided by its L2 norm.
    """
    same = _same_identity(pids)
    log_targets = torch.log(same / same.norm(dim=1, keepdim=True) + EPSILON)
    image_proj_text = image_feats @ F.normalize(text_feats, dim=1, eps=0.0).t()
    text_proj_image = text_feats @ F.normalize(image_feats, dim=1, eps=0.0).t()
    return _row_kl(image_proj_text, log_targets).mean() + _row_kl(text_proj_image, log_targets).mean()


def id_loss(image_logits: torch.Tensor, text_logits: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
    """Identity classification of both modalities: logits [B, C], pids [B] in [0, C)."""
    return (F.cross_entropy(image_logits, pids) + F.cross_entropy(text_logits, pids)) / 2


def mlm_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Masked-token cross entropy: scores [N, V], labels [N] with 0 = not a target."""
    return F.cross_entropy(scores, labels, ignore_index=0)


def text_patch_affinity(text_tokens: torch.Tensor, patch_tokens: torch.Tensor,
                        threshold: float = 1.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """EFA steps 1-2: each text token's affinity to the patches, min-max normalised per
    token ([B, L, P], before sparsification), and its sparsified, row-normalised version
    A_b (entries at or below threshold / P zeroed). Also used for the similarity maps."""
    affinity = text_tokens @ patch_tokens.transpose(1, 2)  # [B, L, P]
    low = affinity.min(dim=2, keepdim=True)[0]
    high = affinity.max(dim=2, keepdim=True)[0]
    dense = (affinity - low) / (high - low)
    sparse = torch.where(dense > threshold / dense.shape[2], dense, torch.zeros_like(dense))
    return dense, sparse / sparse.sum(dim=2, keepdim=True)


def language_grouped_vision(text_tokens: torch.Tensor, patch_tokens: torch.Tensor,
                            threshold: float = 1.0) -> torch.Tensor:
    """EFA steps 1-3: G_b = A_b V_b with A_b the sparsified text-to-patch affinity.

    Args:
        text_tokens: [B, L, D]; patch_tokens: [B, P, D] (no class token).
        threshold: sparsification threshold in units of 1/P.
    Returns:
        [B, L, D] vision embeddings grouped by each text token.
    """
    return text_patch_affinity(text_tokens, patch_tokens, threshold)[1] @ patch_tokens


def _ranking_cost(sims: torch.Tensor, margin: float) -> torch.Tensor:
    """EFA step 5 on a [B, B] set-similarity matrix (rows: the pooled sets)."""
    diag = sims.diagonal()
    off_diag = ~torch.eye(sims.shape[0], dtype=torch.bool, device=sims.device)
    zero = sims.new_zeros(())
    by_row_anchor = torch.where(off_diag, sims - diag.unsqueeze(1) + margin, zero)  # S[a,b] - S[a,a] + m
    by_col_anchor = torch.where(off_diag, sims - diag.unsqueeze(0) + margin, zero)  # S[a,b] - S[b,b] + m
    return torch.logsumexp(by_col_anchor, dim=0).mean() + torch.logsumexp(by_row_anchor, dim=0).mean()


def efa_loss(text_tokens: torch.Tensor, image_tokens: torch.Tensor, *, text_margin: float = 0.1,
             image_margin: float = 0.9, lse_lambda: float = 1.0, threshold: float = 1.0,
             block_elems: int = 1 << 22) -> torch.Tensor:
    """Explicit fine-grained alignment (docs/method.md, "Losses", EFA steps 1-6).

    Args:
        text_tokens: [B, L, D] projected text tokens, every position (padding included).
        image_tokens: [B, 1 + P, D] projected image tokens, class token at index 0.
        text_margin, image_margin: margins of the text->joint and image->joint costs.
        lse_lambda: LSE pooling sharpness; S = (1/lambda) log sum_x exp(lambda * max_y cos).
        threshold: sparsification threshold in units of 1/P.
        block_elems: memory bound of the blockwise set similarity (see max_similarity).
    """
    patches = image_tokens[:, 1:]
    grouped = language_grouped_vision(text_tokens, patches, threshold)
    targets = F.normalize(grouped, dim=-1)
    loss = text_tokens.new_zeros(())
    for tokens, margin in ((text_tokens, text_margin), (patches, image_margin)):
        best = max_dot_product(F.normalize(tokens, dim=-1), targets, block_elems)  # [B, L|P, B]
        sims = torch.logsumexp(lse_lambda * best, dim=1) / lse_lambda  # [B, B]
        loss = loss + _ranking_cost(F.normalize(sims, dim=-1), margin)
    return loss
