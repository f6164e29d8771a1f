"""run.sh: every command is a valid train.py invocation in a stable run folder; sections
resume after a kill; bad sections, other directories, GPUs and torchrun are handled."""

from __future__ import annotations

import json
import os
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
    check = calls[0]  # every run checked before the first starts, with the same arguments
    assert check[:4] == ["-m", "processor.section_check", "--section", section]
    calls = [argv for argv in calls if argv[0] == "train.py"]
    assert len(calls) == count
    assert " ".join(check).split(" --run ")[1:] == [" ".join(argv[1:]) for argv in calls]
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
    first = recorded(record)[1]  # after the section's check
    assert first[0] == "2,3"  # an existing CUDA_VISIBLE_DEVICES is kept
    assert first[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert f"data.root={tmp_path}/mydata" in first
    assert f"train.output_dir={tmp_path}/runs/CUHK-PEDES/fmfa_paper" in first
    assert run_sh("paper", cwd=tmp_path, GPU="1", **{**env, "NPROC": "1"}).returncode == 0
    assert recorded(record)[-2][0] == "1"  # GPU=1 sets it


def test_paper_section_names_every_missing_input_in_its_own_words(tmp_path):
    """The real check, before any run: CLIP_WEIGHTS and DATA_ROOT (run.sh's variables, not the
    config keys) and every dataset of the section, once each; no run folder is made."""
    result = run_sh("paper", cwd=tmp_path, PYTHON=sys.executable, GPU="")
    assert result.returncode == 2 and not (tmp_path / "runs").exists()
    err = result.stderr
    assert "run.sh paper:" in err and "in the section's 3 run(s), found before any starts" in err
    assert f"CLIP_WEIGHTS='{tmp_path}/data/ViT-B-16.pt': file not found. Set CLIP_WEIGHTS to" in err
    assert "model.pretrain" not in err and "data.root" not in err and err.count("set DATA_ROOT to") == 3
    for dataset in ("CUHK-PEDES", "ICFG-PEDES", "RSTPReid"):
        assert f"dataset folder {tmp_path}/data/{dataset} not found" in err
    assert err.count("CLIP_WEIGHTS=") == 1 and "== " not in result.stdout  # once, and no run started


def killing_python(tmp_path: Path) -> tuple[Path, Path]:
    """recording_python, and the train.py call whose train.output_dir is $KILL_RUN SIGKILLs
    itself once (a marker file remembers it): a stand-in for a run killed mid-way, for
    run.sh's own behaviour (what a real train.py does when rerun is the train tests')."""
    recorder, record = recording_python(tmp_path)
    marker = tmp_path / "killed_once"
    marked = f"os.path.exists({str(marker)!r})"
    recorder.write_text(
        recorder.read_text()
        + "import signal\n"
        + f"if 'train.output_dir=' + os.environ.get('KILL_RUN', '') in sys.argv and not {marked}:\n"
        + f"    open({str(marker)!r}, 'w').close()\n"
        + "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    return recorder, record


def test_a_killed_run_stops_the_section_and_a_rerun_repeats_its_commands(tmp_path):
    """SMOKE=1 bash run.sh paper with its second run SIGKILLed: set -e stops the section there
    (no third run, no table); the rerun issues the same commands (the same folders, with
    train.auto_resume=true), so each run is reported finished, continued from its last.pth or
    started by train.py itself (tests/runs/test_reliability.py, tests/runs/test_train.py), then tabulates
    all three. Every SMOKE command is a valid tiny CPU run on the drawn synthetic set."""
    runs = tmp_path / "runs"
    second = runs / "ICFG-PEDES" / "fmfa_paper"
    recorder, record = killing_python(tmp_path)
    env = {"SMOKE": "1", "RUNS": str(runs), "PYTHON": str(recorder), "KILL_RUN": str(second)}
    killed = run_sh("paper", cwd=tmp_path, **env)
    assert killed.returncode == 128 + signal.SIGKILL, killed.stderr[-3000:]  # set -e: bash stops with train.py
    first = runs / "CUHK-PEDES" / "fmfa_paper"
    assert [line for line in killed.stdout.splitlines() if line.startswith("== ")] == [f"== {first}", f"== {second}"]
    before = [argv[1:] for argv in recorded(record)]
    assert [argv[:2] for argv in before] == [
        ["-m", "datasets.synthetic"],
        ["train.py", "--config"],
        ["train.py", "--config"],
    ]
    result = run_sh("paper", cwd=tmp_path, **env)
    assert result.returncode == 0, result.stderr[-3000:]
    after = [argv[1:] for argv in recorded(record)][len(before) :]
    assert after[:3] == before  # the same data drawn, the same two runs in the same folders
    assert after[-1] == [
        "-m",
        "utils.report",
        *(str(runs / d / "fmfa_paper") for d in ("CUHK-PEDES", "ICFG-PEDES", "RSTPReid")),
    ]
    smoke_data = ["--root", str(runs / "smoke_data")]
    assert after[0][2:4] == smoke_data
    for argv in after[1:4]:
        cfg = parse_cli(argv[1:])
        assert cfg.train.auto_resume and cfg.train.output_dir.startswith(f"{runs}/")
        assert (cfg.data.root, cfg.data.dataset, cfg.train.device) == (smoke_data[1], "Synthetic-PEDES", "cpu")
        assert (cfg.model.pretrain, cfg.model.vision_layers, cfg.solver.epochs) == ("none", 1, 2)


@pytest.mark.slow(seconds=60)
def test_smoke_section_trains_every_run_and_tabulates_them(tmp_path):
    """SMOKE=1 bash run.sh paper (the README's CPU try of a section), with the real Python: the
    three runs train both epochs and the section's table lists them with their differences."""
    runs = tmp_path / "runs"
    env = {"SMOKE": "1", "RUNS": str(runs), "PYTHON": sys.executable}
    result = run_sh("paper", cwd=tmp_path, timeout=600, **env)
    assert result.returncode == 0, result.stderr[-3000:]
    for dataset in ("CUHK-PEDES", "ICFG-PEDES", "RSTPReid"):
        run = runs / dataset / "fmfa_paper"
        assert json.loads((run / "progress.json").read_text())["epoch"] == 2
        assert ckpt.load_training_state(run / "last.pth")["epoch"] == 2
        assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    table = result.stdout[result.stdout.index("| run") :]
    assert all(f"{dataset}/fmfa_paper" in table for dataset in ("CUHK-PEDES", "ICFG-PEDES", "RSTPReid"))
    assert "efa.text_margin" in table and "asdm.factor" in table  # what differs between the runs
