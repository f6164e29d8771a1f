"""model.grad_checkpointing: activation checkpointing of both CLIP towers and the IRR
transformer gives the same losses and gradients, and is really active (each block's
forward runs again during the backward pass)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Dict

import pytest
import torch
from conftest import tiny_batch, tiny_config

from configs.loader import apply_overrides
from model.build import build_criterion, build_model

TRANSFORMERS = ("base_model.visual.transformer", "base_model.transformer", "cross_modal_transformer")


def _config(checkpointing: bool, share_masked_caption: bool = True):
    cfg = tiny_config()
    apply_overrides(cfg, [f"model.grad_checkpointing={str(checkpointing).lower()}"])
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, share_masked_caption=share_masked_caption))


def _step(model, cfg, batch):
    """Loss terms and every parameter's gradient of one fp32 training step."""
    model.train().zero_grad(set_to_none=True)
    terms, _ = build_criterion(cfg)(model(batch), batch)
    sum(terms.values()).backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    return {name: value.detach() for name, value in terms.items()}, grads


def block_calls(model, batch, cfg) -> Dict[str, Counter]:
    """Calls of each transformer's blocks, in the forward pass and in the backward pass."""
    phase, calls = ["forward"], {name: Counter() for name in TRANSFORMERS}
    hooks = []
    for name in TRANSFORMERS:
        for block in model.get_submodule(name).resblocks:
            # A pre-hook: non-reentrant checkpointing stops the recomputation once the last
            # saved tensor is rebuilt, so a block's post-forward hook does not run again.
            hooks.append(block.register_forward_pre_hook(lambda *_, name=name: calls[name].update([phase[0]])))
    try:
        model.train()
        terms, _ = build_criterion(cfg)(model(batch), batch)
        phase[0] = "backward"
        sum(terms.values()).backward()
    finally:
        for hook in hooks:
            hook.remove()
    return calls


def assert_checkpointing_active(model, batch, cfg) -> None:
    """Every block of every transformer is recomputed during backward: as many forward
    calls in the backward pass as in the forward pass."""
    calls = block_calls(model, batch, cfg)
    for name in TRANSFORMERS:
        layers = len(model.get_submodule(name).resblocks)
        assert calls[name]["forward"] == layers, (name, calls[name])
        assert calls[name]["backward"] == layers, f"{name}: blocks not recomputed in backward ({calls[name]})"


@pytest.mark.parametrize("share_masked_caption", [True, False])
def test_checkpointing_gives_the_same_losses_and_gradients(share_masked_caption):
    torch.manual_seed(0)
    plain_cfg, ckpt_cfg = _config(False, share_masked_caption), _config(True, share_masked_caption)
    plain = build_model(plain_cfg, num_classes=4)
    ckpt = build_model(ckpt_cfg, num_classes=4)
    ckpt.load_state_dict(plain.state_dict())
    batch = tiny_batch()
    assert not batch["images"].requires_grad  # the model's inputs: nothing upstream needs a gradient
    terms, grads = _step(plain, plain_cfg, batch)
    ckpt_terms, ckpt_grads = _step(ckpt, ckpt_cfg, batch)
    assert list(terms) == list(ckpt_terms) == ["a-sdm", "mlm", "id", "efa"]
    for name in terms:
        torch.testing.assert_close(ckpt_terms[name], terms[name], rtol=1e-6, atol=1e-7, msg=name)
    assert set(grads) == set(ckpt_grads)
    for name, grad in grads.items():
        torch.testing.assert_close(ckpt_grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    assert any(g.abs().sum() > 0 for name, g in ckpt_grads.items() if name.startswith("base_model.transformer."))


def test_the_flag_reaches_every_transformer_and_default_is_off():
    assert build_model(_config(False), 4).checkpointed_transformers() == dict.fromkeys(TRANSFORMERS, False)
    assert build_model(_config(True), 4).checkpointed_transformers() == dict.fromkeys(TRANSFORMERS, True)


def test_checkpointing_is_active_in_every_transformer():
    cfg = _config(True)
    assert_checkpointing_active(build_model(cfg, 4), tiny_batch(), cfg)
    plain = block_calls(build_model(_config(False), 4), tiny_batch(), cfg)
    assert all(plain[name]["backward"] == 0 for name in TRANSFORMERS), plain  # no recomputation by default


def test_the_activity_check_catches_a_tower_left_out():
    """Broken variant: checkpointing on the vision tower and the IRR transformer only (as
    ``CLIP.visual.set_grad_checkpointing`` alone would do); the check must fail on the text tower."""
    cfg = _config(False)
    model = build_model(cfg, 4)
    model.base_model.visual.set_grad_checkpointing(True)
    model.cross_modal_transformer.grad_checkpointing = True
    with pytest.raises(AssertionError, match="base_model.transformer: blocks not recomputed"):
        assert_checkpointing_active(model, tiny_batch(), cfg)
