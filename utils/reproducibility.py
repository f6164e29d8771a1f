"""Repeatable runs: ``train.deterministic``.

The data pipeline is seeded whatever this setting (every sample's augmentation and MLM mask
come from (seed, epoch, index), independent of the number of workers), and the initial
weights from ``train.seed``. What this adds is the kernels: deterministic algorithms only
(torch raises naming an op that has none) and no cuDNN autotuning, so two runs on the same
machine, software and GPU model give the same numbers. Across GPU models, driver/library
versions or CPU instruction sets, floating-point results may still differ in the last bits.
"""

from __future__ import annotations

import os

import torch


def make_deterministic(enabled: bool) -> None:
    if not enabled:
        return
    # cuBLAS needs a fixed workspace for deterministic GEMMs (set before the first CUDA call).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
