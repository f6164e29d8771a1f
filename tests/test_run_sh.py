"""run.sh: every command is a valid train.py invocation in a stable run folder; sections
resume after a kill; bad sections, other directories, GPUs and torchrun are handled."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from configs.loader import parse_cli
from processor import checkpointing as ckpt

SECTIONS = {"paper": 3, "authors_code": 3, "ablation": 10, "sweeps": 16, "finetune": 6}


def recording_python(tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in for $PYTHON that writes its arguments (and CUDA_VISIBLE_DEVICES), runs nothing."""
    record, recorder = tmp_path / "calls.jsonl", tmp_path / "python"
    recorder.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"open({str(record)!r}, 'a').write(json.dumps("
        "[os.environ.get('CUDA_VISIBLE_DEVICES')] + sys.argv[1:]) + '\\n')\n"
    )
    recorder.chmod(0o755)
    return recorder, record


def run_sh(*args: str, cwd: Path = ROOT, timeout: int = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "run.sh"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
    )


def recorded(record: Path) -> list:
    return [json.loads(line) for line in record.read_text().splitlines()]


@pytest.mark.parametrize("section, count", SECTIONS.items())
def test_run_sh_commands_parse_and_validate(section, count, tmp_path):
    recorder, record = recording_python(tmp_path)
    pretrained = tmp_path / "pretrained"  # the fine-tune section refuses to start without its checkpoints
    pretrained.mkdir()
    for name in ("ham.pth", "mllm4text_reid.pth"):
        (pretrained / name).write_bytes(b"")
    result = run_sh(section, PYTHON=str(recorder), PRETRAINED=str(pretrained))
    assert result.returncode == 0, result.stderr
    calls = [argv[1:] for argv in recorded(record)]
    report = [arg for arg in calls[-1] if arg != "--paper-ablation"]  # the ablation's table adds the paper's R1
    assert report[:2] == ["-m", "utils.report"] and len(report) == 2 + count  # the section's table
    assert ("--paper-ablation" in calls[-1]) == (section == "ablation")
    calls = [argv for argv in calls if argv[0] == "train.py"]
    assert len(calls) == count
    names = set()
    for argv in calls:
        cfg = parse_cli(argv[1:])  # loads the YAML, applies the overrides, validates
        names.add((cfg.data.dataset, cfg.train.name))
        assert cfg.train.auto_resume and cfg.train.output_dir == str(ROOT / "runs" / cfg.data.dataset / cfg.train.name)
    assert len(names) == count, "two runs of one section share a dataset and name"


@pytest.mark.parametrize("args", [[], ["train"], ["paper;ls"]])
def test_unknown_or_missing_section_lists_the_sections(args, tmp_path):
    recorder, record = recording_python(tmp_path)
    result = run_sh(*args, PYTHON=str(recorder))
    assert result.returncode == 2 and "paper authors_code ablation sweeps finetune" in result.stderr
    assert not record.exists()  # nothing was run


def test_from_another_folder_with_torchrun_and_the_callers_gpus(tmp_path):
    recorder, record = recording_python(tmp_path)
    env = {"PYTHON": str(recorder), "NPROC": "2", "CUDA_VISIBLE_DEVICES": "2,3", "DATA_ROOT": "mydata"}
    assert run_sh("paper", cwd=tmp_path, **env).returncode == 0
    first = recorded(record)[0]
    assert first[0] == "2,3"  # an existing CUDA_VISIBLE_DEVICES is kept
    assert first[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert f"data.root={tmp_path}/mydata" in first
    assert f"train.output_dir={tmp_path}/runs/CUHK-PEDES/fmfa_paper" in first
    assert run_sh("paper", cwd=tmp_path, GPU="1", **{**env, "NPROC": "1"}).returncode == 0
    assert recorded(record)[-2][0] == "1"  # GPU=1 sets it


def fault_injecting_python(tmp_path: Path) -> Path:
    """A stand-in for $PYTHON that runs train.py as tests/fault_injection.py (the same
    train.main with the faults its FMFA_FAULT* variables name) and everything else as is."""
    wrapper = tmp_path / "python_with_faults"
    python, script = shlex.quote(sys.executable), shlex.quote(str(ROOT / "tests" / "fault_injection.py"))
    wrapper.write_text(
        f'#!/bin/sh\nif [ "$1" = train.py ]; then shift; exec {python} {script} "$@"; fi\nexec {python} "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


def test_a_killed_smoke_section_resumes_where_it_stopped(tmp_path):
    """SMOKE=1 bash run.sh paper, its second run SIGKILLed right after that run's epoch 1
    checkpoint (tests/fault_injection.py's FMFA_FAULT_KILL_AFTER_EPOCH, a point, not a time),
    then rerun: the first run is reported finished, the second continues from its last.pth,
    the third runs; the section's table lists all three with their differences."""
    runs = tmp_path / "runs"
    env = {**os.environ, "SMOKE": "1", "RUNS": str(runs), "PYTHON": sys.executable}
    second = runs / "ICFG-PEDES" / "fmfa_paper"
    faults = {
        "PYTHON": str(fault_injecting_python(tmp_path)),
        "PYTHONPATH": str(ROOT),
        "FMFA_FAULT_KILL_AFTER_EPOCH": "1",
        "FMFA_FAULT_KILL_RUN": str(second),
    }
    # timeout: a hang ends the test here; the kill itself waits on no clock
    killed = subprocess.run(
        ["bash", str(ROOT / "run.sh"), "paper"],
        cwd=tmp_path,
        env={**env, **faults},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == 128 + signal.SIGKILL, killed.stderr[-3000:]  # set -e: bash stops with train.py
    first = runs / "CUHK-PEDES" / "fmfa_paper"
    assert [line for line in killed.stdout.splitlines() if line.startswith("== ")] == [f"== {first}", f"== {second}"]
    assert json.loads((first / "progress.json").read_text())["epoch"] == 2
    assert json.loads((second / "progress.json").read_text())["epoch"] == 1, "not killed after the second run's epoch 1"
    assert ckpt.load_training_state(second / "last.pth")["epoch"] == 1
    assert not (runs / "RSTPReid").exists()
    result = subprocess.run(
        ["bash", str(ROOT / "run.sh"), "paper"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "CUHK-PEDES/fmfa_paper already finished (2/2 epochs)" in result.stdout
    assert "resumed from" in (second / "train.log").read_text()
    for dataset in ("CUHK-PEDES", "ICFG-PEDES", "RSTPReid"):
        assert json.loads((runs / dataset / "fmfa_paper" / "progress.json").read_text())["epoch"] == 2
    epochs = [json.loads(line)["epoch"] for line in (second / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]  # epoch 1 was not trained again
    table = result.stdout[result.stdout.index("| run") :]
    assert all(f"{dataset}/fmfa_paper" in table for dataset in ("CUHK-PEDES", "ICFG-PEDES", "RSTPReid"))
    assert "efa.text_margin" in table and "asdm.factor" in table  # what differs between the runs
