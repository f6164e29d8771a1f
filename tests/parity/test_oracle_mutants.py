"""The oracle checks of tests/parity/test_oracles.py reject wrong code: each runs on a torch copy
of the loss written here, which passes when faithful (bug=None) and must raise
AssertionError with any one deliberate bug switched on."""

from __future__ import annotations

import functools

import pytest
import test_oracles as oracles
import test_oracles_by_hand as by_hand
import torch
import torch.nn.functional as F

from model import objectives


def _norm(x, dim=-1):
    return x / x.norm(dim=dim, keepdim=True)


def sdm_copy(image, text, pids, scale, adaptive=False, adaptive_factor=0.1, adaptive_mode="cosine", *, bug=None):
    cos = _norm(text) @ _norm(image).t() if bug != "unnormalised" else text @ image.t()
    same = (pids[:, None] == pids[None, :]).to(cos.dtype)
    q = same if bug == "targets_not_divided_by_count" else same / same.sum(1, keepdim=True)
    if bug == "modes_swapped":
        adaptive_mode = {"cosine": "probability", "probability": "cosine"}[adaptive_mode]
    loss = 0
    for c in (cos, cos) if bug == "one_direction" else (cos.t(), cos):
        logp = F.log_softmax(scale * c, dim=1)
        p = logp.exp()
        kl = (p * (logp - torch.log(q + 1e-8))).sum(1)
        rows = torch.arange(len(c))
        m, g = c.argmax(1), q.argmax(1)
        if bug == "g_is_the_diagonal":
            g = rows
        if adaptive and adaptive_mode == "cosine":
            w = torch.where(m != g, 1 + adaptive_factor * (c[rows, m] - c[rows, g]), torch.ones_like(kl))
        elif adaptive:
            probs = c if bug == "probability_on_cosines" else p
            diag = probs[rows, q.argmax(1)] if bug == "probability_wrong_diagonal" else probs.diagonal()
            w = 1 + adaptive_factor * (probs.max(1).values - diag)
        else:
            w = torch.ones_like(kl)
        w = w.detach() if bug == "weight_detached" else w
        loss = loss + ((w * kl).sum() if bug == "sum_over_rows" else (w * kl).mean())
    return loss


def itc_copy(image, text, scale, *, bug=None):
    logits = scale * (_norm(image) @ _norm(text).t() if bug != "unnormalised" else image @ text.t())
    labels = torch.arange(len(image))
    if bug == "one_direction":
        return F.cross_entropy(logits, labels)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def cmpm_copy(image, text, pids, *, bug=None):
    same = (pids[:, None] == pids[None, :]).to(image.dtype)
    target = same / (same.sum(1, keepdim=True) if bug == "l1_targets" else same.norm(dim=1, keepdim=True))
    loss = 0
    for x, y in ((image, text), (text, image)):
        logits = (_norm(x) if bug == "cosine_logits" else x) @ _norm(y).t()
        logp = F.log_softmax(logits, 1)
        loss = loss + (logp.exp() * (logp - torch.log(target + 1e-8))).sum(1).mean()
    return loss


def id_copy(image_logits, text_logits, pids, *, bug=None):
    if bug == "image_only":
        return F.cross_entropy(image_logits, pids)
    if bug == "averaged_logits":
        return F.cross_entropy((image_logits + text_logits) / 2, pids)
    return (F.cross_entropy(image_logits, pids) + F.cross_entropy(text_logits, pids)) / 2


def mlm_copy(scores, labels, *, bug=None):
    if bug == "label_0_not_ignored":
        return F.cross_entropy(scores, labels)
    if bug == "mean_over_all_rows":
        return F.cross_entropy(scores, labels, ignore_index=0, reduction="sum") / len(labels)
    return F.cross_entropy(scores, labels, ignore_index=0)


def affinity_copy(text, patches, threshold=1.0, *, bug=None):
    a = (_norm(text) @ _norm(patches).transpose(1, 2)) if bug == "cosine_affinity" else text @ patches.transpose(1, 2)
    low, high = a.min(2, keepdim=True).values, a.max(2, keepdim=True).values
    dense = a / high if bug == "max_scaling_only" else (a - low) / (high - low)
    cut = threshold if bug == "threshold_not_over_P" else threshold / a.shape[2]
    pruned = dense < cut if bug == "strict_threshold" else dense <= cut
    sparse = dense.masked_fill(pruned, 0)
    return dense, (sparse if bug == "rows_not_normalised" else sparse / sparse.sum(2, keepdim=True))


def grouping_copy(text, patches, threshold=1.0, *, bug=None):
    dense, sparse = affinity_copy(text, patches, threshold, bug=bug)
    return (dense / dense.sum(2, keepdim=True) if bug == "dense_grouping" else sparse) @ patches


def ranking_copy(sims, margin, *, bug=None):
    off = ~torch.eye(len(sims), dtype=torch.bool)
    d = sims.diagonal()
    r1, r2 = sims - d[:, None] + margin, sims - d[None, :] + margin
    if bug != "diagonal_kept":
        r1, r2 = r1.where(off, 0.0), r2.where(off, 0.0)
    dim = 1 if bug == "lse_over_b" else 0
    reduce = torch.sum if bug == "sum_over_b" else torch.mean
    return reduce(torch.logsumexp(r1, dim)) + reduce(torch.logsumexp(r2, dim))


def efa_copy(text, image, *, text_margin=0.1, image_margin=0.9, lse_lambda=1.0, threshold=1.0, bug=None):
    """Broadcast EFA; the ranking cost is ``objectives._ranking_cost`` looked up at call time (so
    check_set_similarity's spy sees S) unless the bug is in the ranking itself."""
    patches = image if bug == "class_token_kept" else image[:, 1:]
    g = grouping_copy(text, patches, threshold, bug=bug)
    if bug == "margins_swapped":
        text_margin, image_margin = image_margin, text_margin
    loss = 0
    for x, m in ((text, text_margin), (patches, image_margin)):
        best = torch.einsum("axd,byd->abxy", _norm(x), _norm(g)).amax(3)
        if bug == "mean_pooling":
            s = best.mean(2)
        elif bug == "lambda_ignored":
            s = torch.logsumexp(best, 2)
        else:
            s = torch.logsumexp(lse_lambda * best, 2) / lse_lambda
        s = {"no_row_l2": s, "column_l2": _norm(s, 0)}.get(bug, _norm(s, 1))
        rank = functools.partial(ranking_copy, bug=bug) if bug in RANKING_BUGS else objectives._ranking_cost
        loss = loss + rank(s, m)
    return loss


SDM_BUGS = ["unnormalised", "targets_not_divided_by_count", "one_direction", "sum_over_rows"]
AFFINITY_BUGS = [
    "cosine_affinity",
    "max_scaling_only",
    "threshold_not_over_P",
    "strict_threshold",
    "rows_not_normalised",
]
RANKING_BUGS = ["diagonal_kept", "lse_over_b", "sum_over_b"]
SET_BUGS = ["mean_pooling", "lambda_ignored", "no_row_l2", "column_l2"]
# Not in EFA's lists, as EFA cannot see them: rows of A rescaled (G enters only through cosines),
# a missing 1/lambda (S's rows are L2-normalised) and the strict threshold (no entry of the
# random cases sits exactly at threshold / P; the hand-worked case of check_affinity has one).
EFA_BLIND = ["rows_not_normalised", "strict_threshold"]
CASES = [  # (check, copy, bugs); each check also runs on copy(bug=None), which must pass
    (oracles.check_sdm, sdm_copy, SDM_BUGS),
    (
        functools.partial(oracles.check_asdm, mode="cosine"),
        sdm_copy,
        ["g_is_the_diagonal", "weight_detached", "modes_swapped", *SDM_BUGS],
    ),
    (
        functools.partial(oracles.check_asdm, mode="probability"),
        sdm_copy,
        ["probability_wrong_diagonal", "probability_on_cosines", "modes_swapped", "weight_detached", *SDM_BUGS],
    ),
    (oracles.check_itc, itc_copy, ["unnormalised", "one_direction"]),
    (oracles.check_cmpm, cmpm_copy, ["l1_targets", "cosine_logits"]),
    (oracles.check_id, id_copy, ["image_only", "averaged_logits"]),
    (oracles.check_mlm, mlm_copy, ["label_0_not_ignored", "mean_over_all_rows"]),
    (oracles.check_affinity, affinity_copy, AFFINITY_BUGS),
    (oracles.check_grouping, grouping_copy, ["dense_grouping", *AFFINITY_BUGS]),
    (oracles.check_ranking, ranking_copy, RANKING_BUGS),
    (
        oracles.check_efa,
        efa_copy,
        [
            "class_token_kept",
            "margins_swapped",
            "dense_grouping",
            *RANKING_BUGS,
            *SET_BUGS,
            *[b for b in AFFINITY_BUGS if b not in EFA_BLIND],
        ],
    ),
    # the hand-worked cases of tests/parity/test_oracles_by_hand.py (values only: a detached weight is
    # invisible there; row 2's g = 0 is what catches g_is_the_diagonal / probability_wrong_diagonal)
    (functools.partial(by_hand.check_asdm_shared_identity, mode=None), sdm_copy, SDM_BUGS),
    (
        functools.partial(by_hand.check_asdm_shared_identity, mode="cosine"),
        sdm_copy,
        ["g_is_the_diagonal", "modes_swapped", *SDM_BUGS],
    ),
    (
        functools.partial(by_hand.check_asdm_shared_identity, mode="probability"),
        sdm_copy,
        ["probability_wrong_diagonal", "probability_on_cosines", "modes_swapped", *SDM_BUGS],
    ),
    (by_hand.check_ranking_asymmetric, ranking_copy, RANKING_BUGS),
]


def _case_id(check, copy, bug):
    name = getattr(check, "func", check).__name__.removeprefix("check_")
    return f"{name}-{copy.__name__}-{getattr(check, 'keywords', {}).get('mode', '')}-{bug}"


PARAMS = [
    pytest.param(check, copy, bug, id=_case_id(check, copy, bug))
    for check, copy, bugs in CASES
    for bug in [None, *bugs]
]


@pytest.mark.parametrize("check, copy, bug", PARAMS)
def test_the_oracle_check_passes_the_faithful_copy_and_rejects_each_bug(check, copy, bug):
    """bug=None: the copy passes (so the check is not merely strict); any bug: AssertionError."""
    impl = functools.partial(copy, bug=bug)
    if bug is None:
        check(impl)
    else:
        with pytest.raises(AssertionError):
            check(impl)


SET_CASES = [  # (name, check of step 4, bugs it must reject)
    ("oracle", oracles.check_set_similarity, [*SET_BUGS, "dense_grouping", "cosine_affinity"]),
    # P = 2 in the hand-worked case: dense and sparse grouping coincide, dot and cosine pick the same patch
    ("by_hand", by_hand.check_set_similarity_lambda_2, [*SET_BUGS, "class_token_kept"]),
]


@pytest.mark.parametrize(
    "check, bug",
    [pytest.param(check, bug, id=f"{name}-{bug}") for name, check, bugs in SET_CASES for bug in [None, *bugs]],
)
def test_set_similarity_check_rejects_each_bug(check, bug, monkeypatch):
    """Step 4 alone: S passed to the ranking cost must be the LSE-pooled, row-L2 S."""
    impl = functools.partial(efa_copy, bug=bug)
    if bug is None:
        check(impl, monkeypatch)
    else:
        with pytest.raises(AssertionError):
            check(impl, monkeypatch)
