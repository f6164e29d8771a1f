"""Checks made before a training run creates its folder or reads an annotation: every input
the run needs exists, and the device can train the configured model in reasonable time.
Each failure is a :class:`configs.errors.UserError` naming the key to set."""

from __future__ import annotations

from pathlib import Path
from typing import List

import torch

from configs.defaults import Config
from configs.errors import ConfigError, raise_all
from datasets.readers import check_dataset_files
from model.clip_weights import check_pretrain
from model.weights_file import WeightsNotFoundError
from utils.gpu import missing_gpu_reason

# One fp32 training step of CLIP ViT-B/16 at 384 x 128 with the paper's heads, batch 16
# (forward + backward + Adam) on a 2-core CPU: 15.4 s, from
# `python -m benchmarks.train_step --memory --preset paper --batch 16` (docs/memory.md).
CPU_SECONDS_PER_16_SAMPLES = 15.0
PAPER_IMAGE_AREA = 384 * 128
INIT_FROM_HELP = (
    "a checkpoint in the authors' key layout ({'model': state_dict}, 'base_model.*' keys), e.g. the HAM or "
    "MLLM4Text-ReID pre-training (docs/training.md, 'Fine-tuning from Re-ID pre-training'), or '' for none"
)
RESUME_HELP = "a run folder holding last.pth, or a last.pth file, or '' to start a fresh run"


def check_run_inputs(cfg: Config) -> None:
    """Weights (``model.pretrain``, ``model.init_from``, ``train.resume``) and datasets
    (``data.root`` / ``data.dataset`` and ``eval.cross_domain``) exist."""
    checks = [lambda: check_pretrain(cfg.model.pretrain)]
    checks += [lambda: check_exists("model.init_from", cfg.model.init_from, INIT_FROM_HELP)]
    checks += [lambda: check_exists("train.resume", cfg.train.resume, RESUME_HELP)]
    checks += [lambda name=name: check_dataset_files(cfg.data.root, name) for name in eval_datasets(cfg)]
    raise_all(checks)  # every missing input in one report, not one per attempt


def eval_datasets(cfg: Config) -> List[str]:
    """``data.dataset`` then ``eval.cross_domain``, each once."""
    return list(dict.fromkeys([cfg.data.dataset, *cfg.eval.cross_domain]))


def check_exists(key: str, path: str, help_text: str) -> None:
    """``path`` ("" = unset) exists; else a :class:`WeightsNotFoundError` naming ``key``."""
    if path and not Path(path).exists():
        raise WeightsNotFoundError(f"{key}={path!r}: not found; {help_text}")


def is_gpu_sized(cfg: Config) -> bool:
    """A pretrained backbone (ViT-B/16 class) or a ViT-B-wide random one, at the paper's image size or larger."""
    height, width = cfg.model.image_size
    big_backbone = cfg.model.pretrain != "none" or cfg.model.vision_width >= 768
    return big_backbone and height * width >= PAPER_IMAGE_AREA


def check_device(cfg: Config, device: torch.device) -> None:
    """``train.device=auto`` that found no GPU refuses a GPU-sized config: on a CPU it would
    train for weeks. ``train.device=cpu`` says the user means it."""
    if cfg.train.device != "auto" or device.type != "cpu" or not is_gpu_sized(cfg):
        return
    per_step = CPU_SECONDS_PER_16_SAMPLES * cfg.data.batch_size / 16
    raise ConfigError(
        f"train.device=auto found no GPU ({missing_gpu_reason()}), and this config trains a CLIP ViT-B/16-sized "
        "model at "
        f"{cfg.model.image_size[0]} x {cfg.model.image_size[1]}: about {CPU_SECONDS_PER_16_SAMPLES:.0f} s per step "
        f"of 16 samples on a 2-core CPU (so ~{per_step:.0f} s per step of data.batch_size={cfg.data.batch_size}). "
        "Run it where a GPU is visible, or set train.device=cpu to train on the CPU anyway "
        "(configs/quickstart.yaml is the CPU-sized recipe)"
    )
