"""Loss behaviour beyond the golden cases: blockwise EFA = the numpy oracle, options, errors."""

import numpy as np
import numpy_oracles as npo
import pytest
import torch

from configs.defaults import ASDM_MODES
from model import objectives
from model.max_similarity import max_dot_product


def _efa_inputs(batch=5, text_len=9, patches=12, dim=16, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    text = torch.randn(batch, text_len, dim, generator=gen, dtype=dtype).requires_grad_()
    image = torch.randn(batch, 1 + patches, dim, generator=gen, dtype=dtype).requires_grad_()
    return text, image


@pytest.mark.parametrize("block_elems", [1, 300, 1 << 20])
def test_blockwise_efa_equals_the_numpy_oracle(block_elems):
    """Any block size: docs/method.md's EFA (tests/numpy_oracles.py, float64, no code under test),
    gradients along random directions against the oracle's central differences."""
    text, image = _efa_inputs(dtype=torch.float64)
    ours = objectives.efa_loss(text, image, block_elems=block_elems)
    grads = torch.autograd.grad(ours, (text, image))
    arrays = (text.detach().numpy(), image.detach().numpy())
    np.testing.assert_allclose(ours.item(), npo.efa(*arrays), rtol=1e-10)
    rng = np.random.default_rng(block_elems)
    directions = [tuple(rng.normal(size=a.shape) for a in arrays) for _ in range(3)]
    expected = npo.directional_derivatives(npo.efa, arrays, directions)
    got = [sum(float((g.numpy() * d).sum()) for g, d in zip(grads, pair)) for pair in directions]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-8)
    single = objectives.efa_loss(*(x.detach().float() for x in (text, image)), block_elems=block_elems)
    np.testing.assert_allclose(single.item(), npo.efa(*arrays), rtol=1e-5)  # float32, as in training


def test_max_dot_product_gradients_match_finite_differences():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 5, generator=gen, dtype=torch.float64).requires_grad_()
    c = torch.randn(2, 6, 5, generator=gen, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: max_dot_product(a, b, block_elems=30), (x, c))


def test_max_dot_product_values_and_shape():
    x, c = torch.randn(3, 4, 5), torch.randn(2, 6, 5)
    expected = torch.einsum("ald,bkd->albk", x, c).amax(dim=-1)
    out = max_dot_product(x, c, block_elems=7)
    assert out.shape == (3, 4, 2)
    torch.testing.assert_close(out, expected)


def test_max_dot_product_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"expected x \[A, L, D\]"):
        max_dot_product(torch.randn(2, 3, 4), torch.randn(2, 3, 5))


def test_efa_lse_lambda_is_the_pooling_sharpness():
    text, image = _efa_inputs()
    sharp = objectives.efa_loss(text, image, lse_lambda=10.0)  # the earlier release: exp(max / 0.1)
    expected = npo.efa(text.detach().double().numpy(), image.detach().double().numpy(), lse_lambda=10.0)
    np.testing.assert_allclose(sharp.item(), expected, rtol=1e-5)
    assert not torch.isclose(sharp, objectives.efa_loss(text, image, lse_lambda=1.0))


def test_a_sdm_weights_at_least_one_so_a_sdm_is_not_below_sdm():
    gen = torch.Generator().manual_seed(2)
    image, text = torch.randn(8, 16, generator=gen), torch.randn(8, 16, generator=gen)
    pids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    sdm = objectives.sdm_loss(image, text, pids, 50.0)
    for mode in ASDM_MODES:
        asdm = objectives.sdm_loss(image, text, pids, 50.0, adaptive=True, adaptive_factor=10.0, adaptive_mode=mode)
        assert asdm > sdm
        same = objectives.sdm_loss(image, text, pids, 50.0, adaptive=True, adaptive_factor=0.0, adaptive_mode=mode)
        torch.testing.assert_close(same, sdm)


def test_a_sdm_unknown_mode_is_an_error_not_another_gap():
    """A config's asdm.mode is checked at load (tests/unit/test_config.py); called directly, the
    function has no fallback gap for a mode it does not know."""
    x = torch.randn(4, 8)
    with pytest.raises(KeyError, match="softmax"):
        objectives.sdm_loss(x, x, torch.arange(4), 50.0, adaptive=True, adaptive_mode="softmax")


def test_losses_are_scalars_and_finite():
    gen = torch.Generator().manual_seed(3)
    image, text = torch.randn(6, 16, generator=gen), torch.randn(6, 16, generator=gen)
    pids = torch.tensor([0, 1, 2, 0, 1, 2])
    logits = torch.randn(6, 3, generator=gen)
    values = [
        objectives.sdm_loss(image, text, pids, 50.0),
        objectives.itc_loss(image, text, 50.0),
        objectives.cmpm_loss(image, text, pids),
        objectives.id_loss(logits, logits, pids),
        objectives.mlm_loss(torch.randn(10, 7), torch.tensor([0, 3, 0, 0, 1, 0, 0, 0, 6, 0])),
    ]
    for value in values:
        assert value.dim() == 0 and torch.isfinite(value)
