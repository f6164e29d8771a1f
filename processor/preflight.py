"""Checks made before a training run creates its folder or reads an annotation: every input
the run needs exists, and the device can train the configured model in reasonable time.
Each failure is a :class:`configs.errors.UserError` naming the key to set."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional

import torch

from configs.defaults import Config
from configs.errors import ConfigError, raise_all
from datasets.readers import check_dataset_files
from datasets.shards import read_manifest
from model.clip_weights import check_pretrain
from model.weights_file import WeightsError, WeightsNotFoundError, load_weights_file
from processor.checkpointing import TRAINING_STATE_KEYS
from utils.gpu import missing_gpu_reason
from utils.run_folder import LAST

# A training sample of CLIP ViT-B/16 at 384 x 128 with the paper's heads (forward + backward),
# counted by benchmarks.train_step (docs/performance.md): a count, not a time, so it holds on
# every machine.
GFLOP_PER_PAPER_SAMPLE = 125
PAPER_IMAGE_AREA = 384 * 128
INIT_FROM_HELP = (
    "a checkpoint in the authors' key layout ({'model': state_dict}, 'base_model.*' keys), e.g. the HAM or "
    "MLLM4Text-ReID pre-training (docs/training.md, 'Fine-tuning from Re-ID pre-training'), or '' for none"
)
RESUME_HELP = "a run folder holding last.pth, or a last.pth file, or '' to start a fresh run"


def run_input_checks(cfg: Config) -> List[Callable[[], None]]:
    """The checks that the weights (``model.pretrain``, ``model.init_from``, ``train.resume``)
    and datasets (``data.root`` / ``data.dataset`` and ``eval.cross_domain``, and ``data.shards``
    manifest and shard files) exist."""
    checks = [lambda: check_pretrain(cfg.model.pretrain)]
    checks += [lambda: check_exists("model.init_from", cfg.model.init_from, INIT_FROM_HELP)]
    checks += [lambda: check_resume(cfg.train.resume)]
    checks += [lambda name=name: check_dataset_files(cfg.data.root, name) for name in eval_datasets(cfg)]
    if cfg.data.shards:  # training reads the shards' manifest and files; evaluation the datasets above
        checks += [lambda: read_manifest(cfg.data.shards).check_sizes()]
    return checks


def check_run_inputs(cfg: Config, device: Optional[torch.device] = None) -> None:
    """Every input of :func:`run_input_checks` and, given the ``device`` the run would use,
    :func:`check_device`: all the problems in one report, before anything is created."""
    device_check = [] if device is None else [lambda: check_device(cfg, device)]
    raise_all([*run_input_checks(cfg), *device_check])


def eval_datasets(cfg: Config) -> List[str]:
    """``data.dataset`` then ``eval.cross_domain``, each once."""
    return list(dict.fromkeys([cfg.data.dataset, *cfg.eval.cross_domain]))


def check_exists(key: str, path: str, help_text: str) -> None:
    """``path`` ("" = unset) exists; else a :class:`WeightsNotFoundError` naming ``key``."""
    if path and not Path(path).exists():
        raise WeightsNotFoundError(f"{key}={path!r}: not found; {help_text}")


def check_resume(resume: str) -> None:
    """``train.resume`` ("" = unset) is a run folder holding last.pth or a training checkpoint
    (a last.pth); a best.pth, which holds the weights only, is refused with the two ways on."""
    check_exists("train.resume", resume, RESUME_HELP)
    path = Path(resume)
    if not resume or path.is_dir():
        return  # a folder without last.pth is answered by the run folder's start rules
    missing = TRAINING_STATE_KEYS - set(_checkpoint_keys(path))
    if missing:
        folder = path.parent
        raise WeightsError(
            f"train.resume={resume}: not a training checkpoint (no {', '.join(sorted(missing))}: a best.pth "
            f"holds the weights only). To continue the run: train.resume={folder} (its {LAST}); to start a "
            f"new run from these weights: model.init_from={resume}"
        )


def _checkpoint_keys(path: Path) -> List[str]:
    """The top-level keys of a checkpoint, its tensors memory-mapped rather than read; a file
    that cannot be mapped (an old-format or refused pickle, not a checkpoint) is read the safe
    way, whose errors name the file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # torch raises many types here; the safe reader below says which problem it is
        state = load_weights_file(str(path))
    return list(state) if isinstance(state, dict) else []


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
    per_step = GFLOP_PER_PAPER_SAMPLE * cfg.data.batch_size / 1000
    raise ConfigError(
        f"train.device=auto found no GPU ({missing_gpu_reason()}), and this config trains a CLIP ViT-B/16-sized "
        "model at "
        f"{cfg.model.image_size[0]} x {cfg.model.image_size[1]}: about {GFLOP_PER_PAPER_SAMPLE} GFLOP per training "
        f"sample (~{per_step:.0f} TFLOP per step of data.batch_size={cfg.data.batch_size}; docs/performance.md), "
        "days to weeks per epoch on a CPU. "
        "Run it where a GPU is visible, or set train.device=cpu to train on the CPU anyway "
        "(configs/quickstart.yaml is the CPU-sized recipe)"
    )
