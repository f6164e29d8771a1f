"""Optimizer and per-epoch learning-rate schedule."""

from .build import build_optimizer
from .lr_scheduler import build_lr_scheduler, lr_at, lr_factor

__all__ = ["build_lr_scheduler", "build_optimizer", "lr_at", "lr_factor"]
