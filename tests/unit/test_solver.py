"""Optimizer parameter groups and the per-epoch lr schedule (solver/)."""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from configs.defaults import SolverConfig
from configs.errors import ConfigError
from solver import build_lr_scheduler, build_optimizer, lr_at, lr_factor


class _Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)  # weight + bias
        self.ln = nn.LayerNorm(4)  # weight (1-D, not a bias) + bias
        self.logit_scale = nn.Parameter(torch.ones([]))
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.base_model = _Backbone()
        self.cross_attn = nn.MultiheadAttention(4, 2, batch_first=True)  # in_proj_bias, out_proj.bias
        self.ln_post = nn.LayerNorm(4)
        self.classifier = nn.Linear(4, 3)

    def forward(self, x):
        h = self.base_model.ln(self.base_model.proj(x)) * self.base_model.logit_scale
        h = self.cross_attn(h[:, None], h[:, None], h[:, None], need_weights=False)[0][:, 0]
        return self.classifier(self.ln_post(h))


def _groups(opt):
    return {g["name"]: g for g in opt.param_groups}


# ---------------------------------------------------------------- schedule


def test_default_schedule_is_the_paper_recipe():
    cfg = SolverConfig()
    assert (cfg.scheduler, cfg.epochs, cfg.warmup_epochs, cfg.warmup_factor) == ("cosine", 60, 5, 0.1)
    lrs = [lr_at(e, cfg) for e in range(cfg.epochs)]
    assert lrs[0] == pytest.approx(0.1 * cfg.lr)
    for e in range(5):  # linear warm-up 0.1 -> 1
        assert lrs[e] == pytest.approx(cfg.lr * (0.1 + 0.9 * e / 5))
    assert lrs[5] == pytest.approx(cfg.lr)
    assert 0 < lrs[-1] < 1e-3 * cfg.lr  # last epoch (59) nearly 0
    assert all(a < b for a, b in itertools.pairwise(lrs[:6]))  # rising warm-up
    assert all(a > b for a, b in itertools.pairwise(lrs[5:]))  # then falling
    assert lr_factor(60, cfg) == pytest.approx(0.0, abs=1e-15)


def test_scheduler_drives_the_optimizer_per_epoch():
    cfg = SolverConfig()
    opt = build_optimizer(_Toy(), cfg)
    sched = build_lr_scheduler(opt, cfg)
    seen = []
    for _ in range(cfg.epochs):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([lr_at(e, cfg) for e in range(cfg.epochs)], rel=1e-12)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        # cosine, target 0: 0.5 * (1 + cos(pi * (e - 5) / 55))
        ({}, {5: 1.0, 10: 0.5 * (1 + math.cos(math.pi * 5 / 55)), 59: 0.5 * (1 + math.cos(math.pi * 54 / 55))}),
        ({"epochs": 65}, {35: 0.5}),
        # cosine with target 1e-6 (absolute; base 5e-6 -> t = 0.2) at the middle: 0.2 + 0.8 * 0.5
        ({"target_lr": 1e-6, "epochs": 65}, {35: 0.6}),
        # step: gamma ** bisect_right(milestones, epoch), milestones absolute
        ({"scheduler": "step"}, {5: 1.0, 19: 1.0, 20: 0.1, 49: 0.1, 50: 0.01, 59: 0.01}),
        # exponential: gamma ** (epoch - warmup)
        ({"scheduler": "exponential", "gamma": 0.9}, {5: 1.0, 6: 0.9, 10: 0.9**5}),
        ({"scheduler": "exponential", "gamma": 0.5}, {7: 0.25}),
        # linear: 1 - (e - 5) / 55, and towards target 1e-6 (t = 0.2)
        ({"scheduler": "linear"}, {5: 1.0, 16: 1 - 11 / 55, 38: 0.4}),
        ({"scheduler": "linear", "target_lr": 1e-6}, {38: 0.2 + 0.8 * 0.4}),
        # poly: (1 - r) ** power
        ({"scheduler": "poly", "power": 2.0}, {5: 1.0, 16: 0.8**2, 49: 0.2**2}),
        ({"scheduler": "poly", "power": 0.9, "target_lr": 1e-6}, {27: 0.2 + 0.8 * 0.6**0.9}),
        # warm-up variants
        ({"warmup_method": "constant", "warmup_factor": 0.25}, {0: 0.25, 4: 0.25, 5: 1.0}),
        ({"warmup_factor": 0.0, "warmup_epochs": 4}, {0: 0.0, 1: 0.25, 3: 0.75}),
        ({"warmup_epochs": 0, "scheduler": "linear", "epochs": 10}, {0: 1.0, 5: 0.5}),
    ],
)
def test_formulas(overrides, expected):
    cfg = replace(SolverConfig(), **overrides)
    for epoch, value in expected.items():
        assert lr_factor(epoch, cfg) == pytest.approx(value, rel=1e-12, abs=1e-15), epoch


def test_target_lr_is_absolute_per_group():
    cfg = replace(SolverConfig(), target_lr=1e-6, new_module_lr_factor=4.0)
    opt = build_optimizer(_Toy(), cfg)
    sched = build_lr_scheduler(opt, cfg)
    for _ in range(cfg.epochs):
        opt.step()
        sched.step()
    # at epoch == epochs, every group has decayed to target_lr
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-6] * len(opt.param_groups))


def test_state_dict_round_trip_resumes_identically():
    cfg = SolverConfig()
    torch.manual_seed(0)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))

    def epoch(model, opt, sched):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        sched.step()

    torch.manual_seed(1)
    model = _Toy()
    opt = build_optimizer(model, cfg)
    sched = build_lr_scheduler(opt, cfg)
    for _ in range(7):
        epoch(model, opt, sched)
    saved = copy.deepcopy({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()})
    for _ in range(3):
        epoch(model, opt, sched)
    expected_lrs = [g["lr"] for g in opt.param_groups]
    expected_weights = {k: v.clone() for k, v in model.state_dict().items()}

    torch.manual_seed(2)  # different init, overwritten by the checkpoint
    model2 = _Toy()
    model2.load_state_dict(saved["model"])
    opt2 = build_optimizer(model2, cfg)
    sched2 = build_lr_scheduler(opt2, cfg)
    opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    assert sched2.last_epoch == 7
    assert [g["lr"] for g in opt2.param_groups] == pytest.approx([lr_at(7, cfg)] * len(opt2.param_groups))
    for _ in range(3):
        epoch(model2, opt2, sched2)
    assert [g["lr"] for g in opt2.param_groups] == expected_lrs
    for k, v in model2.state_dict().items():
        torch.testing.assert_close(v, expected_weights[k], rtol=0, atol=0)


# ---------------------------------------------------------------- parameter groups


def test_default_groups_one_lr_and_decay():
    model = _Toy()
    cfg = SolverConfig()
    opt = build_optimizer(model, cfg)
    assert isinstance(opt, torch.optim.Adam)
    assert opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["eps"] == 1e-3
    groups = _groups(opt)
    assert list(groups) == ["backbone", "backbone_bias", "heads", "heads_bias"]
    for g in groups.values():
        assert g["lr"] == cfg.lr and g["weight_decay"] == cfg.weight_decay
    # backbone: proj.weight, ln.weight, logit_scale | proj.bias, ln.bias  (frozen excluded)
    assert len(groups["backbone"]["params"]) == 3
    assert len(groups["backbone_bias"]["params"]) == 2
    # heads: in_proj_weight, out_proj.weight, ln_post.weight, classifier.weight
    #        | in_proj_bias, out_proj.bias, ln_post.bias, classifier.bias
    assert len(groups["heads"]["params"]) == 4
    assert len(groups["heads_bias"]["params"]) == 4
    grouped = {id(p) for g in opt.param_groups for p in g["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert grouped == trainable
    assert all(id(p) not in grouped for p in model.base_model.frozen.parameters())
    assert id(model.base_model.ln.weight) in {id(p) for p in groups["backbone"]["params"]}
    assert id(model.cross_attn.in_proj_bias) in {id(p) for p in groups["heads_bias"]["params"]}


def test_group_factors_and_bias_weight_decay():
    cfg = replace(
        SolverConfig(), lr=1e-5, new_module_lr_factor=5.0, bias_lr_factor=2.0, weight_decay=4e-5, bias_weight_decay=0.0
    )
    g = _groups(build_optimizer(_Toy(), cfg))
    assert g["backbone"]["lr"] == pytest.approx(1e-5)
    assert g["backbone_bias"]["lr"] == pytest.approx(2e-5)
    assert g["heads"]["lr"] == pytest.approx(5e-5)
    assert g["heads_bias"]["lr"] == pytest.approx(1e-4)
    assert g["backbone"]["weight_decay"] == 4e-5 and g["heads"]["weight_decay"] == 4e-5
    assert g["backbone_bias"]["weight_decay"] == 0.0 and g["heads_bias"]["weight_decay"] == 0.0


def test_empty_groups_dropped_and_frozen_backbone():
    model = _Toy()
    model.base_model.requires_grad_(False)
    g = _groups(build_optimizer(model, SolverConfig()))
    assert list(g) == ["heads", "heads_bias"]

    class NoBias(nn.Module):
        def __init__(self):
            super().__init__()
            self.base_model = nn.Linear(2, 2, bias=False)
            self.classifier = nn.Linear(2, 2, bias=False)

    assert list(_groups(build_optimizer(NoBias(), SolverConfig()))) == ["backbone", "heads"]

    model.requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad"):
        build_optimizer(model, SolverConfig())


def test_wrapped_model_prefix_ignored():
    wrapper = nn.Module()
    wrapper.module = _Toy()
    g = _groups(build_optimizer(wrapper, SolverConfig()))
    assert len(g["backbone"]["params"]) == 3 and len(g["heads"]["params"]) == 4


@pytest.mark.parametrize(
    "name, cls", [("Adam", torch.optim.Adam), ("AdamW", torch.optim.AdamW), ("SGD", torch.optim.SGD)]
)
def test_optimizer_kinds(name, cls):
    cfg = replace(SolverConfig(), optimizer=name, momentum=0.8, eps=1e-8, betas=[0.8, 0.99])
    opt = build_optimizer(_Toy(), cfg)
    assert type(opt) is cls
    if cls is torch.optim.SGD:
        assert opt.defaults["momentum"] == 0.8
    else:
        assert opt.defaults["betas"] == (0.8, 0.99) and opt.defaults["eps"] == 1e-8
    assert opt.defaults.get("fused") in (None, False) and opt.defaults.get("foreach") is None


def test_fused_kernels_on_cpu_match_the_default():
    torch.manual_seed(0)
    reference, fused_model = _Toy(), _Toy()
    fused_model.load_state_dict(reference.state_dict())
    inputs, labels = torch.randn(2, 4), torch.tensor([0, 1])
    for model, fused in ((reference, False), (fused_model, True)):
        opt = build_optimizer(model, replace(SolverConfig(), fused=fused, lr=1e-2))
        assert bool(opt.defaults.get("fused")) is fused
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(model(inputs), labels).backward()
            opt.step()
    for a, b in zip(reference.parameters(), fused_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "bad, key", [(SolverConfig(optimizer="Lion"), "solver.optimizer"), (SolverConfig(lr=0.0), "solver.lr")]
)
def test_build_optimizer_refuses_an_unvalidated_section(bad, key):
    with pytest.raises(ConfigError, match=key):
        build_optimizer(nn.Linear(2, 2), bad)


@pytest.mark.parametrize(
    "bad, key",
    [(SolverConfig(scheduler="onecycle"), "solver.scheduler"), (SolverConfig(warmup_method="Linear"), "warmup_method")],
)
def test_build_lr_scheduler_refuses_an_unvalidated_section_instead_of_a_default_schedule(bad, key):
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ConfigError, match=key):
        build_lr_scheduler(optimizer, bad)
