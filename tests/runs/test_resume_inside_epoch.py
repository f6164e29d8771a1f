"""train.checkpoint_every_steps: a run killed inside an epoch resumes at the next sample and
ends with the weights, metrics and epoch losses of an unbroken run, from files and from shards."""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import List

import pytest
import torch
from conftest import ROOT, user_error, with_project_on_path
from train_fixtures import epoch_means, make_fixture, read_metrics, tiny_run_args

import train as train_cli
from configs.defaults import Config
from configs.errors import ConfigError
from configs.validation import validate
from dataset_tools.write_shards import write_shards
from processor import checkpointing as ckpt


def kill_after_step(args: List[str], step: int) -> None:
    """train.py on ``args``, SIGKILLed right after the last.pth written at global step ``step``."""
    env = {**with_project_on_path(), "FMFA_FAULT_KILL_AFTER_STEP": str(step)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "fault_injection.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,  # a hang ends the test here; the kill itself waits on no clock
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]


def assert_same_run(resumed: Path, whole: Path) -> None:
    assert read_metrics(resumed) == read_metrics(whole)
    # the interrupted epoch's loss sums were kept (the rates are timings)
    losses = [
        [{k: v for k, v in epoch.items() if "per_s" not in k} for epoch in epoch_means(run)] for run in (resumed, whole)
    ]
    assert losses[0] == losses[1] and len(losses[0]) == len(read_metrics(whole))
    final_whole, final_resumed = (ckpt.load_training_state(run / "last.pth") for run in (whole, resumed))
    assert "position" not in final_resumed and final_whole["model"].keys() == final_resumed["model"].keys()
    assert all(torch.equal(final_whole["model"][k], v) for k, v in final_resumed["model"].items())


@pytest.mark.slow(seconds=15)
def test_a_run_killed_inside_an_epoch_resumes_to_the_unbroken_weights(three_epoch_run, tmp_path):
    """The file loader, 3 epochs of 5 steps (conftest.three_epoch_run, written without the
    setting: it changes no training), last.pth every 4 steps, killed after step 8 (3 batches
    into epoch 2); resumed by train.auto_resume, the sampler skips the 3 batches trained."""
    root, whole = three_epoch_run
    killed = tmp_path / "killed"
    args = tiny_run_args(root, killed, 3, "train.checkpoint_every_steps=4")
    kill_after_step(args, 8)
    state = ckpt.load_training_state(killed / "last.pth")
    assert (state["epoch"], state["step"], state["position"]["batches"]) == (1, 8, 3)
    assert [row["epoch"] for row in read_metrics(killed)] == [1]
    assert train_cli.main([*args, "train.auto_resume=true"]) == 0
    assert "(step 8, 3 batches into epoch 2," in (killed / "train.log").read_text()
    assert_same_run(killed, whole)


@pytest.mark.slow(seconds=40)
def test_a_streamed_run_killed_inside_an_epoch_resumes_to_the_unbroken_weights(tmp_path, capsys):
    """data.shards with 2 loader workers (3 and 2 batches of an epoch) and a shuffle buffer of 3,
    killed after step 3: each worker starts past the pairs it gave, in the order of the
    DataLoader's round over them. A resume with another worker count is refused."""
    root = make_fixture(tmp_path / "data")
    write_shards(root, "CUHK-PEDES", tmp_path / "shards", shard_size=3)
    shards = [f"data.shards={tmp_path / 'shards'}", "data.num_workers=2", "data.shuffle_buffer=3"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert train_cli.main(tiny_run_args(root, whole, 2, *shards)) == 0
    args = tiny_run_args(root, killed, 2, *shards, "train.checkpoint_every_steps=3")
    kill_after_step(args, 3)
    assert ckpt.load_training_state(killed / "last.pth")["position"]["batches"] == 3
    other = user_error(capsys, train_cli.main, [*args, "data.num_workers=0", f"train.resume={killed}"])
    assert "saved inside epoch 1 (3 batches)" in other and "'data.num_workers': 2" in other
    assert train_cli.main([*args, f"train.resume={killed}"]) == 0
    assert_same_run(killed, whole)


def test_without_the_setting_last_pth_holds_no_position(one_epoch_run):
    _, run = one_epoch_run
    assert "position" not in ckpt.load_training_state(run / "last.pth")
    cfg = Config()
    with pytest.raises(ConfigError, match=r"train\.checkpoint_every_steps=-1: must be >= 0"):
        validate(replace(cfg, train=replace(cfg.train, checkpoint_every_steps=-1)))


@pytest.mark.slow(seconds=100)
def test_a_torchrun_restart_inside_an_epoch_continues_at_the_next_sample(tmp_path):
    """Two processes streaming shards, last.pth every 2 steps; rank 1 fails at batch 3 of
    epoch 1 (after step 3: step 4 cannot be reached), torchrun restarts both, which continue
    from step 2 to the weights of the same job run unbroken."""
    root = make_fixture(tmp_path / "data")
    write_shards(root, "CUHK-PEDES", tmp_path / "shards", shard_size=3)
    shards = [f"data.shards={tmp_path / 'shards'}", "data.shuffle_buffer=3", "train.checkpoint_every_steps=2"]
    whole, restarted = tmp_path / "whole", tmp_path / "restarted"
    fault = {"FMFA_FAULT": "1:0:3", "FMFA_FAULT_MARKER": str(tmp_path / "fault_fired")}
    for run, faults in ((whole, {}), (restarted, fault)):
        env = {**with_project_on_path(), **faults}
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        command += [
            "--max-restarts=1",
            str(ROOT / "tests" / "fault_injection.py"),
            *tiny_run_args(root, run, 2, *shards),
        ]
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "fault_fired").exists()
    assert "(step 2, 2 batches into epoch 1," in (restarted / "train.log").read_text()
    assert_same_run(restarted, whole)
