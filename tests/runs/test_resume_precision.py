"""A run stopped after its first epoch resumes exactly in every low-precision mode.

fp32 resumes are covered by test_train.py / test_reliability.py. Here the run stops right
after epoch 1's checkpoints are written (an exception raised from ``RunKeeper.save``, in process)
and is resumed with ``train.resume``; it must end where the uninterrupted run ends: the same
weights, Adam state and (amp_fp16) GradScaler state, bit for bit and dtype for dtype, and the
same metrics. amp_fp16 on the CPU overflows at the initial loss scale 2^16, so its scaler backs
off during epoch 1 and a resume that starts a fresh scaler skips other steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import pytest
import torch
from train_fixtures import make_fixture, read_metrics, tiny_run_args

import train as train_cli
from processor import checkpointing as ckpt
from processor.run_keeper import RunKeeper

# SDM + ID; an Adam epsilon pure_fp16 accepts (>= 6e-8).
QUICK = ["solver.eps=1e-6", "loss.names=sdm+id"]
# 20 training captions: 2 steps an epoch, but amp_fp16 takes 5, as its first 4 are skipped while
# the loss scale falls from 2^16 to 4096 and epoch 1 must end with an optimizer step taken.
BATCH = {"amp_fp16": 4, "pure_fp16": 10, "amp_bf16": 10}
HALF_WEIGHT = "base_model.visual.conv1.weight"  # half under pure_fp16 (convert_weights), float32 otherwise


class StoppedAfterEpoch1(Exception):
    """Stands in for a crash right after epoch 1's checkpoints are written."""


def run_args(root: Path, run: Path, mode: str, *extra: str):
    return tiny_run_args(root, run, 2, *QUICK, f"data.batch_size={BATCH[mode]}", f"train.precision={mode}", *extra)


def assert_same_tensors(whole: Dict, resumed: Dict, what: str) -> None:
    assert whole.keys() == resumed.keys(), what
    for key, value in whole.items():
        other = resumed[key]
        if isinstance(value, dict):
            assert_same_tensors(value, other, f"{what}.{key}")
        elif isinstance(value, torch.Tensor):
            assert other.dtype == value.dtype, f"{what}.{key}: {other.dtype} after the resume, {value.dtype} without"
            same = torch.equal(other, value)  # computed first: pytest would print both tensors
            assert same, f"{what}.{key} differs after the resume: {(other.double() - value.double()).abs().max():.3g}"
        else:
            assert other == value, f"{what}.{key}: {other!r} after the resume, {value!r} without"


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory) -> Path:
    return make_fixture(tmp_path_factory.mktemp("resume_precision") / "data")


@pytest.mark.parametrize("mode", ["amp_fp16", "pure_fp16", "amp_bf16"])
def test_resume_continues_exactly_in_each_precision_mode(fixture_root, tmp_path, monkeypatch, mode):
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    assert train_cli.main(run_args(fixture_root, whole, mode)) == 0

    save = RunKeeper.save

    def save_then_stop(keeper, parts, best_metrics):
        save(keeper, parts, best_metrics)
        if parts.epoch == 1:
            raise StoppedAfterEpoch1

    monkeypatch.setattr(RunKeeper, "save", save_then_stop)
    with pytest.raises(StoppedAfterEpoch1):
        train_cli.main(run_args(fixture_root, stopped, mode))
    monkeypatch.undo()
    middle = ckpt.load_training_state(stopped / "last.pth")
    assert middle["epoch"] == 1
    assert (middle["scaler"] is not None) == (mode == "amp_fp16")
    if mode == "amp_fp16":  # the scale epoch 1 ended with is not the initial one: forgetting it shows
        assert middle["scaler"]["scale"] < 2.0**16, middle["scaler"]
    assert middle["optimizer"]["state"], "no optimizer step in epoch 1: Adam's state would not be tested"
    assert train_cli.main(run_args(fixture_root, stopped, mode, f"train.resume={stopped}")) == 0
    assert "resumed from" in (stopped / "train.log").read_text()

    final_whole, final_resumed = (ckpt.load_training_state(run / "last.pth") for run in (whole, stopped))
    assert final_resumed["epoch"] == final_whole["epoch"] == 2
    assert final_whole["model"][HALF_WEIGHT].dtype == (torch.float16 if mode == "pure_fp16" else torch.float32)
    assert_same_tensors({"scaler": final_whole["scaler"]}, {"scaler": final_resumed["scaler"]}, "last.pth")
    assert_same_tensors(final_whole["optimizer"], final_resumed["optimizer"], "optimizer")
    assert_same_tensors(final_whole["model"], final_resumed["model"], "model")
    assert final_resumed["step"] == final_whole["step"]
    assert read_metrics(stopped) == read_metrics(whole)
