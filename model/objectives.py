"""FMFA training objectives as pure functions (docs/method.md, "Losses").

Every loss takes float32 tensors and returns a scalar tensor. Notation: B = batch,
D = embedding width, C = identities, L = text tokens, P = image patches.

The batch-coupled losses (SDM/A-SDM, ITC, CMPM, EFA) also take a :class:`Shard` when the
batch is split over processes: each process then scores its own R = B / N rows against the
gathered columns of the whole batch and returns its share, so that the mean of the N shares
is the loss of the whole batch (value and, after DDP's gradient averaging, gradient).

How each is fed from the model's outputs and the config: :mod:`model.loss`.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from configs.defaults import AsdmConfig, EfaConfig

from .max_similarity import max_dot_product
from .shard import Shard, columns_of, first_row_of

EPSILON = 1e-8


def _same_identity(row_pids: torch.Tensor, col_pids: Optional[torch.Tensor] = None) -> torch.Tensor:
    """y[i, j] = [pid_i == pid_j] as float  ->  [R, B]."""
    col_pids = row_pids if col_pids is None else col_pids
    return (row_pids.reshape(-1, 1) == col_pids.reshape(1, -1)).float()


def _identity_targets(row_pids: torch.Tensor, col_pids: Optional[torch.Tensor] = None) -> torch.Tensor:
    """q[i, j] = [pid_i == pid_j] / #{k: pid_k == pid_i}  ->  [R, B]."""
    same = _same_identity(row_pids, col_pids)
    return same / same.sum(dim=1, keepdim=True)


def _row_kl(logits: torch.Tensor, log_targets: torch.Tensor) -> torch.Tensor:
    """sum_j p_ij (log p_ij - log q_ij) for p = softmax(logits) per row  ->  [rows]."""
    return (F.softmax(logits, dim=1) * (F.log_softmax(logits, dim=1) - log_targets)).sum(dim=1)


def _cosine_gap(cosine: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, first_row: int) -> torch.Tensor:
    """c[i, m_i] - c[i, g_i] where m_i is the most similar column and g_i the first column of
    the same identity, 0 where they agree (the authors' code)."""
    rows = torch.arange(cosine.shape[0], device=cosine.device)
    best, matched = logits.argmax(dim=1), targets.argmax(dim=1)
    gap = cosine[rows, best] - cosine[rows, matched]
    return torch.where(best != matched, gap, torch.zeros_like(gap))


def _probability_gap(cosine: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, first_row: int) -> torch.Tensor:
    """max_k p_ik - p_ii on the softmax probabilities of the row (the paper's formula)."""
    probs = F.softmax(logits, dim=1)
    return probs.max(dim=1).values - probs.diagonal(offset=first_row)


def _adaptive_weights(
    cosine: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, *, factor: float, mode: str, first_row: int = 0
) -> torch.Tensor:
    """A-SDM row weights w_i = 1 + factor * gap_i >= 1 (not detached, as in the reference)
    ->  [rows]; ``mode`` names the gap (configs.defaults.ASDM_MODES). Row i is column
    ``first_row + i``."""
    gap = {"cosine": _cosine_gap, "probability": _probability_gap}[mode]
    return gap(cosine, logits, targets, first_row) * factor + 1


def sdm_loss(
    image_feats: torch.Tensor,
    text_feats: torch.Tensor,
    pids: torch.Tensor,
    logit_scale: float | torch.Tensor,
    adaptive: bool = False,
    adaptive_factor: float = AsdmConfig.factor,
    adaptive_mode: str = AsdmConfig.mode,
    shard: Optional[Shard] = None,
) -> torch.Tensor:
    """Similarity distribution matching (IRRA); with ``adaptive=True``, FMFA's A-SDM.

    Args:
        image_feats, text_feats: [R, D] global embeddings (any norm); R = B on one process.
        pids: [R] identities.
        logit_scale: s, the inverse temperature (50).
        adaptive_factor, adaptive_mode: see :func:`_adaptive_weights`.
        shard: the split of the batch over processes (module docstring); None = one process.
    Returns:
        KL(i2t) + KL(t2i), each the mean over rows (weighted per row when adaptive).
    """
    image_cols, text_cols, col_pids = columns_of(shard, image_feats, text_feats, pids)
    first = first_row_of(shard, image_feats.shape[0])
    targets = _identity_targets(pids, col_pids)
    log_targets = torch.log(targets + EPSILON)
    loss = image_feats.new_zeros(())
    # rows = images against every text, then rows = texts against every image
    for rows, cols in ((image_feats, text_cols), (text_feats, image_cols)):
        cosine = F.normalize(rows, dim=1, eps=0.0) @ F.normalize(cols, dim=1, eps=0.0).t()
        logits = logit_scale * cosine
        row_kl = _row_kl(logits, log_targets)
        if adaptive:
            row_kl = (
                _adaptive_weights(cosine, logits, targets, factor=adaptive_factor, mode=adaptive_mode, first_row=first)
                * row_kl
            )
        loss = loss + row_kl.mean()
    return loss


def itc_loss(
    image_feats: torch.Tensor,
    text_feats: torch.Tensor,
    logit_scale: float | torch.Tensor,
    shard: Optional[Shard] = None,
) -> torch.Tensor:
    """Symmetric InfoNCE over the batch, [R, D] x 2 -> mean of the two directions."""
    image_cols, text_cols = columns_of(shard, image_feats, text_feats)
    labels = torch.arange(image_feats.shape[0], device=image_feats.device) + first_row_of(shard, image_feats.shape[0])
    loss = image_feats.new_zeros(())
    for rows, cols in ((image_feats, text_cols), (text_feats, image_cols)):
        logits = logit_scale * F.normalize(rows, dim=1, eps=0.0) @ F.normalize(cols, dim=1, eps=0.0).t()
        loss = loss + F.cross_entropy(logits, labels) / 2
    return loss


def cmpm_loss(
    image_feats: torch.Tensor, text_feats: torch.Tensor, pids: torch.Tensor, shard: Optional[Shard] = None
) -> torch.Tensor:
    """Cross-modal projection matching (IRRA's form), [R, D] x 2, pids [R].

    Each embedding is projected on the *normalised* embeddings of the other modality;
    the target rows are the identity mask divided by its L2 norm.
    """
    image_cols, text_cols, col_pids = columns_of(shard, image_feats, text_feats, pids)
    same = _same_identity(pids, col_pids)
    log_targets = torch.log(same / same.norm(dim=1, keepdim=True) + EPSILON)
    image_proj_text = image_feats @ F.normalize(text_cols, dim=1, eps=0.0).t()
    text_proj_image = text_feats @ F.normalize(image_cols, dim=1, eps=0.0).t()
    return _row_kl(image_proj_text, log_targets).mean() + _row_kl(text_proj_image, log_targets).mean()


def id_loss(image_logits: torch.Tensor, text_logits: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
    """Identity classification of both modalities: logits [B, C], pids [B] in [0, C)."""
    return (F.cross_entropy(image_logits, pids) + F.cross_entropy(text_logits, pids)) / 2


def mlm_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Masked-token cross entropy: scores [N, V], labels [N] with 0 = not a target."""
    return F.cross_entropy(scores, labels, ignore_index=0)


def text_patch_affinity(
    text_tokens: torch.Tensor, patch_tokens: torch.Tensor, threshold: float = EfaConfig.threshold
) -> Tuple[torch.Tensor, torch.Tensor]:
    """EFA steps 1-2: each text token's affinity to the patches, min-max normalised per
    token ([B, L, P], before sparsification), and its sparsified, row-normalised version
    A_b (entries at or below threshold / P zeroed). Also used for the similarity maps."""
    affinity = text_tokens @ patch_tokens.transpose(1, 2)  # [B, L, P]
    low = affinity.min(dim=2, keepdim=True)[0]
    high = affinity.max(dim=2, keepdim=True)[0]
    dense = (affinity - low) / (high - low)
    sparse = torch.where(dense > threshold / dense.shape[2], dense, torch.zeros_like(dense))
    return dense, sparse / sparse.sum(dim=2, keepdim=True)


def language_grouped_vision(
    text_tokens: torch.Tensor, patch_tokens: torch.Tensor, threshold: float = EfaConfig.threshold
) -> torch.Tensor:
    """EFA steps 1-3: G_b = A_b V_b with A_b the sparsified text-to-patch affinity.

    Args:
        text_tokens: [B, L, D]; patch_tokens: [B, P, D] (no class token).
        threshold: sparsification threshold in units of 1/P.
    Returns:
        [B, L, D] vision embeddings grouped by each text token.
    """
    return text_patch_affinity(text_tokens, patch_tokens, threshold)[1] @ patch_tokens


def _ranking_cost_per_column(sims: torch.Tensor, margin: float) -> torch.Tensor:
    """EFA step 5 per column b of a [B, B] set-similarity matrix (rows: the pooled sets):
    LSE_a R1[:, b] + LSE_a R2[:, b]  ->  [B]."""
    diag = sims.diagonal()
    off_diag = ~torch.eye(sims.shape[0], dtype=torch.bool, device=sims.device)
    zero = sims.new_zeros(())
    by_row_anchor = torch.where(off_diag, sims - diag.unsqueeze(1) + margin, zero)  # S[a,b] - S[a,a] + m
    by_col_anchor = torch.where(off_diag, sims - diag.unsqueeze(0) + margin, zero)  # S[a,b] - S[b,b] + m
    return torch.logsumexp(by_col_anchor, dim=0) + torch.logsumexp(by_row_anchor, dim=0)


def _ranking_cost(sims: torch.Tensor, margin: float, first: int = 0, columns: Optional[int] = None) -> torch.Tensor:
    """EFA step 5 on a [B, B] set-similarity matrix: the mean over columns (over
    ``columns`` of them from ``first``: a process's share of the global batch)."""
    per_column = _ranking_cost_per_column(sims, margin)
    return per_column[first : first + (per_column.shape[0] if columns is None else columns)].mean()


def _set_similarity(tokens: torch.Tensor, targets: torch.Tensor, lse_lambda: float, block_elems: int) -> torch.Tensor:
    """EFA step 4: [R, N, D] token sets against unit targets [B, L, D] -> [R, B], rows unit."""
    best = max_dot_product(F.normalize(tokens, dim=-1), targets, block_elems)  # [R, N, B]
    return F.normalize(torch.logsumexp(lse_lambda * best, dim=1) / lse_lambda, dim=-1)


def efa_loss(
    text_tokens: torch.Tensor,
    image_tokens: torch.Tensor,
    *,
    text_margin: float = EfaConfig.text_margin,
    image_margin: float = EfaConfig.image_margin,
    lse_lambda: float = EfaConfig.lse_lambda,
    threshold: float = EfaConfig.threshold,
    block_elems: int = EfaConfig.block_elems,
    shard: Optional[Shard] = None,
) -> torch.Tensor:
    """Explicit fine-grained alignment (docs/method.md, "Losses", EFA steps 1-6).

    Args:
        text_tokens: [R, L, D] projected text tokens, every position (padding included).
        image_tokens: [R, 1 + P, D] projected image tokens, class token at index 0.
        text_margin, image_margin: margins of the text->joint and image->joint costs.
        lse_lambda: LSE pooling sharpness; S = (1/lambda) log sum_x exp(lambda * max_y cos).
        threshold: sparsification threshold in units of 1/P.
        block_elems: memory bound of the blockwise set similarity (see max_similarity).
        shard: the split over processes: this process's rows of S against the gathered
            grouped embeddings, then the gathered S and the mean over this process's columns.
    """
    patches = image_tokens[:, 1:]
    targets = F.normalize(language_grouped_vision(text_tokens, patches, threshold), dim=-1)
    (all_targets,) = columns_of(shard, targets)
    loss = text_tokens.new_zeros(())
    for tokens, margin in ((text_tokens, text_margin), (patches, image_margin)):
        sims = _set_similarity(tokens, all_targets, lse_lambda, block_elems)
        (all_sims,) = columns_of(shard, sims)
        loss = loss + _ranking_cost(all_sims, margin, first_row_of(shard, sims.shape[0]), sims.shape[0])
    return loss
