"""Loss cases worked by hand (docs/method.md, "Losses"), each chosen so that a plausible
misreading of the definition gives a different number: a shared identity whose first batch
index is not the row's own (A-SDM), LSE pooling with lambda = 2 (EFA step 4) and an asymmetric
3 x 3 ranking (EFA step 5). As in tests/parity/test_oracles.py, each ``check_*`` takes the
implementation to judge, so tests/parity/test_oracle_mutants.py can show broken copies fail it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model import objectives

EPS = 1e-8


def _t(x):
    return torch.tensor(x, dtype=torch.float64)


def _kl(p, q):
    """sum_j p_j ln(p_j / (q_j + 1e-8)), p and q written out below as fractions."""
    return sum(pj * math.log(pj / (qj + EPS)) for pj, qj in zip(p, q))


# ---- A-SDM, ids [0, 1, 0]: row 2's first same-identity index is g_2 = 0, not 2 ---------------
# texts [[5, 0, 0], [3, 0, 4], [0, 4, 3]] (norms 5), images 2 I: c = norm(t) norm(v)^T (rows texts)
#   = [[1, 0, 0], [.6, 0, .8], [0, .8, .6]]; with s = 5 ln 2, exp(s c) = 2^(5c) in {1, 8, 16, 32}.
# q rows (same id / count): [1/2, 0, 1/2], [0, 1, 0], [1/2, 0, 1/2]; so g = [0, 1, 0].
# t2i (rows c):    [1, 0, 0]  -> 32, 1, 1  -> p = [32, 1, 1]/34,  m = 0 = g
#                  [.6, 0, .8] -> 8, 1, 16 -> p = [8, 1, 16]/25,  m = 2, g = 1
#                  [0, .8, .6] -> 1, 16, 8 -> p = [1, 16, 8]/25,  m = 1, g = 0
# i2t (rows c^T):  [1, .6, 0] -> 32, 8, 1  -> p = [32, 8, 1]/41,  m = 0 = g
#                  [0, 0, .8]  -> 1, 1, 16 -> p = [1, 1, 16]/18,  m = 2, g = 1
#                  [0, .8, .6] -> 1, 16, 8 -> p = [1, 16, 8]/25,  m = 1, g = 0
# cosine mode, factor 1/2: rows 1 and 2 of both directions w = 1 + (c[i,m] - c[i,g])/2 = 1 + .8/2
#   = 1.4 (row 2: .8 - c[2,0] = .8 - 0; with g_2 taken as 2 it would be .8 - .6 -> 1.1); row 0: 1.
# probability mode, factor 1/2: w = 1 + (max_k p_ik - p_ii)/2: t2i [1, 1 + (16-1)/50, 1 + (16-8)/50],
#   i2t [1, 1 + (16-1)/36, 1 + (16-8)/50] (row 2 with p_i,g_i = p_20 instead: 1 + (16-1)/50).
ASDM_TEXTS, ASDM_IMAGES = [[5.0, 0, 0], [3, 0, 4], [0, 4, 3]], [[2.0, 0, 0], [0, 2, 0], [0, 0, 2]]
ASDM_PIDS = [0, 1, 0]
HALF, ONE = [0.5, 0, 0.5], [0, 1, 0]  # q rows
ASDM_ROWS = {  # direction -> [(p, q)] per row
    "t2i": [([32 / 34, 1 / 34, 1 / 34], HALF), ([8 / 25, 1 / 25, 16 / 25], ONE), ([1 / 25, 16 / 25, 8 / 25], HALF)],
    "i2t": [([32 / 41, 8 / 41, 1 / 41], HALF), ([1 / 18, 1 / 18, 16 / 18], ONE), ([1 / 25, 16 / 25, 8 / 25], HALF)],
}
ASDM_WEIGHTS = {
    None: {"t2i": [1, 1, 1], "i2t": [1, 1, 1]},
    "cosine": {"t2i": [1, 1.4, 1.4], "i2t": [1, 1.4, 1.4]},
    "probability": {"t2i": [1, 1 + 15 / 50, 1 + 8 / 50], "i2t": [1, 1 + 15 / 36, 1 + 8 / 50]},
}
# What a row-2 weight built on g_2 = 2 (the diagonal) would give instead, per mode.
ASDM_WEIGHTS_IF_G_WERE_I = {"cosine": 1 + 0.2 / 2, "probability": 1 + 15 / 50}


def _asdm_by_hand(weights):
    return sum(sum(w * _kl(p, q) for w, (p, q) in zip(weights[d], ASDM_ROWS[d])) / 3 for d in ("t2i", "i2t"))


def check_asdm_shared_identity(impl, mode):
    loss = impl(
        _t(ASDM_IMAGES),
        _t(ASDM_TEXTS),
        torch.tensor(ASDM_PIDS),
        5 * math.log(2.0),
        adaptive=mode is not None,
        adaptive_factor=0.5,
        adaptive_mode=mode or "cosine",
    )
    # rtol 1e-7: the code may build q in float32, which moves ln(1e-8) in the 8th digit
    np.testing.assert_allclose(loss.item(), _asdm_by_hand(ASDM_WEIGHTS[mode]), rtol=1e-7)


@pytest.mark.parametrize("mode", [None, "cosine", "probability"])
def test_asdm_shared_identity_hand_worked(mode):
    """SDM, cosine A-SDM (authors' code) and probability A-SDM (paper) on ids [0, 1, 0]."""
    check_asdm_shared_identity(objectives.sdm_loss, mode)


@pytest.mark.parametrize("mode", ["cosine", "probability"])
def test_asdm_shared_identity_case_depends_on_g(mode):
    """The case discriminates: taking g_2 = 2 (or p_20 for p_22) would move the loss, and the
    three settings give three different losses."""
    expected = _asdm_by_hand(ASDM_WEIGHTS[mode])
    for direction in ("t2i", "i2t"):
        moved = {d: list(w) for d, w in ASDM_WEIGHTS[mode].items()}
        moved[direction][2] = ASDM_WEIGHTS_IF_G_WERE_I[mode]
        assert abs(_asdm_by_hand(moved) - expected) > 1e-3 * expected
    values = sorted(_asdm_by_hand(ASDM_WEIGHTS[m]) for m in (None, "cosine", "probability"))
    assert values[1] - values[0] > 1e-3 * values[0] and values[2] - values[1] > 1e-3 * values[0]


# ---- EFA step 4, lambda = 2 -----------------------------------------------------------------
# B = 2, L = 2 text tokens, P = 2 patches (+ a class token that must be dropped), D = 2.
#   T_0 = [(1, 0), (0, 1)], V_0 = [(1, 0), (0, 1)];  T_1 = [(.6, .8), (.8, .6)], V_1 = [(.6, .8), (.8, -.6)]
# Steps 1-3: with P = 2 each row's min-max is [1, 0] or [0, 1] and the 0 (<= 1/2) is zeroed, so
#   each text token takes its best patch: G_0 = [(1, 0), (0, 1)] (dots 1 vs 0 twice),
#   G_1 = [(.6, .8), (.6, .8)] ((.6, .8): 1 vs 0; (.8, .6): .96 vs .28).
# Step 4, S[a, b] = 1/2 ln sum_x exp(2 max_y cos(x, y)); best cosines per x of a against G_b:
#   (T, G): S[0,0]: 1, 1 -> 1 + ln(2)/2;   S[0,1]: .6, .8 -> ln(e^1.2 + e^1.6)/2
#           S[1,0]: .8, .8 -> .8 + ln(2)/2; S[1,1]: 1, .96 -> ln(e^2 + e^1.92)/2
#   (V, G): as (T, G) but S[1,1]: (.6, .8) -> 1, (.8, -.6) -> 0: ln(e^2 + 1)/2
# then every row divided by its L2 norm.
EFA_TEXT = [[[1.0, 0.0], [0.0, 1.0]], [[0.6, 0.8], [0.8, 0.6]]]
EFA_IMAGE = [[[5.0, -3.0], [1.0, 0.0], [0.0, 1.0]], [[5.0, -3.0], [0.6, 0.8], [0.8, -0.6]]]
HALF_LN2 = math.log(2.0) / 2
S_TEXT = [
    [1 + HALF_LN2, math.log(math.exp(1.2) + math.exp(1.6)) / 2],
    [0.8 + HALF_LN2, math.log(math.exp(2.0) + math.exp(1.92)) / 2],
]
S_IMAGE = [S_TEXT[0], [0.8 + HALF_LN2, math.log(math.exp(2.0) + 1.0) / 2]]


def _rows_l2(s):
    return [[v / math.hypot(*row) for v in row] for row in s]


def check_set_similarity_lambda_2(efa_impl, monkeypatch):
    """The [B, B] matrices efa hands to ``objectives._ranking_cost``: (T, G) then (V, G)."""
    seen = []
    real = objectives._ranking_cost
    monkeypatch.setattr(
        objectives, "_ranking_cost", lambda s, m, *share: seen.append((s.detach().numpy(), m)) or real(s, m, *share)
    )
    efa_impl(_t(EFA_TEXT), _t(EFA_IMAGE), text_margin=0.2, image_margin=0.7, lse_lambda=2.0, threshold=1.0)
    assert [m for _, m in seen] == [0.2, 0.7], "one ranking cost per pair (T, G) then (V, G)"
    np.testing.assert_allclose(seen[0][0], _rows_l2(S_TEXT), rtol=1e-12)
    np.testing.assert_allclose(seen[1][0], _rows_l2(S_IMAGE), rtol=1e-12)


def test_efa_step_4_set_similarity_lambda_2_hand_worked(monkeypatch):
    check_set_similarity_lambda_2(objectives.efa_loss, monkeypatch)


def test_efa_lambda_2_case_differs_from_lambda_1():
    """With lambda = 1 the row-normalised S would differ (so a lambda that is ignored fails)."""
    lambda_1 = [
        [1 + math.log(2.0), math.log(math.exp(0.6) + math.exp(0.8))],
        [0.8 + math.log(2.0), math.log(math.exp(1.0) + math.exp(0.96))],
    ]
    assert np.abs(np.array(_rows_l2(lambda_1)) - _rows_l2(S_TEXT)).max() > 1e-3


# ---- EFA step 5, asymmetric 3 x 3 -----------------------------------------------------------
# S = ln X with X = [[1, 2, 1], [1, 2, 4], [2, 1, 4]], m = ln 2, so exp(R) are ratios times 2:
#   exp R1[a, b] = 2 X[a,b] / X[a,a]:  [[., 4, 2], [1, ., 4], [1, .5, .]]  (diagonal: exp 0 = 1)
#   exp R2[a, b] = 2 X[a,b] / X[b,b]:  [[., 2, .5], [2, ., 2], [4, 1, .]]
# LSE over a (down each column b): R1 columns 1 + 1 + 1 = 3, 4 + 1 + .5 = 5.5, 2 + 4 + 1 = 7;
#   R2 columns 1 + 2 + 4 = 7, 2 + 1 + 1 = 4, .5 + 2 + 1 = 3.5. Mean over b, R1 + R2:
#   (ln 3 + ln 5.5 + ln 7 + ln 7 + ln 4 + ln 3.5) / 3 = ln(11319) / 3 = 3.1114126695441...
# LSE over b instead (along each row a): R1 rows 7, 6, 2.5; R2 rows 3.5, 5, 6 -> ln(11025) / 3.
RANK_X = [[1.0, 2.0, 1.0], [1.0, 2.0, 4.0], [2.0, 1.0, 4.0]]
RANK_MARGIN = math.log(2.0)
RANK_COST = math.log(11319.0) / 3
RANK_COST_OTHER_AXIS = math.log(11025.0) / 3


def check_ranking_asymmetric(impl):
    np.testing.assert_allclose(impl(_t(np.log(RANK_X)), RANK_MARGIN).item(), RANK_COST, rtol=1e-12)


def test_efa_step_5_asymmetric_ranking_hand_worked():
    check_ranking_asymmetric(objectives._ranking_cost)


def test_asymmetric_ranking_case_tells_the_axes_apart():
    """The other axis gives ln(11025)/3: 0.0088 away, far beyond the check's rtol 1e-12; the
    column products written out above are recomputed here from X to guard the working."""
    x, e = np.array(RANK_X), math.exp(RANK_MARGIN)
    off = ~np.eye(3, dtype=bool)
    r1, r2 = np.where(off, e * x / np.diag(x)[:, None], 1.0), np.where(off, e * x / np.diag(x)[None, :], 1.0)
    assert math.isclose((np.log(r1.sum(0)).sum() + np.log(r2.sum(0)).sum()) / 3, RANK_COST, rel_tol=1e-12)
    assert math.isclose((np.log(r1.sum(1)).sum() + np.log(r2.sum(1)).sum()) / 3, RANK_COST_OTHER_AXIS, rel_tol=1e-12)
    assert abs(RANK_COST - RANK_COST_OTHER_AXIS) > 1e-3 > 1e-12 * RANK_COST
