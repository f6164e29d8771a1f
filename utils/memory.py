"""Memory figures logged once per epoch: resident memory of this process and its data
workers, and the peak GPU memory allocated by PyTorch."""

from __future__ import annotations

from typing import Dict

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


def memory_figures(device: torch.device) -> Dict[str, float]:
    figures = {"rss_mb": resident_mb()}
    if device.type == "cuda":
        figures["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return figures
