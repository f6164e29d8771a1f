"""The paths that only a GPU machine takes, checked on the CPU with torch.cuda mocked: the
process-group timeout, each rank's device, the CUDA RNG state on resume, a CPU run on a GPU
machine, TF32, the per-epoch peak memory and the message when no GPU is visible. Each test
fails on the code before its fix (docs/testing.md)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from train_fixtures import make_fixture, tiny_run_args

import train as train_cli
from configs.defaults import Config, TrainConfig
from configs.errors import ConfigError
from configs.loader import load_config
from datasets import build as data_build
from datasets.build import build_train_loader, pins_memory
from processor import checkpointing as ckpt
from processor.preflight import check_device
from processor import run_info
from utils import distributed, gpu
from utils.reproducibility import configure_kernels

CUDA0, CUDA1 = torch.device("cuda", 0), torch.device("cuda", 1)


@pytest.fixture
def gpus(monkeypatch):
    """A machine that shows ``count`` GPUs to torch (set ``gpus.count``); CUDA is never really used."""

    class Visible:
        count = 1

    monkeypatch.setattr(torch.cuda, "is_available", lambda: Visible.count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: Visible.count)
    return Visible


@pytest.fixture
def no_cuda_init(monkeypatch):
    """Any initialisation of CUDA (pinned memory, a CUDA generator, a kernel) fails the test.
    Pinning is refused at the tensor too: with a driver it starts CUDA in C++, past _lazy_init."""

    def refuse(*args, **kwargs):
        raise AssertionError("CUDA was initialised")

    monkeypatch.setattr(torch.cuda, "_lazy_init", refuse)
    monkeypatch.setattr(torch.Tensor, "pin_memory", refuse)
    for name in ("get_rng_state", "get_rng_state_all", "set_rng_state", "set_rng_state_all"):
        monkeypatch.setattr(torch.cuda, name, refuse)


@pytest.fixture
def loaders_built(monkeypatch):
    """Every DataLoader datasets.build makes, kept: whether it pins is its own decision, whatever
    this host (without a driver, torch skips the pinning a loader asks for)."""
    built = []

    class Kept(DataLoader):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(data_build, "DataLoader", Kept)
    return built


def test_the_process_group_waits_the_configured_time(monkeypatch):
    """NCCL's own timeout is 10 minutes; rank 0's evaluation and checkpoint can take longer."""
    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "rendezvous", lambda url, **kw: iter([(seen.setdefault("rdzv", kw), 1, 2)]))
    monkeypatch.setattr(dist, "PrefixStore", lambda prefix, store: store)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: seen.update(backend=backend, **kw))
    info = distributed.init_distributed("cpu", timeout_minutes=90)
    assert (info.rank, info.world_size, seen["backend"]) == (1, 2, "gloo")
    assert seen["timeout"] == seen["rdzv"]["timeout"] == timedelta(minutes=90)
    assert TrainConfig().dist_timeout_minutes >= 30  # the default outlasts NCCL's 10 minutes
    with pytest.raises(ConfigError, match="train.dist_timeout_minutes"):
        load_config(None, ["train.dist_timeout_minutes=0"])


def test_train_py_passes_its_timeout_on(monkeypatch):
    seen = {}

    class Stop(Exception):
        pass

    def fake_init(device, timeout_minutes):
        seen.update(device=device, timeout=timeout_minutes)
        raise Stop

    monkeypatch.setattr(train_cli, "check_run_inputs", lambda cfg, device: None)
    monkeypatch.setattr(train_cli, "init_distributed", fake_init)
    with pytest.raises(Stop):
        train_cli.main(["train.device=cpu", "train.dist_timeout_minutes=45"])
    assert seen == {"device": "cpu", "timeout": 45}


def test_each_rank_gets_its_own_gpu(gpus):
    gpus.count = 4
    assert [distributed.pick_device("cuda", rank, 8) for rank in range(8)] == [
        torch.device("cuda", r % 4) for r in range(8)
    ]
    gpus.count = 1  # a launcher that shows each rank its own GPU only (SLURM --gpus-per-task=1)
    assert distributed.pick_device("cuda", 3, 4) == CUDA0
    assert distributed.pick_device("auto", 3, 4) == CUDA0


def test_one_named_gpu_is_refused_under_torchrun_and_checked_alone(gpus):
    gpus.count = 2
    with pytest.raises(ConfigError, match="CUDA_VISIBLE_DEVICES"):
        distributed.pick_device("cuda:1", 0, 2)  # every rank on one GPU: NCCL would fail later
    assert distributed.pick_device("cuda:1", 0, 1) == CUDA1
    with pytest.raises(ConfigError, match="2 GPU"):
        distributed.pick_device("cuda:2", 0, 1)
    with pytest.raises(ConfigError, match="train.device"):
        load_config(None, ["train.device=gpu"])


def test_resume_with_fewer_gpus_than_at_save_time(gpus, monkeypatch):
    """last.pth of cuda:1 (or of an older run holding every GPU's state) onto a machine showing one GPU."""
    restored = []

    def set_state(state, device="cuda"):
        index = torch.device(device).index or 0
        if index >= gpus.count:
            raise RuntimeError(f"invalid device ordinal {index}")  # what torch says
        restored.append((index, state))

    monkeypatch.setattr(torch.cuda, "set_rng_state", set_state)
    monkeypatch.setattr(torch.cuda.random, "set_rng_state", set_state)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": torch.full((4,), torch.device(device).index))
    saved = ckpt.rng_state(CUDA1)
    assert torch.equal(saved["cuda"], torch.full((4,), 1))
    ckpt.restore_rng_state(saved, CUDA0)
    old_format = {"torch": torch.get_rng_state(), "cuda": [torch.full((4,), 0), torch.full((4,), 1)]}
    ckpt.restore_rng_state(old_format, CUDA0)
    assert [(i, int(s[0])) for i, s in restored] == [(0, 1), (0, 0)]


@pytest.fixture
def tf32_restored():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_a_cpu_run_on_a_gpu_machine_leaves_the_gpu_alone(
    gpus, no_cuda_init, loaders_built, tf32_restored, tmp_path, monkeypatch
):
    """train.device=cpu: no pinned memory (pinning initialises CUDA), no CUDA generator state in
    last.pth, and the GPUs hidden from the process (torch's Adam looks for a CUDA graph capture
    at every step when a GPU is visible); a whole epoch, its evaluation and its checkpoint run
    with CUDA initialisation refused."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # restored after the test; train.py changes it
    # as CUDA does: the GPUs visible when it is first asked for
    monkeypatch.setattr(torch.cuda, "is_available", lambda: os.environ["CUDA_VISIBLE_DEVICES"] != "")
    cfg = load_config(None, ["train.device=cpu"])
    assert not pins_memory(cfg) and pins_memory(load_config(None, ["train.device=auto"]))
    root = make_fixture(tmp_path / "data")
    loader, _ = build_train_loader(load_config(None, tiny_run_args(root, tmp_path / "unused", 1)))
    assert loader.pin_memory is False
    assert ckpt.rng_state(torch.device("cpu")).keys() == {"torch"}
    torch.backends.cuda.matmul.allow_tf32 = False
    assert train_cli.main(tiny_run_args(root, tmp_path / "run", 1)) == 0
    assert len(loaders_built) >= 3 and not any(loader.pin_memory for loader in loaders_built)  # train, eval x 2
    assert ckpt.load_training_state(tmp_path / "run" / "last.pth")["rng"].keys() == {"torch"}
    assert torch.backends.cuda.matmul.allow_tf32 is True  # train.tf32's default, set by train.py


def test_the_generator_state_goes_to_this_ranks_own_gpu(gpus, monkeypatch):
    """Restored onto cuda:1: the state saved on cuda:0 goes there, and of an old list of every
    GPU's state (torch.cuda.get_rng_state_all) cuda:1's entry, or the first when the list is shorter."""
    gpus.count = 2
    restored = []
    monkeypatch.setattr(
        torch.cuda, "set_rng_state", lambda state, device="cuda": restored.append((torch.device(device), int(state[0])))
    )
    cpu = torch.get_rng_state()
    for cuda in (torch.full((4,), 0), [torch.full((4,), 0), torch.full((4,), 1)], [torch.full((4,), 0)]):
        ckpt.restore_rng_state({"torch": cpu, "cuda": cuda}, CUDA1)
    assert restored == [(CUDA1, 0), (CUDA1, 1), (CUDA1, 0)]


def test_tf32_is_on_by_default_and_off_when_deterministic(monkeypatch, tf32_restored):
    # train.deterministic sets cuBLAS's workspace for the process; restored after the test
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "unset by this test")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda enabled: None)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    assert Config().train.tf32 is True
    for deterministic, tf32, expected in [(False, True, True), (True, True, False), (False, False, False)]:
        configure_kernels(deterministic, tf32)
        assert torch.backends.cuda.matmul.allow_tf32 is torch.backends.cudnn.allow_tf32 is expected
        assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") == (":4096:8" if deterministic else None)
        monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)


def test_gpu_peak_memory_is_per_epoch_and_per_phase(monkeypatch):
    """Training and evaluation each report their own peak, and epoch 2 not epoch 1's."""
    allocator = {"peak": 0}

    def allocate(mib: int) -> None:  # the caching allocator's high-water mark
        allocator["peak"] = max(allocator["peak"], mib * 2**20)

    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: allocator["peak"])
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: allocator.update(peak=0))
    reported = []
    for epoch_peak, eval_peak in [(900, 300), (500, 200)]:
        allocate(epoch_peak)
        reported.append(run_info.memory_figures(CUDA0, "train")["gpu_peak_train_mb"])
        allocate(eval_peak)
        reported.append(run_info.memory_figures(CUDA0, "eval")["gpu_peak_eval_mb"])
    assert reported == [900, 300, 500, 200]
    assert "gpu_peak_train_mb" not in run_info.memory_figures(torch.device("cpu"), "train")


DRIVER_FILES = {
    "535.129.03": "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.129.03  Thu Oct 19 18:56:32 UTC 2023\n",
    "580.65.06": "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  (dvs-builder)\n",
}


@pytest.mark.parametrize("version", DRIVER_FILES)
def test_the_driver_version_is_read(tmp_path, version):
    (tmp_path / "version").write_text(DRIVER_FILES[version])
    assert gpu.nvidia_driver_version(tmp_path / "version") == version


def test_a_too_old_driver_is_told_from_no_gpu():
    old = gpu.describe_missing_gpu("535.129.03", "13.0", "2.14.1+cu130", None)
    assert "535.129.03 is too old" in old and ">= 580.65.06" in old
    assert "pip install torch==2.14.1 --index-url https://download.pytorch.org/whl/cu126" in old
    none = gpu.describe_missing_gpu(None, "13.0", "2.14.1+cu130", None)
    assert "no NVIDIA driver" in none and "too old" not in none
    cpu_build = gpu.describe_missing_gpu("580.65.06", None, "2.14.1+cpu", None)
    assert "CPU-only build" in cpu_build and "whl/cu130" in cpu_build
    hidden = gpu.describe_missing_gpu("580.65.06", "13.0", "2.14.1+cu130", "")
    assert "CUDA_VISIBLE_DEVICES=''" in hidden


def test_the_preflight_says_why_no_gpu_is_visible(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gpu, "nvidia_driver_version", lambda *a: "470.82.01")
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    with pytest.raises(ConfigError, match="470.82.01 is too old.*whl/cu118"):
        distributed.pick_device("cuda")
    paper_size = load_config(Path("configs/cuhk_pedes.yaml"), ["train.device=auto"], check=False)
    with pytest.raises(ConfigError, match="found no GPU \\(NVIDIA driver 470.82.01 is too old"):
        check_device(paper_size, torch.device("cpu"))
