"""On a CUDA GPU only (the GPU run's section a, `pytest -k cuda`; skipped elsewhere): one
training step per precision mode, the CUDA generator through a checkpoint, the peak-memory
counter, pinned batches, a CPU run that leaves CUDA alone, and an exact resume."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import ROOT, run_ok, tiny_batch, tiny_config, with_project_on_path
from train_fixtures import make_fixture, tiny_run_args

from configs.loader import load_config
from configs.validation import PRECISIONS
from datasets.build import build_train_loader
from model.build import build_criterion, build_model
from processor import checkpointing as ckpt
from processor.precision import Precision
from processor.run_info import take_gpu_peak_mb
from utils.reproducibility import set_tf32

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
CUDA = torch.device("cuda", 0)


def one_step_terms(mode: str, device: torch.device) -> dict:
    torch.manual_seed(0)
    cfg = tiny_config()
    precision = Precision(mode, device)
    model = precision.prepare_model(build_model(cfg, 6)).to(device)
    batch = {k: v.to(device) for k, v in tiny_batch(6, tuple(cfg.model.image_size)).items()}
    with precision.autocast():
        terms, _ = build_criterion(cfg)(model(batch), batch)
    sum(terms.values()).backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters()), mode
    return {name: float(value.detach()) for name, value in terms.items()}


@pytest.mark.parametrize("mode", PRECISIONS)
def test_cuda_step_in_each_precision_mode(mode):
    """Finite losses and gradients on the GPU; fp32 (TF32 off) equals the CPU's fp32 step."""
    set_tf32(False)
    on_gpu = one_step_terms(mode, CUDA)
    assert all(torch.isfinite(torch.tensor(v)) for v in on_gpu.values()), on_gpu
    if mode == "fp32":
        on_cpu = one_step_terms("fp32", torch.device("cpu"))
        for name, value in on_cpu.items():
            assert on_gpu[name] == pytest.approx(value, rel=1e-4), name


def test_cuda_generator_state_round_trips_through_a_checkpoint():
    state = ckpt.rng_state(CUDA)
    first = torch.rand(4, device=CUDA)
    ckpt.restore_rng_state(state, CUDA)
    assert torch.equal(torch.rand(4, device=CUDA), first)


def test_cuda_peak_memory_restarts_after_each_reading():
    take_gpu_peak_mb(CUDA)
    big = torch.empty(256 * 2**20, dtype=torch.uint8, device=CUDA)
    del big
    assert take_gpu_peak_mb(CUDA) >= 256
    assert take_gpu_peak_mb(CUDA) < 256


def test_cuda_batches_are_pinned(tmp_path):
    root = make_fixture(tmp_path / "data")
    cfg = load_config(None, tiny_run_args(root, tmp_path / "run", 1, "train.device=cuda"))
    loader, _ = build_train_loader(cfg)
    assert loader.pin_memory and next(iter(loader))["images"].is_pinned()


def test_cuda_left_alone_by_a_cpu_run(tmp_path):
    """train.device=cpu on this GPU machine: after a whole epoch CUDA is still uninitialised."""
    root = make_fixture(tmp_path / "data")
    args = tiny_run_args(root, tmp_path / "run", 1, "train.device=cpu")
    code = f"import torch, train; assert train.main({args!r}) == 0; print(torch.cuda.is_initialized())"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_cuda_run_killed_and_resumed_ends_with_the_whole_runs_weights(tmp_path):
    """pure_fp16 with train.deterministic: 2 epochs in one go, and killed after epoch 1 then resumed."""
    root = make_fixture(tmp_path / "data")
    extra = ["train.device=cuda", "train.precision=pure_fp16", "solver.eps=1e-3", "train.deterministic=true"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    env = with_project_on_path()
    run_ok([sys.executable, "train.py", *tiny_run_args(root, whole, 2, *extra)])
    first = subprocess.run(
        [sys.executable, "tests/fault_injection.py", *tiny_run_args(root, killed, 2, *extra)],
        cwd=ROOT,
        env={**env, "FMFA_FAULT_KILL_AFTER_EPOCH": "1"},
        capture_output=True,
        timeout=300,
    )
    assert first.returncode == -9, first.stderr[-3000:]
    run_ok([sys.executable, "train.py", *tiny_run_args(root, killed, 2, *extra, "train.auto_resume=true")])
    weights = [ckpt.load_training_state(run / "last.pth")["model"] for run in (whole, killed)]
    assert all(torch.equal(value, weights[1][name]) for name, value in weights[0].items())
