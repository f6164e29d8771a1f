"""The road from a config to the loss functions: ``build_criterion(cfg)`` on fixed model
outputs against the numpy oracles called with settings written out here from
docs/method.md ("Paper versus code"), never read back from the config or the criterion.

Every YAML config in configs/ and a non-default value of every loss setting is a case;
each bug of :data:`WIRING_BUGS` (put into a copy of the wiring) must fail the same check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict

import numpy as np
import numpy_oracles as npo
import pytest
import torch

from configs.loader import load_config
from model import loss as loss_module
from model import objectives
from model.build import build_criterion
from model.loss import FMFALoss

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
AUTHORS_CODE = dict(mode="cosine", factor=0.1, text_margin=0.1, image_margin=0.9)
# docs/method.md, "Paper versus code": the paper's column per dataset, the code's for the rest.
EXPECTED_BY_FILE = {
    "cuhk_pedes.yaml": dict(mode="probability", factor=10.0, text_margin=0.1, image_margin=0.1),
    "icfg_pedes.yaml": dict(mode="probability", factor=10.0, text_margin=0.2, image_margin=1.0),
    "rstpreid.yaml": dict(mode="probability", factor=1.0, text_margin=0.2, image_margin=0.8),
    "cuhk_pedes_authors_code.yaml": AUTHORS_CODE,
    "icfg_pedes_authors_code.yaml": AUTHORS_CODE,
    "rstpreid_authors_code.yaml": AUTHORS_CODE,
    "quickstart.yaml": AUTHORS_CODE,
    # The pretraining recipes: SDM alone (HAM's README, MLLM4Text-ReID's paper), the code's other settings.
    "pretrain_ham.yaml": dict(losses={"sdm": 1.0}, **AUTHORS_CODE),
    "pretrain_mllm4text_reid.yaml": dict(losses={"sdm": 1.0}, **AUTHORS_CODE),
    "pretrain_tiny.yaml": dict(losses={"sdm": 1.0}, **AUTHORS_CODE),
}
PAPER_LOSSES = {"a-sdm": 1.0, "mlm": 1.0, "id": 1.0, "efa": 1.0}
BASE = dict(losses=PAPER_LOSSES, scale=50.0, lse_lambda=1.0, threshold=1.0, **AUTHORS_CODE)
# (overrides, what they must mean), each a non-default value of one setting
OVERRIDES = {
    "asdm.mode": (["asdm.mode=probability"], dict(mode="probability")),
    "asdm.factor": (["asdm.factor=3.0"], dict(factor=3.0)),
    "efa.text_margin": (["efa.text_margin=0.35"], dict(text_margin=0.35)),
    "efa.image_margin": (["efa.image_margin=0.05"], dict(image_margin=0.05)),
    "efa.threshold": (["efa.threshold=1.7"], dict(threshold=1.7)),
    "efa.lse_lambda": (["efa.lse_lambda=2.5"], dict(lse_lambda=2.5)),
    "model.temperature": (["model.temperature=0.1"], dict(scale=10.0)),
    "loss.weights": (
        ["loss.weights={a-sdm: 2.0, mlm: 0.5, id: 3.0, efa: 0.25}"],
        dict(losses={"a-sdm": 2.0, "mlm": 0.5, "id": 3.0, "efa": 0.25}),
    ),
    "other losses": (
        ["loss.names=sdm+itc+cmpm", "loss.weights={itc: 0.5, cmpm: 4.0}"],
        dict(losses={"sdm": 1.0, "itc": 0.5, "cmpm": 4.0}),
    ),
}


def model_outputs(seed: int = 0, b: int = 6, d: int = 8, length: int = 7, patches: int = 5, classes: int = 4):
    """Fixed float32 outputs and identities with repeats (rows whose first same-identity
    column is not their own)."""
    rng = np.random.default_rng(seed)
    shapes = {
        "image_feats": (b, d),
        "text_feats": (b, d),
        "text_tokens": (b, length, d),
        "image_tokens": (b, 1 + patches, d),
        "image_logits": (b, classes),
        "text_logits": (b, classes),
        "mlm_scores": (9, 11),
    }
    out = {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}
    out["mlm_labels"] = rng.integers(1, 11, size=9)
    return out, np.array([0, 1, 0, 2, 1, 3])


def oracle_terms(out, pids, settings) -> Dict[str, float]:
    """Every loss the settings enable, weighted, from docs/method.md (float64 numpy)."""
    x = {name: value.astype(np.float64) if value.dtype == np.float32 else value for name, value in out.items()}
    s = settings
    values = {
        "a-sdm": lambda: npo.sdm(
            x["image_feats"], x["text_feats"], pids, s["scale"], mode=s["mode"], factor=s["factor"]
        ),
        "sdm": lambda: npo.sdm(x["image_feats"], x["text_feats"], pids, s["scale"]),
        "itc": lambda: npo.itc(x["image_feats"], x["text_feats"], s["scale"]),
        "cmpm": lambda: npo.cmpm(x["image_feats"], x["text_feats"], pids),
        "id": lambda: (npo.cross_entropy(x["image_logits"], pids) + npo.cross_entropy(x["text_logits"], pids)) / 2,
        "mlm": lambda: npo.cross_entropy(x["mlm_scores"], x["mlm_labels"]),
        "efa": lambda: npo.efa(
            x["text_tokens"], x["image_tokens"], s["text_margin"], s["image_margin"], s["lse_lambda"], s["threshold"]
        ),
    }
    return {name: weight * values[name]() for name, weight in s["losses"].items()}


def cases():
    """(case name, config file or None, overrides, expected settings)."""
    for file, expected in EXPECTED_BY_FILE.items():
        yield file, CONFIGS / file, [], {**BASE, **expected}
    for name, (overrides, expected) in OVERRIDES.items():
        yield name, None, overrides, {**BASE, **expected}


def check_wiring(build: Callable[[object], FMFALoss]) -> None:
    out, pids = model_outputs()
    tensors = {name: torch.from_numpy(value) for name, value in out.items()}
    batch = {"pids": torch.from_numpy(pids)}
    for name, path, overrides, expected in cases():
        terms, _ = build(load_config(path, overrides))(dict(tensors), batch)
        oracle = oracle_terms(out, pids, expected)
        assert terms.keys() == oracle.keys(), (name, list(terms))
        for term, value in oracle.items():
            assert terms[term].dtype == torch.float32
            np.testing.assert_allclose(terms[term].item(), value, rtol=2e-5, err_msg=f"{name}: {term}")


def test_every_config_and_setting_reaches_the_losses():
    check_wiring(build_criterion)


def test_every_yaml_config_has_its_expected_settings_written_here():
    on_disk = {path.name for path in CONFIGS.glob("*.yaml") if not path.name.startswith("_")}
    assert on_disk == set(EXPECTED_BY_FILE), "a new config needs its settings from docs/method.md above"


def test_the_cases_tell_each_setting_apart():
    """Each override changes the oracle's total, so a setting dropped on the way is visible."""
    out, pids = model_outputs()
    default = sum(oracle_terms(out, pids, BASE).values())
    swapped = sum(oracle_terms(out, pids, {**BASE, "text_margin": 0.9, "image_margin": 0.1}).values())
    assert abs(swapped - default) > 1e-3
    for name, _, _, expected in list(cases())[len(EXPECTED_BY_FILE) :]:
        assert abs(sum(oracle_terms(out, pids, expected).values()) - default) > 1e-3, name


# ---- copies of the wiring, each with one bug ------------------------------------------------


def _efa_with(**change):
    def efa(loss, out, batch):
        settings = dict(
            text_margin=loss.efa.text_margin,
            image_margin=loss.efa.image_margin,
            lse_lambda=loss.efa.lse_lambda,
            threshold=loss.efa.threshold,
        )
        settings.update({key: (settings[value] if isinstance(value, str) else value) for key, value in change.items()})
        for key in [key for key, value in change.items() if value is None]:
            del settings[key]  # not passed on: the function's default
        return objectives.efa_loss(out["text_tokens"], out["image_tokens"], **settings), {}

    return efa


def _asdm_with(adaptive=True, **change):
    def asdm(loss, out, batch):
        settings = dict(adaptive=adaptive, adaptive_factor=loss.asdm.factor, adaptive_mode=loss.asdm.mode)
        for key in change:
            del settings[key]
        return objectives.sdm_loss(
            out["image_feats"], out["text_feats"], batch["pids"], loss.logit_scale, **settings
        ), {}

    return asdm


WIRING_BUGS = {
    "efa margins swapped": ("efa", _efa_with(text_margin="image_margin", image_margin="text_margin")),
    "efa lse_lambda not passed on": ("efa", _efa_with(lse_lambda=None)),
    "efa threshold not passed on": ("efa", _efa_with(threshold=None)),
    "a-sdm computed as sdm": ("a-sdm", _asdm_with(adaptive=False)),
    "asdm.mode not passed on": ("a-sdm", _asdm_with(adaptive_mode=None)),
    "asdm.factor not passed on": ("a-sdm", _asdm_with(adaptive_factor=None)),
}


@pytest.mark.parametrize("bug", list(WIRING_BUGS))
def test_each_wiring_bug_fails_the_check(bug, monkeypatch):
    name, wrong = WIRING_BUGS[bug]
    monkeypatch.setitem(loss_module.LOSSES, name, wrong)
    with pytest.raises(AssertionError):
        check_wiring(build_criterion)


def test_a_logit_scale_set_to_the_temperature_fails_the_check():
    def build(cfg):
        criterion = build_criterion(cfg)
        criterion.logit_scale = cfg.model.temperature
        return criterion

    with pytest.raises(AssertionError):
        check_wiring(build)
