"""The pretraining recipes' inputs: a benchmark they evaluate on that is absent is named
before anything starts, and a pretrained FMFA checkpoint given where CLIP weights go is
answered with the key that takes it."""

from __future__ import annotations

import pytest
import torch
from conftest import ROOT, user_error

import train as train_cli
from model.clip import create_clip
from model.weights_file import WeightsError

RECIPES = ["pretrain_ham.yaml", "pretrain_mllm4text_reid.yaml"]


@pytest.mark.parametrize("recipe", RECIPES)
def test_a_recipe_names_every_absent_benchmark_before_it_starts(recipe, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["--config", str(ROOT / "configs" / recipe), f"data.root={tmp_path}", f"train.output_dir={run}"]
    message = user_error(capsys, train_cli.main, argv)
    for benchmark in ("CUHK-PEDES", "ICFG-PEDES", "RSTPReid"):  # evaluated zero-shot, each one named
        assert f"{tmp_path / benchmark} not found" in message, message
    assert not run.exists()


def test_a_pretrained_fmfa_checkpoint_in_model_pretrain_points_to_model_init_from(tmp_path):
    best = tmp_path / "best.pth"
    torch.save({"model": {"base_model.visual.conv1.weight": torch.zeros(4, 3, 8, 8)}}, best)
    with pytest.raises(WeightsError) as raised:
        create_clip(str(best), (96, 32))
    assert f"model.init_from={best}" in str(raised.value) and "FMFA checkpoint" in str(raised.value)
