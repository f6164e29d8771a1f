"""Memory figures logged once per epoch: resident memory of this process and its data
workers, and the peak GPU memory allocated by PyTorch, for training and evaluation apart."""

from __future__ import annotations

from typing import Dict, Optional

import psutil
import torch


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
