"""What a run's log records about the run itself. At its start, so a result can be traced to its
code and machine: the git commit (and whether the tree had uncommitted changes), library
versions, the device and the parameter counts. Once per epoch, the memory figures: resident
memory of this process and its data workers, and the peak GPU memory allocated by PyTorch, for
training and evaluation apart."""

from __future__ import annotations

import logging
import platform
import subprocess
from pathlib import Path
from typing import Dict, Optional

import open_clip
import psutil
import torch

logger = logging.getLogger(__name__)
REPOSITORY = Path(__file__).resolve().parents[1]


def git_state(folder: Path = REPOSITORY) -> Optional[str]:
    """ "<commit>" or "<commit> (uncommitted changes)"; None outside a git checkout."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=folder, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + (" (uncommitted changes)" if dirty else "")


def environment() -> Dict[str, str]:
    cuda = torch.version.cuda if torch.cuda.is_available() else "not available"
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "cuda": str(cuda),
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def parameter_counts(model: torch.nn.Module) -> Dict[str, int]:
    """Total, trainable, and per top-level module."""
    counts = {
        "total": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    counts.update({name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()})
    return counts


def log_run_start(model: torch.nn.Module, device: torch.device) -> None:
    logger.info("code: %s", git_state() or "not a git checkout")
    logger.info("versions: %s", ", ".join(f"{k} {v}" for k, v in environment().items()))
    logger.info("device: %s", device_name(device))
    logger.info("parameters (M): %s", ", ".join(f"{k} {v / 1e6:.2f}" for k, v in parameter_counts(model).items()))


def resident_mb(include_children: bool = True) -> float:
    """RSS of this process (and of its child processes, e.g. DataLoader workers) in MiB."""
    process = psutil.Process()
    processes = [process] + (process.children(recursive=True) if include_children else [])
    total = 0
    for each in processes:
        try:
            total += each.memory_info().rss
        except psutil.NoSuchProcess:  # a worker that exited meanwhile
            pass
    return total / 2**20


def take_gpu_peak_mb(device: torch.device) -> Optional[float]:
    """The peak GPU memory allocated on ``device`` since the last call, MiB (None off the GPU);
    the counter restarts, so each epoch's training and each evaluation report their own peak."""
    if device.type != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated(device) / 2**20
    torch.cuda.reset_peak_memory_stats(device)
    return peak


def memory_figures(device: torch.device, phase: str) -> Dict[str, float]:
    """Resident MiB and, on a GPU, ``gpu_peak_<phase>_mb``: the peak since the last figures."""
    figures = {"rss_mb": resident_mb()}
    peak = take_gpu_peak_mb(device)
    if peak is not None:
        figures[f"gpu_peak_{phase}_mb"] = peak
    return figures
