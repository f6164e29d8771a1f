"""Every loss and its gradients against the reference's recorded values (golden/losses.pt)."""

import pytest
from conftest import assert_rel_close, load_golden

from model import objectives

CASES = range(6)


@pytest.fixture(scope="module")
def cases(golden):
    return load_golden(golden, "losses.pt")


def _check(loss, expected, grads, expected_grads):
    assert_rel_close(loss, expected)
    for grad, exp in zip(grads, expected_grads):
        assert_rel_close(grad, exp)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", ["sdm", "a_sdm", "itc", "cmpm"])
def test_global_losses(cases, case, name):
    c = cases[case]
    image = c["image_feats"].clone().requires_grad_()
    text = c["text_feats"].clone().requires_grad_()
    if name == "itc":
        loss = objectives.itc_loss(image, text, c["logit_scale"])
    elif name == "cmpm":
        loss = objectives.cmpm_loss(image, text, c["pids"])
    else:  # A-SDM at the code's HEAD setting: factor 0.1, cosine gap, weight not detached
        loss = objectives.sdm_loss(
            image,
            text,
            c["pids"],
            c["logit_scale"],
            adaptive=name == "a_sdm",
            adaptive_factor=0.1,
            adaptive_mode="cosine",
        )
    loss.backward()
    _check(loss, c[name], (image.grad, text.grad), (c[f"{name}_grad_image"], c[f"{name}_grad_text"]))


@pytest.mark.parametrize("case", CASES)
def test_id_loss(cases, case):
    c = cases[case]
    image = c["image_logits"].clone().requires_grad_()
    text = c["text_logits"].clone().requires_grad_()
    loss = objectives.id_loss(image, text, c["pids"])
    loss.backward()
    _check(loss, c["id"], (image.grad, text.grad), (c["id_grad_image_logits"], c["id_grad_text_logits"]))


@pytest.mark.parametrize("case", CASES)
def test_mlm_loss(cases, case):
    c = cases[case]
    scores = c["mlm_scores"].clone().requires_grad_()
    loss = objectives.mlm_loss(scores, c["mlm_labels"])
    loss.backward()
    _check(loss, c["mlm"], (scores.grad,), (c["mlm_grad_scores"],))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("block_elems", [1 << 22, 4096])  # one block, and many small blocks
def test_efa_loss(cases, case, block_elems):
    c = cases[case]
    text = c["text_tokens"].clone().requires_grad_()
    image = c["image_tokens"].clone().requires_grad_()
    loss = objectives.efa_loss(
        text, image, text_margin=0.1, image_margin=0.9, lse_lambda=1.0, threshold=1.0, block_elems=block_elems
    )
    loss.backward()
    _check(loss, c["efa"], (text.grad, image.grad), (c["efa_grad_text_tokens"], c["efa_grad_image_tokens"]))
