"""Loading a trained model for use (test.py, search.py, visualize.py, export_features.py).

A source is a run folder (its ``config.yaml`` and ``best.pth`` or ``last.pth``), a
checkpoint of this project or of the reference, or bare CLIP weights. The architecture
is read from the weights; image size, caption length and evaluation settings come from
the run's config (or ``--config`` / overrides, else the defaults).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager, Optional, Sequence, Tuple

import torch

from configs.defaults import Config
from configs.errors import ConfigError
from configs.loader import load_config
from model.build import model_from_checkpoint
from model.checkpoint import WeightsNotFoundError
from model.fmfa import FMFA
from utils.run_folder import BEST, CONFIG_FILE, LAST
from processor.precision import Precision
from utils.distributed import pick_device


def resolve_source(source: str | Path, config: Optional[str] = None, overrides: Sequence[str] = (),
                   which: str = "best") -> Tuple[Config, Path]:
    """(validated config, weights file) of a run folder or a weights file."""
    source = Path(source)
    if source.is_dir():
        saved = source / CONFIG_FILE
        if not saved.is_file():
            raise ConfigError(f"{source} is a folder without {CONFIG_FILE}; give a run folder or a weights file")
        cfg, weights = load_config(config or saved, overrides), source / (BEST if which == "best" else LAST)
    else:
        cfg, weights = load_config(config, overrides), source
    if not weights.is_file():
        raise WeightsNotFoundError(f"checkpoint not found: {weights}")
    return cfg, weights


def inference_autocast(cfg: Config, device: torch.device) -> ContextManager:
    """The run's precision for inference (pure_fp16 runs are evaluated under fp16 autocast)."""
    mode = "amp_fp16" if cfg.train.precision == "pure_fp16" else cfg.train.precision
    if device.type == "cpu" and mode == "amp_fp16":
        return contextlib.nullcontext()  # fp16 autocast on a CPU is slow and no closer to the GPU's
    return Precision(mode, device).autocast()


@dataclass
class LoadedModel:
    model: FMFA
    cfg: Config
    weights: Path
    device: torch.device
    autocast: ContextManager


def model_for(cfg: Config, weights: Path) -> LoadedModel:
    """The model of ``weights`` in eval mode on ``cfg``'s device, with its inference autocast."""
    device = pick_device(cfg.train.device)
    model = model_from_checkpoint(str(weights), image_size=tuple(cfg.model.image_size)).to(device)
    return LoadedModel(model, cfg, weights, device, inference_autocast(cfg, device))


def load_model(source: str | Path, config: Optional[str] = None, overrides: Sequence[str] = (),
               which: str = "best") -> LoadedModel:
    """The model of a run folder or weights file (see :func:`resolve_source`)."""
    return model_for(*resolve_source(source, config, overrides, which))
