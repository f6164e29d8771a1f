"""Closed-form and numpy (float64) oracles for every loss of docs/method.md ("Losses").

Expected values come from tests/numpy_oracles.py (written from docs/method.md, never calling the
code under test) or are worked by hand in the comments. Each ``check_*`` takes the
implementation to judge, so tests/parity/test_oracle_mutants.py can show that deliberately
broken copies fail the very same checks.
"""

from __future__ import annotations

import numpy as np
import numpy_oracles as npo
import pytest
import torch

from model import objectives

PIDS = np.array([0, 1, 0, 2])  # sample 2 shares sample 0's identity: its g_i (= 0) is not i
RTOL = 1e-7  # float64 inputs; the code builds q in float32 (0.5 and 1 are exact there)


def _t(x, grad=False):
    return torch.tensor(x, dtype=torch.float64, requires_grad=grad)


def _features(seed, b=4, d=3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(b, d)), rng.normal(size=(b, d))


def _finite_difference_grads(fn, image, text, h=1e-6):
    """Numpy central differences of fn(image, text) for every entry of both inputs."""
    grads = []
    for which in range(2):
        grad = np.zeros_like((image, text)[which])
        for index in np.ndindex(grad.shape):
            step = np.zeros_like(grad)
            step[index] = h
            args_plus = [image + step, text] if which == 0 else [image, text + step]
            args_minus = [image - step, text] if which == 0 else [image, text - step]
            grad[index] = (fn(*args_plus) - fn(*args_minus)) / (2 * h)
        grads.append(grad)
    return grads


def _check_value_and_grads(impl_call, oracle_call, seeds=(0, 1, 2)):
    for seed in seeds:
        image, text = _features(seed)
        ti, tt = _t(image, True), _t(text, True)
        loss = impl_call(ti, tt)
        np.testing.assert_allclose(loss.item(), oracle_call(image, text), rtol=RTOL, err_msg=f"seed {seed}")
        got = torch.autograd.grad(loss, (ti, tt))
        for g, expected in zip(got, _finite_difference_grads(oracle_call, image, text)):
            np.testing.assert_allclose(g.numpy(), expected, rtol=1e-5, atol=1e-7, err_msg=f"grad, seed {seed}")


# ---- global losses ---------------------------------------------------------------------------


def check_sdm(impl):
    for scale in (5.0, 50.0):
        _check_value_and_grads(
            lambda i, t: impl(i, t, torch.tensor(PIDS), scale), lambda i, t: npo.sdm(i, t, PIDS, scale)
        )


def check_asdm(impl, mode):
    for factor in (0.1, 2.0):
        _check_value_and_grads(
            lambda i, t: impl(i, t, torch.tensor(PIDS), 5.0, adaptive=True, adaptive_factor=factor, adaptive_mode=mode),
            lambda i, t: npo.sdm(i, t, PIDS, 5.0, mode=mode, factor=factor),
        )


def check_itc(impl):
    _check_value_and_grads(lambda i, t: impl(i, t, 5.0), lambda i, t: npo.itc(i, t, 5.0))


def check_cmpm(impl):
    _check_value_and_grads(lambda i, t: impl(i, t, torch.tensor(PIDS)), lambda i, t: npo.cmpm(i, t, PIDS))


def check_id(impl):
    rng = np.random.default_rng(3)
    image, text = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    expected = (npo.cross_entropy(image, PIDS) + npo.cross_entropy(text, PIDS)) / 2
    np.testing.assert_allclose(impl(_t(image), _t(text), torch.tensor(PIDS)).item(), expected, rtol=1e-12)


def check_mlm(impl):
    # By hand, 3 classes: row 0 has label 0 (ignored); row 1 = [0, 0, 0], label 2 -> CE = ln 3;
    # row 2 = [0, ln 2, 0], label 1 -> p = 2 / 4 -> CE = ln 2. Mean over the 2 targets = ln(6) / 2.
    scores = _t([[5.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, np.log(2.0), 0.0]])
    np.testing.assert_allclose(impl(scores, torch.tensor([0, 2, 1])).item(), np.log(6.0) / 2, rtol=1e-12)
    rng = np.random.default_rng(4)
    scores, labels = rng.normal(size=(7, 5)), np.array([0, 3, 0, 4, 1, 0, 2])
    kept = labels > 0
    np.testing.assert_allclose(
        impl(_t(scores), torch.tensor(labels)).item(), npo.cross_entropy(scores[kept], labels[kept]), rtol=1e-12
    )


def test_sdm_hand_worked():
    """s = ln 3, texts = images = I (2 x 2), distinct ids: each row's p = [3/4, 1/4], q = [1, 0];
    KL = 3/4 ln(3/4 / (1 + 1e-8)) + 1/4 ln(1/4 / 1e-8) = 4.042835033869284 per row, so SDM =
    2 directions x mean over rows = 8.085670067738567."""
    eye = _t(np.eye(2))
    loss = objectives.sdm_loss(eye, eye, torch.tensor([0, 1]), float(np.log(3.0)))
    np.testing.assert_allclose(loss.item(), 8.085670067738567, rtol=1e-7)


@pytest.mark.parametrize("mode, weight", [(None, 1.0), ("cosine", 1.1), ("probability", 1.05)])
def test_asdm_hand_worked(mode, weight):
    """s = ln 3, images = I, texts = [[0, 1], [1, 0]], ids [0, 1]: every row's most similar
    column is the wrong one (m_i != g_i = i). Row p = [1/4, 3/4] around the match, KL =
    1/4 ln(1/4 / (1 + 1e-8)) + 3/4 ln(3/4 / 1e-8) = 13.253175410845465; SDM = 2 KL.
    cosine: w = 1 + 0.1 (cos 1 - cos 0) = 1.1; probability: w = 1 + 0.1 (3/4 - 1/4) = 1.05."""
    image, text = _t(np.eye(2)), _t([[0.0, 1.0], [1.0, 0.0]])
    kwargs = {} if mode is None else dict(adaptive=True, adaptive_factor=0.1, adaptive_mode=mode)
    loss = objectives.sdm_loss(image, text, torch.tensor([0, 1]), float(np.log(3.0)), **kwargs)
    np.testing.assert_allclose(loss.item(), weight * 2 * 13.253175410845465, rtol=1e-7)


def test_sdm_matches_the_numpy_oracle_values_and_gradients():
    """SDM (both directions, q = identity mask / count) and its autograd gradient."""
    check_sdm(objectives.sdm_loss)


@pytest.mark.parametrize("mode", ["cosine", "probability"])
def test_asdm_matches_the_numpy_oracle_values_and_gradients(mode):
    """A-SDM's row weights per mode; the gradient includes the (not detached) weight."""
    check_asdm(objectives.sdm_loss, mode)


def test_oracle_cases_tell_the_modes_apart():
    """The cases used above give different values for SDM, cosine A-SDM and probability A-SDM
    (so a mode mix-up cannot pass), and row 2 (g = 0) makes the diagonal matter."""
    for seed in (0, 1, 2):
        image, text = _features(seed)
        values = [npo.sdm(image, text, PIDS, 5.0, mode=m, factor=0.1) for m in (None, "cosine", "probability")]
        assert min(
            abs(a - b) for a, b in [(values[0], values[1]), (values[0], values[2]), (values[1], values[2])]
        ) > 1e-4 * abs(values[0])


def test_itc_cmpm_id_mlm_match_their_oracles():
    """ITC (symmetric InfoNCE), CMPM (IRRA), ID (mean of two CEs), MLM (label 0 ignored)."""
    check_itc(objectives.itc_loss)
    check_cmpm(objectives.cmpm_loss)
    check_id(objectives.id_loss)
    check_mlm(objectives.mlm_loss)


# ---- EFA, step by step ----------------------------------------------------------------------


def _efa_tokens(seed, b=3, length=4, patches=5, dim=3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(b, length, dim)), rng.normal(size=(b, 1 + patches, dim))


# Hand-worked steps 1-3 (B = 1, L = 2, P = 4, threshold 1/4):
#   T = [[1, 0], [0, 1]], V = [[0, 0], [1, 0], [4, 1], [2, 3]]
#   A = T V^T = [[0, 1, 4, 2], [0, 0, 1, 3]]; min-max -> [[0, .25, 1, .5], [0, 0, 1/3, 1]]
#   zero entries <= 1/4 (0.25 itself included) -> [[0, 0, 1, .5], [0, 0, 1/3, 1]]
#   divide by row sums 1.5 and 4/3 -> [[0, 0, 2/3, 1/3], [0, 0, 1/4, 3/4]]
#   G = A V = [[2/3 (4, 1) + 1/3 (2, 3)], [1/4 (4, 1) + 3/4 (2, 3)]] = [[10/3, 5/3], [5/2, 5/2]]
HAND_T, HAND_V = [[[1.0, 0.0], [0.0, 1.0]]], [[[0.0, 0.0], [1.0, 0.0], [4.0, 1.0], [2.0, 3.0]]]
HAND_DENSE = [[[0, 0.25, 1, 0.5], [0, 0, 1 / 3, 1]]]
HAND_SPARSE = [[[0, 0, 2 / 3, 1 / 3], [0, 0, 0.25, 0.75]]]
HAND_G = [[[10 / 3, 5 / 3], [2.5, 2.5]]]


def check_affinity(impl):
    dense, sparse = impl(_t(HAND_T), _t(HAND_V), threshold=1.0)
    np.testing.assert_allclose(dense.numpy(), HAND_DENSE, atol=1e-12)
    np.testing.assert_allclose(sparse.numpy(), HAND_SPARSE, atol=1e-12)
    for seed in (0, 1):
        text, image = _efa_tokens(seed)
        patches = image[:, 1:]
        expected_dense = npo.row_min_max(npo.affinity(text, patches))
        for threshold in (1.0, 2.0):
            dense, sparse = impl(_t(text), _t(patches), threshold=threshold)
            np.testing.assert_allclose(dense.numpy(), expected_dense, rtol=1e-10, atol=1e-12)
            expected = npo.row_normalise(npo.sparsify(expected_dense, threshold))
            np.testing.assert_allclose(sparse.numpy(), expected, rtol=1e-10, atol=1e-12)


def check_grouping(impl):
    np.testing.assert_allclose(impl(_t(HAND_T), _t(HAND_V), threshold=1.0).numpy(), HAND_G, rtol=1e-12)
    text, image = _efa_tokens(2)
    for threshold in (1.0, 2.0):
        np.testing.assert_allclose(
            impl(_t(text), _t(image[:, 1:]), threshold=threshold).numpy(),
            npo.grouped(text, image[:, 1:], threshold),
            rtol=1e-10,
        )


def check_ranking(impl):
    # By hand, S = [[1, .5], [.2, .8]], m = .1 (diagonal terms 0):
    #   R1 = S[a,b] - S[a,a] + m: R1[0,1] = -.4, R1[1,0] = -.5; columns: ln(1+e^-.5) = .4740769841801067,
    #   ln(1+e^-.4) = .5130152523999526 -> mean .4935461182900297
    #   R2 = S[a,b] - S[b,b] + m: R2[0,1] = -.2, R2[1,0] = -.7; ln(1+e^-.7) = .40318604888545784,
    #   ln(1+e^-.2) = .5981388693815918 -> mean .5006624591335248; total .9942085774235545
    np.testing.assert_allclose(impl(_t([[1.0, 0.5], [0.2, 0.8]]), 0.1).item(), 0.9942085774235545, rtol=1e-12)
    rng = np.random.default_rng(5)
    for size in (3, 4):
        sims = rng.normal(size=(size, size))
        for margin in (0.1, 0.9):
            np.testing.assert_allclose(impl(_t(sims), margin).item(), npo.ranking_cost(sims, margin), rtol=1e-12)


def check_set_similarity(efa_impl, monkeypatch):
    """Step 4 as seen by step 5: the [B, B] matrices efa hands to ``objectives._ranking_cost``."""
    seen = []
    real = objectives._ranking_cost
    monkeypatch.setattr(
        objectives, "_ranking_cost", lambda s, m, *share: seen.append((s.detach().numpy(), m)) or real(s, m, *share)
    )
    text, image = _efa_tokens(3)
    for lse_lambda, threshold in ((1.0, 1.0), (3.0, 2.0)):
        seen.clear()
        efa_impl(_t(text), _t(image), text_margin=0.2, image_margin=0.7, lse_lambda=lse_lambda, threshold=threshold)
        g = npo.grouped(text, image[:, 1:], threshold)
        assert [m for _, m in seen] == [0.2, 0.7], "one ranking cost per pair (T, G) then (V, G)"
        np.testing.assert_allclose(seen[0][0], npo.set_similarity(text, g, lse_lambda), rtol=1e-10)
        np.testing.assert_allclose(seen[1][0], npo.set_similarity(image[:, 1:], g, lse_lambda), rtol=1e-10)


EFA_SETTINGS = [
    dict(text_margin=0.1, image_margin=0.9, lse_lambda=1.0, threshold=1.0),
    dict(text_margin=0.3, image_margin=0.05, lse_lambda=4.0, threshold=1.5),
]


def check_efa(impl):
    for seed, settings in enumerate(EFA_SETTINGS):
        text, image = _efa_tokens(10 + seed)
        tt, ti = _t(text, True), _t(image, True)
        loss = impl(tt, ti, **settings)
        np.testing.assert_allclose(loss.item(), npo.efa(text, image, **settings), rtol=1e-10)
        grads = torch.autograd.grad(loss, (tt, ti))
        rng = np.random.default_rng(seed)
        directions = [(rng.normal(size=text.shape), rng.normal(size=image.shape)) for _ in range(3)]
        expected = npo.directional_derivatives(lambda t, i: npo.efa(t, i, **settings), (text, image), directions)
        got = [sum(float((g.numpy() * d).sum()) for g, d in zip(grads, pair)) for pair in directions]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-8)


def test_efa_steps_1_2_affinity_min_max_threshold_and_row_sums():
    """T V^T, row min-max, zero at or below threshold / P, rows summing to 1."""
    check_affinity(objectives.text_patch_affinity)


def test_efa_step_3_language_grouped_vision():
    """G = A V with the sparse row-normalised A."""
    check_grouping(objectives.language_grouped_vision)


def test_efa_step_4_set_similarity_with_lse_pooling(monkeypatch):
    """(1/lambda) log sum_x exp(lambda max_y cos), rows L2-normalised, for (T, G) and (V, G)."""
    check_set_similarity(objectives.efa_loss, monkeypatch)


def test_efa_step_5_ranking_cost():
    """Diagonal terms 0, LSE over the row index a per column b, mean over b, R1 + R2."""
    check_ranking(objectives._ranking_cost)


def test_efa_whole_loss_values_and_gradients():
    """pair(T, G, text_margin) + pair(V, G, image_margin), class token dropped; gradient
    along random directions against numpy central differences."""
    check_efa(objectives.efa_loss)
