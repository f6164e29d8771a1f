"""processor/precision.py: the dtype each mode actually computes in (seen from inside a
forward), the weights it keeps, and amp_fp16's loss scaler (the only mode with one)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_batch, tiny_config
from torch import nn

from model.build import build_model
from processor.precision import Precision

CPU = torch.device("cpu")
COMPUTE = {"fp32": torch.float32, "amp_bf16": torch.bfloat16, "amp_fp16": torch.float16, "pure_fp16": torch.float16}
WEIGHTS = {"fp32": torch.float32, "amp_bf16": torch.float32, "amp_fp16": torch.float32, "pure_fp16": torch.float16}


def _linear_dtypes(model: nn.Module, run) -> list:
    """(input dtype, weight dtype, output dtype) of every nn.Linear call during ``run()``."""
    seen = []
    hooks = [
        m.register_forward_hook(lambda mod, args, out: seen.append((args[0].dtype, mod.weight.dtype, out.dtype)))
        for m in model.modules()
        if isinstance(m, nn.Linear)
    ]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    return seen


@pytest.mark.parametrize("mode", list(COMPUTE))
def test_each_mode_computes_in_its_dtype_inside_the_forward(mode):
    """Every Linear of both towers outputs the mode's dtype under ``autocast()`` after
    ``prepare_model``; weights stay float32 except in pure_fp16 (LayerNorms float32 there)."""
    torch.manual_seed(0)
    precision = Precision(mode, CPU)
    model = precision.prepare_model(build_model(tiny_config(), num_classes=4)).eval()
    batch = tiny_batch(2)
    encoders = ((model.encode_image_tokens, batch["images"]), (model.encode_text_tokens, batch["caption_ids"]))
    for encode, inputs in encoders:
        with torch.no_grad(), precision.autocast():
            seen = _linear_dtypes(model, lambda: encode(inputs))
        assert seen, f"no nn.Linear ran in {encode.__name__}"
        assert {out for _, _, out in seen} == {COMPUTE[mode]}, (encode.__name__, seen)
        assert {weight for _, weight, _ in seen} == {WEIGHTS[mode]}
    layer_norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert layer_norms and all(m.weight.dtype == torch.float32 for m in layer_norms)


def test_outside_autocast_amp_modes_compute_in_float32():
    """The dtype comes from the context, not from the model: the same amp_fp16 model outside
    ``autocast()`` runs float32 (so the check above sees the context working)."""
    model = Precision("amp_fp16", CPU).prepare_model(build_model(tiny_config(), num_classes=4)).eval()
    with torch.no_grad():
        seen = _linear_dtypes(model, lambda: model.encode_image_tokens(tiny_batch(2)["images"]))
    assert seen and {out for _, _, out in seen} == {torch.float32}


@pytest.mark.parametrize("mode", ["fp32", "amp_bf16", "pure_fp16"])
def test_only_amp_fp16_has_a_loss_scaler(mode):
    """fp32 and bf16 need none; pure_fp16 reproduces the reference, which uses none."""
    assert Precision(mode, CPU).make_scaler() is None


def _scaled_step(precision, scaler, layer, optimizer, loss_factor):
    optimizer.zero_grad()
    with precision.autocast():
        out = layer(torch.ones(2, 4))
    assert out.dtype == torch.float16
    scaler.scale(out.float().sum() * loss_factor).backward()
    scaler.step(optimizer)
    scaler.update()


def test_amp_fp16_scaler_backs_off_on_overflow_and_keeps_its_scale_otherwise():
    """A loss whose scaled gradient exceeds fp16's range (1e6 x 65536 > 65504) gives inf
    gradients: the step is skipped and the scale halves; a finite step updates the weights
    and leaves the scale as it is (growth only after 2000 clean steps)."""
    precision = Precision("amp_fp16", CPU)
    scaler = precision.make_scaler()
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()
    torch.manual_seed(0)
    layer = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    start, before = scaler.get_scale(), layer.weight.detach().clone()
    _scaled_step(precision, scaler, layer, optimizer, loss_factor=1e6)
    assert not torch.isfinite(layer.weight.grad).all()  # the overflow did happen
    assert torch.equal(layer.weight, before)  # step skipped
    backed_off = scaler.get_scale()
    assert backed_off == start * 0.5
    _scaled_step(precision, scaler, layer, optimizer, loss_factor=1e-2)
    assert torch.isfinite(layer.weight.grad).all()
    assert scaler.get_scale() == backed_off
    # SGD on the unscaled gradient: d(0.01 sum over 2 rows of W x + b) / dW = 0.02 for x = ones.
    torch.testing.assert_close(layer.weight.detach(), before - 0.1 * 0.02, rtol=0, atol=1e-6)


def test_an_unknown_mode_is_refused_when_built():
    with pytest.raises(ValueError, match="train.precision='fp8'; expected one of fp32, amp_bf16"):
        Precision("fp8", torch.device("cpu"))
