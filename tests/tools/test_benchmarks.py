"""The benchmark scripts run on the CPU with their tiny preset and print positive figures.

Each script's ``main(argv)`` runs in this process (the argv of ``python -m benchmarks.X``):
a subprocess would only import torch again. The GPU check runs as the bash script it is."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
from conftest import ROOT, run_ok

from benchmarks import (
    ddp_loss,
    efficiency,
    eval_speed,
    shard_loader,
    shard_split,
    shared_caption,
    stream_resume,
    train_step,
)


def run_script(capsys, main: Callable, *args: str) -> str:
    """``main(args)``, the benchmark's command line run in process; what it printed. Its
    result is the exit status ``python -m benchmarks.X`` ends with: 0 or None (anything else,
    a dict of figures say, is printed by ``sys.exit`` and exits 1)."""
    capsys.readouterr()
    status = main(list(args))
    assert status in (0, None), f"{main.__module__}.main returned {status!r}, not an exit status"
    return capsys.readouterr().out


@pytest.mark.slow(seconds=10)
def test_train_step_benchmark_tiny_preset(capsys):
    out = run_script(
        capsys,
        train_step.main,
        "--modes",  # pure_fp16 with grad checkpointing: section b of benchmarks/gpu_run.sh
        "fp32",
        "pure_fp16",
        "--grad-checkpointing",
        "--steps",
        "2",
        "--repeats",
        "1",
        "--warmup",
        "1",
        "--pipeline",
        "--pipeline-mode",
        "fp32",
        "--workers",
        "0",
    )
    assert "preset tiny" in out and re.search(r"[\d.]+ GFLOP per step", out)
    rows = {m.group(1): float(m.group(2)) for m in re.finditer(r"\|\s+(fp32|pure_fp16)\s+\|\s+([\d.]+)\s+\|", out)}
    assert set(rows) == {"fp32", "pure_fp16"} and all(rate > 0 for rate in rows.values())
    pipeline = re.search(r"full pipeline \(fp32, 0 workers, synthetic JPEGs\): ([\d.]+) samples/s = ([\d.]+)%", out)
    assert pipeline and float(pipeline.group(1)) > 0


def test_eval_speed_benchmark_tiny_preset(capsys):
    out = run_script(
        capsys, eval_speed.main, "--repeats", "1", "--images", "60", "--captions", "120", "--jpeg", "--workers", "0"
    )
    match = re.search(r"model only .*: 60 images \+ 120 captions encoded in ([\d.]+) s .* ranked in ([\d.]+) s", out)
    assert match and float(match.group(1)) > 0
    assert re.search(
        r"with JPEG decoding \(0 loader workers, synthetic JPEGs\): \d+ images \+ \d+ captions in [\d.]+ s", out
    )


def test_efficiency_report_tiny_preset(capsys):
    out = run_script(capsys, efficiency.main, "--preset", "tiny", "--batch", "4", "--repeats", "1")
    counts = dict(re.findall(r"\| (.+?)\s+\| ([\d.]+)\s+\|", out))
    parts = [key for key in counts if "(used at test)" in key or "(training only)" in key]
    assert len(parts) == 4 and float(counts["total"]) == pytest.approx(sum(float(counts[k]) for k in parts), abs=0.02)
    assert re.search(r"caption query \(77 tokens\)\s+\| [\d.e+-]+\s+\| [\d.]+", out)
    assert re.search(r"gallery image \(96 x 32\)\s+\| [\d.e+-]+\s+\| [\d.]+", out)


def test_shared_caption_benchmark_tiny_preset(capsys):
    out = run_script(capsys, shared_caption.main, "--preset", "tiny", "--batch", "4", "--warmup", "0", "--steps", "1")
    rows = re.findall(r"\| (two text passes|one shared pass).*?\| ([\d.]+)\s+\| ([\d.]+)\s+\|", out)
    assert [name for name, _, _ in rows] == ["two text passes", "one shared pass"]
    assert all(float(seconds) > 0 for _, seconds, _ in rows) and float(rows[0][2]) == 1.0


@pytest.mark.slow(seconds=20)
def test_train_step_memory_comparison_tiny_preset(capsys):
    out = run_script(
        capsys,
        train_step.main,
        "--memory",
        "--preset",
        "tiny",
        "--batch",
        "4",
        "--warmup",
        "1",
        "--steps",
        "1",
        "--variants",
        "default",
        "checkpointing",
    )
    rows = re.findall(r"\|\s+(fp32 \(default\)|fp32 \+ grad checkpointing)\s+\|\s+([\d.]+)\s+\|\s+([\d.]+)\s+\|", out)
    assert [name for name, _, _ in rows] == ["fp32 (default)", "fp32 + grad checkpointing"]
    assert all(float(seconds) > 0 for _, seconds, _ in rows) and float(rows[0][2]) == 1.0


def test_ddp_loss_benchmark_tiny_preset(capsys):
    out = run_script(capsys, ddp_loss.main, "--preset", "tiny", "--repeats", "1")
    rows = re.findall(r"\|\s+(\d)\s+\|\s+(\d+)\s+\|\s+([\d.]+)\s+\|\s+([\d.]+)\s+\|", out)
    assert [(n, r) for n, r, _, _ in rows] == [("1", "8"), ("2", "4"), ("4", "2")]
    assert all(float(ms) > 0 for _, _, ms, _ in rows) and float(rows[0][3]) == 1.0


@pytest.mark.slow(seconds=55)
def test_gpu_run_runs_its_cpu_preset(tmp_path):
    """benchmarks/gpu_run.sh on its CPU preset, section d (the killed, resumed and tested run):
    it passes and reports, the others are listed as not run, at most 8 flat files in OUT, no
    checkpoint there. Sections a, b and c are a plain pytest and the benchmarks that
    test_train_step_benchmark_tiny_preset (pure_fp16, grad checkpointing) and
    test_eval_speed_benchmark_tiny_preset run in process; gpu_dry_run.sh runs them all."""
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "PYTHON": sys.executable, "GPU_RUN_SECTIONS": "d", "GPU_RUN_BUDGET": "1500"}
    run_ok(["bash", "benchmarks/gpu_run.sh", str(out)], env={**env, "GPU_RUN_WORK": str(work)})
    report = (out / "gpu_run.md").read_text()
    rows = dict(re.findall(r"^\| ([a-f]\. [^|]+?) \| ([^|]+?) \|", report, re.M))
    assert [name[0] for name in rows] == list("abbcddddeeef"), rows
    assert all(v.startswith("not run (") for k, v in rows.items() if k[0] in "abcef"), rows
    assert rows["d. run, killed after epoch 1"] == "137 (expected)" and rows["d. run, resumed to epoch 2"] == "0"
    assert rows["d. draw Synthetic-PEDES"] == rows["d. test.py on the run"] == "0", rows
    files = sorted(p.name for p in out.iterdir())
    assert files == ["config.yaml", "gpu_run.log", "gpu_run.md", "metrics.jsonl", "test.json", "train.log"], files
    assert [r["epoch"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())] == [1, 2]
    assert "resumed from" in (out / "train.log").read_text()
    assert not list(out.glob("*.pth")) and (work / "run" / "last.pth").is_file()
    assert "\r" not in (out / "gpu_run.log").read_text()  # progress as lines, not a bar's redraws


def hide_modules(folder: Path, *names: str) -> Path:
    """A sitecustomize.py in ``folder`` that makes ``names`` unimportable (PYTHONPATH=folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {set(names)!r}:\n"
        "            raise ModuleNotFoundError(name, name=name)\n"
        "sys.meta_path.insert(0, Hide())\n"
    )
    return folder


def test_gpu_run_stops_at_once_without_the_packages(tmp_path):
    """No open_clip or prettytable and no wheels to install: one line naming them and the command
    that fetches the wheels, in seconds, before any section."""
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "PYTHONPATH": str(hide_modules(tmp_path / "hide", "open_clip", "prettytable")),
        "GPU_RUN_WHEELS": str(tmp_path / "no_wheels"),
        "GPU_RUN_WORK": str(tmp_path / "work"),
    }
    started = time.monotonic()
    result = subprocess.run(
        ["bash", "benchmarks/gpu_run.sh", str(tmp_path / "out")], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2 and time.monotonic() - started < 20, result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("gpu_run.sh: not run: open_clip prettytable missing"), line
    assert f"bash benchmarks/gpu_wheels.sh {tmp_path / 'no_wheels'}" in line
    report = (tmp_path / "out" / "gpu_run.md").read_text()
    assert "not run: open_clip prettytable missing" in report and "| a. " not in report


@pytest.mark.slow(seconds=10)
def test_gpu_run_header_names_commit_space_and_versions_without_git(tmp_path):
    """A copy of the script with no .git, as the GPU machine receives the tree: the commit comes
    from the wheels' COMMIT file; free space and the extra versions are in the header; section f
    says why it was not run; a rerun of section e alone draws section d's data first."""
    (tmp_path / "repo" / "benchmarks").mkdir(parents=True)
    shutil.copy(ROOT / "benchmarks" / "gpu_run.sh", tmp_path / "repo" / "benchmarks")
    (tmp_path / "repo" / ".whl").mkdir()
    (tmp_path / "repo" / ".whl" / "COMMIT").write_text("abc1234, wheels fetched 2026-12-06 05:00 UTC\n")
    env = {**os.environ, "PYTHON": sys.executable, "GPU_RUN_SECTIONS": "e", "GPU_RUN_BUDGET": "1"}
    env["GPU_RUN_WORK"] = str(tmp_path / "work")
    run_ok(["bash", "benchmarks/gpu_run.sh", str(tmp_path / "out")], cwd=tmp_path / "repo", env=env)
    report = (tmp_path / "out" / "gpu_run.md").read_text()
    assert "commit abc1234, wheels fetched 2026-12-06 05:00 UTC (from .whl/COMMIT: no .git here)" in report
    versions = r"^python [\d.]+ \| torch .+ \| open_clip [\d.]+ \| transformers \S+ \| timm \S+ "
    versions += r"\| huggingface_hub \S+ \| GPUs 0$"
    assert re.search(versions, report, re.M), report[:900]
    assert re.search(r"^Filesystem .*\n.* /dev/shm$", report, re.M) and "/dev/shm: " in report, report[:900]
    assert re.search(r"^work folder .*: \d+ GiB free", report, re.M), report[:900]
    assert "| f. 2-GPU equality (NCCL) | not run (0 GPU) | 0 |" in report
    rows = re.findall(r"^\| ([a-f]\. [^|]+?) \| ([^|]+?) \|", report, re.M)
    assert rows[4] == ("e. draw Synthetic-PEDES (section d's data)", "not run (time budget spent)"), rows
    assert rows[8] == ("e. run with train.deterministic=true", "not run (time budget spent)"), rows


@pytest.mark.slow(seconds=10)
def test_gpu_run_stops_when_nvidia_smi_lists_a_gpu_torch_does_not_see(tmp_path):
    """A GPU machine whose torch sees no GPU stops with utils/gpu.py's reason instead of quietly
    running the CPU preset."""
    (tmp_path / "bin").mkdir()
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.write_text(
        '#!/bin/sh\ncase "$*" in\n  -L) echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)";;\n'
        "  *driver_version*) echo 580.65.06;;\nesac\n"
    )
    smi.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        "PYTHON": sys.executable,
        "CUDA_VISIBLE_DEVICES": "",
        "GPU_RUN_WORK": str(tmp_path / "work"),
    }
    result = subprocess.run(
        ["bash", "benchmarks/gpu_run.sh", str(tmp_path / "out")], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr
    assert "nvidia-smi lists 1 GPU(s) but torch sees none: " in result.stderr
    assert "CUDA_VISIBLE_DEVICES=''" in result.stderr  # utils.gpu's reason
    assert "| a. " not in (tmp_path / "out" / "gpu_run.md").read_text()


@pytest.mark.slow(seconds=30)
def test_shard_loader_benchmark_tiny_preset(capsys):
    """Files and shards both load, and the ratio printed is that of the two rates printed."""
    argv = ["--ids", "4", "--workers", "0", "--batches", "1", "--batch-size", "4", "--rounds", "1"]
    out = run_script(capsys, shard_loader.main, *argv)
    files, shards, ratio = (
        float(value) for value in re.search(r"^\s+0\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", out, re.M).groups()
    )
    assert files > 0 and shards > 0 and abs(ratio - shards / files) <= 0.01 + 0.01 * ratio
    assert re.search(r"bare reads, images/s: files \d+, shards \d+ .*tarfile \d+$", out, re.M)


@pytest.mark.slow(seconds=15)
def test_stream_resume_benchmark_tiny_preset(capsys):
    """Each resumed first batch is timed and is the unbroken epoch's batch there."""
    out = run_script(capsys, stream_resume.main, "--ids", "6", "--batch-size", "4", "--at", "0", "0.5", "0.9")
    rows = re.findall(r"^\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+(\w+)$", out, re.M)
    assert len(rows) == 3 and int(rows[0][0]) == 0 < int(rows[1][0]) < int(rows[2][0])
    assert all(same == "True" for *_, same in rows)


@pytest.mark.slow(seconds=2)
def test_shard_split_benchmark_tiny_preset(capsys):
    """Both splits decode the same pairs per rank; the batch split reads more; the ratio printed is theirs."""
    out = run_script(capsys, shard_split.main, "--ids", "6", "--ranks", "2", "--batch-size", "4", "--shard-size", "4")
    rows = {
        split: (float(mb), int(float(decoded)))
        for split, mb, decoded in re.findall(r"^\s+2\s+(batches|blocks)\s+([\d.]+)\s+[\d.]+\s+([\d.]+)$", out, re.M)
    }
    assert rows["batches"][1] == rows["blocks"][1] > 0 and rows["batches"][0] > rows["blocks"][0]
    ratio = float(re.search(r"batches / blocks: ([\d.]+)$", out, re.M).group(1))
    (batches, _), (blocks, _) = rows["batches"], rows["blocks"]  # MB printed to 0.01
    assert (batches - 0.005) / (blocks + 0.005) - 0.005 <= ratio <= (batches + 0.005) / (blocks - 0.005) + 0.005
