"""The losses' table (``configs.defaults.LOSS_SPECS``): every setting reaches the criterion
by its section, one left out is an error when the criterion is built, and each default is
the config's."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
from conftest import tiny_config

from configs.defaults import LOSS_NAMES, LOSS_SETTINGS, LOSS_SPECS, AsdmConfig, Config, EfaConfig, loss_needs
from model import build as build_module
from model import loss as loss_module
from model import objectives
from model.build import build_criterion
from model.loss import FMFALoss


def test_a_setting_left_out_of_the_criterion_is_an_error_at_build_time():
    given = dict(logit_scale=50.0, asdm=AsdmConfig(), efa=EfaConfig())
    for left_out in given:
        settings = {key: value for key, value in given.items() if key != left_out}
        with pytest.raises(TypeError, match=left_out):
            FMFALoss(["a-sdm", "efa"], {}, **settings)
    with pytest.raises(TypeError, match="weights"):
        FMFALoss(["a-sdm"], logit_scale=50.0, asdm=AsdmConfig(), efa=EfaConfig())


def test_a_settings_section_build_criterion_forgets_is_an_error(monkeypatch):
    cfg = tiny_config()
    monkeypatch.setattr(build_module, "LOSS_SETTINGS", tuple(s for s in LOSS_SETTINGS if s != "efa"))
    with pytest.raises(TypeError, match="efa"):
        build_criterion(cfg)


def test_a_settings_section_the_criterion_does_not_take_is_an_error(monkeypatch):
    monkeypatch.setattr(build_module, "LOSS_SETTINGS", LOSS_SETTINGS + ("eval",))
    with pytest.raises(TypeError, match="eval"):
        build_criterion(tiny_config())


def test_the_criterion_gets_the_configs_own_settings():
    cfg = tiny_config()
    cfg.efa.text_margin, cfg.asdm.factor, cfg.model.temperature = 0.35, 3.0, 0.1
    criterion = build_criterion(cfg)
    assert criterion.efa.text_margin == 0.35 and criterion.asdm.factor == 3.0 and criterion.logit_scale == 10.0


def test_every_settings_section_is_a_config_section_the_criterion_holds_as_given():
    config_sections = {f.name for f in dataclasses.fields(Config)}
    assert {"asdm", "efa"} <= set(LOSS_SETTINGS)  # a new loss may add its own
    cfg = tiny_config()
    criterion = build_criterion(cfg)
    for section in LOSS_SETTINGS:
        assert section in config_sections, section
        assert getattr(criterion, section) is getattr(cfg, section), section
    assert set(criterion.settings) == set(LOSS_SETTINGS)
    with pytest.raises(AttributeError, match="no attribute or settings section 'eval'"):
        criterion.eval


def test_the_table_names_the_losses_the_criterion_computes():
    assert set(LOSS_SPECS) == set(loss_module.LOSSES) and LOSS_NAMES == tuple(LOSS_SPECS)
    needs = loss_needs(["a-sdm", "mlm", "id", "efa"])
    assert needs.heads == ("irr", "id_classifier") and needs.masked_captions
    assert needs.settings == ("asdm", "efa")
    assert loss_needs(["sdm", "itc", "cmpm"]) == type(needs)()


def _keyword_defaults(function) -> dict:
    return {
        name: parameter.default
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


def test_the_loss_functions_defaults_are_the_configs():
    efa = _keyword_defaults(objectives.efa_loss)
    assert {key: efa[key] for key in dataclasses.asdict(EfaConfig())} == dataclasses.asdict(EfaConfig())
    sdm = _keyword_defaults(objectives.sdm_loss)
    assert (sdm["adaptive_factor"], sdm["adaptive_mode"]) == (AsdmConfig().factor, AsdmConfig().mode)
    assert _keyword_defaults(objectives.language_grouped_vision)["threshold"] == EfaConfig().threshold
