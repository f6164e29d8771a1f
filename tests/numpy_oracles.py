"""Independent float64 numpy versions of the losses of docs/method.md, written from docs/method.md's
definitions (and IRRA's for ITC / CMPM), never from model/objectives.py: the oracles of
tests/parity/test_oracles.py and tests/unit/test_objectives.py. Inputs and outputs are numpy arrays."""

from __future__ import annotations

import numpy as np

EPS = 1e-8


def l2n(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return x / np.linalg.norm(x, axis=axis, keepdims=True)


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise (last axis) log softmax."""
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def lse(x: np.ndarray, axis: int) -> np.ndarray:
    top = x.max(axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.exp(x - top).sum(axis=axis))


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(-log_softmax(logits)[np.arange(len(labels)), labels].mean())


def sdm(image, text, pids, scale, mode=None, factor=0.1):
    """SDM (mode None) or A-SDM with ``mode`` "cosine" (authors' code) / "probability" (paper)."""
    c = l2n(text) @ l2n(image).T  # rows: texts
    same = (pids[:, None] == pids[None, :]).astype(float)
    q = same / same.sum(axis=1, keepdims=True)
    total = 0.0
    for cd in (c.T, c):  # i2t (rows images), then t2i (rows texts)
        logp = log_softmax(scale * cd)
        p = np.exp(logp)
        kl = (p * (logp - np.log(q + EPS))).sum(axis=1)
        w = np.ones(len(kl))
        for i in range(len(kl)):
            m, g = int(np.argmax(cd[i])), int(np.argmax(q[i]))  # g: first index with the same pid
            if mode == "cosine" and m != g:
                w[i] = 1 + factor * (cd[i, m] - cd[i, g])
            elif mode == "probability":
                w[i] = 1 + factor * (p[i].max() - p[i, i])
        total += (w * kl).mean()
    return total


def itc(image, text, scale):
    logits = scale * l2n(image) @ l2n(text).T
    labels = np.arange(len(image))
    return (cross_entropy(logits, labels) + cross_entropy(logits.T, labels)) / 2


def cmpm(image, text, pids):
    """IRRA's compute_cmpm: each modality projected on the other's unit vectors, target rows
    the identity mask over its L2 norm."""
    same = (pids[:, None] == pids[None, :]).astype(float)
    log_target = np.log(same / np.linalg.norm(same, axis=1, keepdims=True) + EPS)
    total = 0.0
    for logits in (image @ l2n(text).T, text @ l2n(image).T):
        logp = log_softmax(logits)
        total += (np.exp(logp) * (logp - log_target)).sum(axis=1).mean()
    return total


# ---- EFA, one function per step of docs/method.md --------------------------------------------------------


def affinity(text, patches):
    """Step 1: A_b = T_b V_b^T, [B, L, P]."""
    return np.einsum("bld,bpd->blp", text, patches)


def row_min_max(a):
    """Step 2a: each row to [0, 1]."""
    low, high = a.min(axis=-1, keepdims=True), a.max(axis=-1, keepdims=True)
    return (a - low) / (high - low)


def sparsify(dense, threshold=1.0):
    """Step 2b: entries <= threshold / P set to 0."""
    return np.where(dense <= threshold / dense.shape[-1], 0.0, dense)


def row_normalise(a):
    """Step 2c: each row divided by its sum."""
    return a / a.sum(axis=-1, keepdims=True)


def grouped(text, patches, threshold=1.0):
    """Step 3: G_b = A_b V_b with A_b the sparse row-normalised affinity."""
    return row_normalise(sparsify(row_min_max(affinity(text, patches)), threshold)) @ patches


def set_similarity(x, y, lse_lambda=1.0):
    """Step 4: S[a, b] = (1/lambda) log sum_x exp(lambda max_y cos(x, y)), rows L2-normalised."""
    cos = np.einsum("axd,byd->abxy", l2n(x), l2n(y))
    s = lse(lse_lambda * cos.max(axis=3), axis=2) / lse_lambda
    return l2n(s, axis=1)


def ranking_cost(s, margin):
    """Step 5: R1 = S[a,b] - S[a,a] + m, R2 = S[a,b] - S[b,b] + m, diagonal 0, LSE over a, mean over b."""
    d = np.diag(s)
    off = ~np.eye(len(s), dtype=bool)
    r1 = np.where(off, s - d[:, None] + margin, 0.0)
    r2 = np.where(off, s - d[None, :] + margin, 0.0)
    return lse(r1, axis=0).mean() + lse(r2, axis=0).mean()


def efa(text, image_tokens, text_margin=0.1, image_margin=0.9, lse_lambda=1.0, threshold=1.0):
    """Step 6: pair(T, G, text_margin) + pair(V, G, image_margin); class token dropped."""
    patches = image_tokens[:, 1:]
    g = grouped(text, patches, threshold)
    return ranking_cost(set_similarity(text, g, lse_lambda), text_margin) + ranking_cost(
        set_similarity(patches, g, lse_lambda), image_margin
    )


def directional_derivatives(fn, inputs, directions, h=1e-6):
    """Central differences of ``fn(*inputs)`` along each tuple of ``directions``."""
    out = []
    for direction in directions:
        plus = fn(*[x + h * d for x, d in zip(inputs, direction)])
        minus = fn(*[x - h * d for x, d in zip(inputs, direction)])
        out.append((plus - minus) / (2 * h))
    return np.array(out)
