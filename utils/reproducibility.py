"""Repeatable runs: ``train.deterministic``.

The data pipeline is seeded whatever this setting (every sample's augmentation and MLM mask
come from (seed, epoch, index), independent of the number of workers), and the initial
weights from ``train.seed``. What this adds is the kernels: deterministic algorithms only
(torch raises naming an op that has none), no cuDNN autotuning and no TF32 (``train.tf32``),
so two runs on the same machine, software and GPU model give the same numbers. Across GPU
models, driver/library versions or CPU instruction sets, floating-point results may still
differ in the last bits.
"""

from __future__ import annotations

import os

import torch


def set_tf32(enabled: bool) -> None:
    """TF32 tensor cores for float32 matrix products and cuDNN convolutions (GPUs from Ampere on;
    no effect elsewhere)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def configure_kernels(deterministic: bool, tf32: bool) -> None:
    """``train.deterministic`` and ``train.tf32`` for this process: TF32 follows ``tf32`` except
    under ``deterministic``, which turns it off (TF32 rounds differently from float32, and a
    repeatable run should equal its float32 reference on any GPU)."""
    set_tf32(tf32 and not deterministic)
    make_deterministic(deterministic)


def make_deterministic(enabled: bool) -> None:
    if not enabled:
        return
    # cuBLAS needs a fixed workspace for deterministic GEMMs (set before the first CUDA call).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
