"""The numbers each precision mode gives for one training step's losses, on the CPU.

One tiny model (tests/conftest.py's ``tiny_config``, the paper's losses a-sdm+mlm+id+efa),
one fixed batch, the same starting weights in every mode; the step is taken as
``processor.epoch_loop.train_one_epoch`` takes it: ``Precision(mode).prepare_model(model)``,
then ``criterion(model(batch), batch)`` under ``Precision(mode).autocast()``. Checked:

- every loss term is a float32 scalar, whatever dtype the network ran in;
- each term equals a float64 recomputation from the same model outputs (the outputs cast to
  float64, the pure functions of ``model.objectives``), within float32 rounding;
- the low-precision modes stay within a stated distance of fp32;
- the float64 check bites: a copy of ``FMFALoss.__call__`` with its float32 cast removed
  (built here from the real source, model/loss.py untouched) fails it.

CPU half precision: torch 2.14's CPU kernels run float16 and bfloat16 matmuls, softmax and
layer norms, so all four modes run here as they would on a GPU (values differ by rounding).
"""

from __future__ import annotations

import inspect
import re
import textwrap
from typing import Dict, Tuple

import pytest
import torch
from conftest import tiny_batch, tiny_config

import model.loss as loss_module
from model import objectives
from model.build import build_criterion, build_model
from model.loss import FMFALoss
from processor.precision import Precision

CPU = torch.device("cpu")
MODES = ("fp32", "amp_bf16", "amp_fp16", "pure_fp16")
# The dtype of the towers' token outputs in each mode (what reaches the criterion).
NETWORK_DTYPE = {
    "fp32": torch.float32,
    "amp_bf16": torch.bfloat16,
    "amp_fp16": torch.float16,
    "pure_fp16": torch.float16,
}
NUM_CLASSES = 4  # tiny_batch's identities are 0..3

# (b) float32 scoring versus float64 on the same outputs. Measured relative differences
# (|float32 - float64| / |float64|, largest over the four terms): fp32 2.6e-8,
# amp_bf16 9.9e-8, amp_fp16 8.6e-8, pure_fp16 1.1e-7 (EFA). 1e-5 leaves ~100x headroom,
# and is the golden tests' criterion for float32 rounding.
FLOAT64_RTOL = 1e-5

# (c) one step's terms in each mode against fp32's, relative to fp32's value. Measured
# (a-sdm / mlm / id / efa):
#   amp_bf16  3.7e-3 / 9.2e-6 / 3.3e-6 / 6.4e-6   (bfloat16's 8-bit mantissa, amplified by s = 50 in A-SDM)
#   amp_fp16  7.5e-5 / 2.9e-5 / 1.7e-7 / 1.1e-7
#   pure_fp16 8.0e-5 / 2.4e-5 / 1.4e-6 / 5.4e-7
# Tolerances: about 5x the largest measured figure of the mode.
VERSUS_FP32_RTOL = {"amp_bf16": 2e-2, "amp_fp16": 5e-4, "pure_fp16": 5e-4}

Tensors = Dict[str, torch.Tensor]


@pytest.fixture(scope="module")
def start():
    """(config, starting weights, batch) shared by every mode."""
    torch.manual_seed(0)
    cfg = tiny_config()
    weights = {k: v.clone() for k, v in build_model(cfg, NUM_CLASSES).state_dict().items()}
    return cfg, weights, tiny_batch(6)


def one_step(mode: str, start, criterion: FMFALoss | None = None) -> Tuple[Tensors, Tensors]:
    """(model outputs, loss terms) of one training-mode forward in ``mode``, as the trainer runs it."""
    cfg, weights, batch = start
    precision = Precision(mode, CPU)
    model = build_model(cfg, NUM_CLASSES)
    model.load_state_dict(weights)
    model = precision.prepare_model(model).train()
    criterion = criterion or build_criterion(cfg)
    torch.manual_seed(1)
    with precision.autocast():
        outputs = model(batch)
        terms, _ = criterion(outputs, batch)
    return outputs, terms


@pytest.fixture(scope="module")
def steps(start) -> Dict[str, Tuple[Tensors, Tensors]]:
    return {mode: one_step(mode, start) for mode in MODES}


def float64_terms(outputs: Tensors, batch: Tensors, criterion: FMFALoss) -> Dict[str, torch.Tensor]:
    """The weighted terms recomputed in float64 from ``outputs`` by the pure loss functions,
    with the criterion's settings (scale, A-SDM factor and mode, EFA margins)."""
    out = {k: v.detach().double() if v.is_floating_point() else v for k, v in outputs.items()}
    pids, efa, asdm = batch["pids"], criterion.efa, criterion.asdm
    values = {
        "a-sdm": objectives.sdm_loss(
            out["image_feats"],
            out["text_feats"],
            pids,
            criterion.logit_scale,
            adaptive=True,
            adaptive_factor=asdm.factor,
            adaptive_mode=asdm.mode,
        ),
        "mlm": objectives.mlm_loss(out["mlm_scores"], out["mlm_labels"]),
        "id": objectives.id_loss(out["image_logits"], out["text_logits"], pids),
        "efa": objectives.efa_loss(
            out["text_tokens"],
            out["image_tokens"],
            text_margin=efa.text_margin,
            image_margin=efa.image_margin,
            lse_lambda=efa.lse_lambda,
            threshold=efa.threshold,
        ),
    }
    assert set(values) == set(criterion.names), "the recomputation must cover every enabled loss"
    for name, value in values.items():
        assert value.dtype == torch.float64, f"{name} was not recomputed in float64"
    return {name: criterion.weight(name) * value for name, value in values.items()}


def assert_float32_terms(terms: Tensors) -> None:
    """(a) every term a finite float32 scalar."""
    for name, value in terms.items():
        assert value.dtype == torch.float32 and value.dim() == 0, (name, value.dtype, value.shape)
        assert torch.isfinite(value), name


def assert_matches_float64(outputs: Tensors, terms: Tensors, batch: Tensors, criterion: FMFALoss) -> None:
    """(b) each term within FLOAT64_RTOL of its float64 recomputation from the same outputs."""
    expected = float64_terms(outputs, batch, criterion)
    assert set(terms) == set(expected)
    for name, value in terms.items():
        actual, wanted = value.detach().item(), expected[name].detach().item()
        error = abs(actual - wanted) / abs(wanted)
        assert error <= FLOAT64_RTOL, (
            f"{name}: float32 term {actual!r} vs float64 {wanted!r}, relative error {error:.1e}"
        )


@pytest.mark.parametrize("mode", MODES)
def test_loss_terms_are_float32_and_match_a_float64_recomputation(mode, start, steps):
    cfg, _, batch = start
    outputs, terms = steps[mode]
    # The premise: the network really ran in the mode's dtype, so the criterion had to cast.
    assert outputs["image_tokens"].dtype == NETWORK_DTYPE[mode]
    assert outputs["text_tokens"].dtype == NETWORK_DTYPE[mode]
    assert set(terms) == {"a-sdm", "mlm", "id", "efa"}
    assert_float32_terms(terms)
    assert_matches_float64(outputs, terms, batch, build_criterion(cfg))


@pytest.mark.parametrize("mode", ["amp_bf16", "amp_fp16", "pure_fp16"])
def test_low_precision_losses_stay_close_to_fp32(mode, steps):
    """Same weights, same batch: each term within VERSUS_FP32_RTOL of the fp32 step's, and not
    identical to it (the mode did change the arithmetic)."""
    _, reference = steps["fp32"]
    _, terms = steps[mode]
    assert set(terms) == set(reference)
    differences = {
        name: abs(terms[name].detach().item() - reference[name].detach().item()) / abs(reference[name].detach().item())
        for name in reference
    }
    assert max(differences.values()) <= VERSUS_FP32_RTOL[mode], differences
    assert max(differences.values()) > 0, f"{mode} gave fp32's losses bit for bit: did it run at all?"


def _uncast_criterion(criterion: FMFALoss) -> FMFALoss:
    """The mutant: model/loss.py's ``FMFALoss.__call__`` source, its float32 casts removed,
    compiled in model.loss's namespace; the same settings as ``criterion``."""
    source = textwrap.dedent(inspect.getsource(FMFALoss.__call__))
    mutated, removed = re.subn(r"at_least_float32\((\w+)\)", r"\1", source)
    assert removed >= 1, "FMFALoss.__call__ no longer casts with at_least_float32; update this mutant"
    namespace = dict(vars(loss_module))
    exec(compile(mutated, f"<{loss_module.__file__} without the cast>", "exec"), namespace)
    mutant_class = type("UncastFMFALoss", (FMFALoss,), {"__call__": namespace["__call__"]})
    settings = dict(logit_scale=criterion.logit_scale, collective=criterion.collective, **criterion.settings)
    return mutant_class(criterion.names, criterion.weights, **settings)


@pytest.mark.parametrize("mode", ["amp_bf16", "amp_fp16", "pure_fp16"])
def test_the_checks_fail_without_the_float32_cast(mode, start):
    """Without the cast the towers' half-precision outputs are scored in half precision:
    measured, EFA comes out float16/bfloat16 (check a fails) and A-SDM, still float32 through
    the float32 identity targets, is off its float64 value by 8.7e-5 (amp_fp16), 3.7e-4
    (pure_fp16), 7.4e-4 (amp_bf16) relative, over FLOAT64_RTOL (check b fails too)."""
    cfg, _, batch = start
    criterion = build_criterion(cfg)
    mutant = _uncast_criterion(criterion)
    outputs, terms = one_step(mode, start, mutant)
    with pytest.raises(AssertionError):
        assert_float32_terms(terms)
    with pytest.raises(AssertionError):
        assert_matches_float64(outputs, terms, batch, criterion)
    # The same outputs through the real criterion pass both checks (the cast is the only change).
    real_terms, _ = criterion(outputs, batch)
    assert_float32_terms(real_terms)
    assert_matches_float64(outputs, real_terms, batch, criterion)
    # Check b bites on its own: the mutant's A-SDM is float32 (it passes check a) and still
    # fails the float64 comparison.
    assert terms["a-sdm"].dtype == torch.float32
    with pytest.raises(AssertionError, match="a-sdm"):
        assert_matches_float64(outputs, {**real_terms, "a-sdm": terms["a-sdm"]}, batch, criterion)
