"""Building FMFA models (from a config for training, or from any weight file for use) and
the training criterion."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from configs.defaults import LOSS_SETTINGS, Config
from configs.loader import load_config
from configs.validation import validate
from utils.run_folder import CONFIG_FILE

from .clip import (
    ClipArch,
    ImageSizeError,
    arch_from_state_dict,
    build_clip,
    clip_from_state_dict,
    create_clip,
    fit_position_embedding,
)
from .clip_weights import clean_clip_state_dict, is_torchscript_archive, read_clip_state_dict
from .fmfa import FMFA, head_arguments, head_arguments_in
from .loss import Collective, FMFALoss
from .weights_file import (
    FMFA_PREFIX,
    LAYOUTS,
    PartialLoad,
    WeightsError,
    WeightsNotFoundError,
    is_clip_state_dict,
    is_fmfa_state_dict,
    load_weights_file,
    load_what_fits,
    unwrap_state_dict,
)

logger = logging.getLogger(__name__)


def arch_from_config(cfg: Config) -> ClipArch:
    """The random-init backbone sizes named in ``cfg.model`` (same field names as ClipArch)."""
    return ClipArch(**{f.name: getattr(cfg.model, f.name) for f in dataclasses.fields(ClipArch)})


def build_criterion(cfg: Config, collective: Optional[Collective] = None) -> FMFALoss:
    """The training losses of ``cfg``: ``criterion(model(batch), batch) -> (terms, metrics)``.
    ``collective``: the process group the batch-coupled losses gather over under torchrun
    (``utils.distributed.loss_collective``); None = this process's batch alone.
    A config that fails :func:`configs.validation.validate` is refused (ConfigError): this is a
    public entry, which a config built in Python reaches without ``load_config``."""
    validate(cfg)
    settings = {section: getattr(cfg, section) for section in LOSS_SETTINGS}
    logit_scale = 1.0 / cfg.model.temperature
    return FMFALoss(cfg.loss.names, cfg.loss.weights, logit_scale=logit_scale, collective=collective, **settings)


def build_model(cfg: Config, num_classes: int) -> FMFA:
    """The training model of ``cfg``: backbone from ``cfg.model.pretrain`` plus the heads
    the enabled losses need (ID classifier with ``num_classes`` outputs for 'id', IRR with
    ``cfg.model.cmt_depth`` layers for 'mlm'). Float32; precision modes are applied by the
    trainer. ``cfg.model.grad_checkpointing``: activation checkpointing of every
    transformer block (both towers and the IRR transformer).
    """
    heads = head_arguments(cfg, num_classes)
    clip, arch = create_clip(cfg.model.pretrain, tuple(cfg.model.image_size), arch_from_config(cfg))
    model = FMFA(
        clip, arch.embed_dim, vocab_size=arch.vocab_size, share_masked_caption=cfg.data.share_masked_caption, **heads
    )
    if cfg.model.init_from:
        initialise_from(model, cfg.model.init_from)
    if cfg.model.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model


def initialise_from(model: FMFA, path: str) -> PartialLoad:
    """Copy the weights of an FMFA-layout checkpoint (e.g. Re-ID-domain pre-training) that fit
    ``model``; the position embedding is resized to the model's patch grid. Logs what was
    loaded, what is new and what was ignored (e.g. an ID head for other identities)."""
    state_dict = unwrap_state_dict(load_weights_file(path), path)
    if not is_fmfa_state_dict(state_dict):
        raise WeightsError(
            f"{path}: model.init_from needs an FMFA-layout checkpoint ('{FMFA_PREFIX}*' keys); "
            "CLIP weights go in model.pretrain"
        )
    position = FMFA_PREFIX + "visual.positional_embedding"
    try:  # a square grid (CLIP-style pre-training) is resized; another grid must match as is
        resized = fit_position_embedding(
            {"visual.positional_embedding": state_dict[position].float()}, model.base_model, path
        )
        state_dict = {**state_dict, position: resized["visual.positional_embedding"]}
    except (KeyError, ValueError):
        pass  # reported below among the ignored tensors, with both shapes
    report = load_what_fits(model, state_dict, path)
    logger.info("%s", report.summary(path))
    return report


def _fmfa_from_state_dict(state_dict: Dict[str, torch.Tensor], image_size, source: str) -> FMFA:
    clip_sd = {k[len(FMFA_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(FMFA_PREFIX)}
    clip_sd = clean_clip_state_dict(clip_sd, source)
    arch = arch_from_state_dict(clip_sd)
    heads = {"vocab_size": arch.vocab_size, **head_arguments_in(state_dict)}
    model = FMFA(build_clip(arch, image_size), arch.embed_dim, **heads)
    clip_sd = fit_position_embedding(clip_sd, model.base_model, source)
    full = {FMFA_PREFIX + k: v for k, v in clip_sd.items()}
    full.update({k: v.float() for k, v in state_dict.items() if not k.startswith(FMFA_PREFIX)})
    missing, unexpected = model.load_state_dict(full, strict=False)
    if missing or unexpected:
        raise WeightsError(
            f"{source}: weights do not fit the FMFA architecture read from them; "
            f"missing {missing[:8]}, unexpected {unexpected[:8]}"
        )
    logger.info(
        "Loaded FMFA weights from %s: %s, ID head of %d classes (training identities, or training captions "
        "under model.id_classes=captions), IRR depth %d",
        source,
        arch,
        heads["num_classes"],
        heads["cmt_depth"],
    )
    return model


PAPER_IMAGE_SIZE = (384, 128)


def run_image_size(path: str) -> Optional[Tuple[int, int]]:
    """``model.image_size`` of the run's config.yaml beside ``path`` (logged), else None."""
    beside = Path(path).parent / CONFIG_FILE
    if not beside.is_file():
        return None
    height, width = load_config(beside, check=False).model.image_size
    logger.info("%s: image size %d x %d from %s, the run's config beside it", path, height, width, beside)
    return int(height), int(width)


def model_from_checkpoint(path: str, image_size: Optional[Tuple[int, int]] = None) -> FMFA:
    """An FMFA model in eval mode from a weight file, its architecture read from the weights.

    ``path``: this project's or the reference's checkpoint (``{"model": state_dict}``,
    ``module.`` prefixes allowed), or bare CLIP weights (OpenAI TorchScript archive,
    OpenAI-format state dict, open_clip checkpoint), which give a model without heads.
    ``image_size`` (H, W): by default the run's, from a config.yaml beside the file, else 384 x 128.
    """
    if not os.path.isfile(path):
        raise WeightsNotFoundError(f"checkpoint not found: {path!r}")
    size = image_size or run_image_size(path)
    try:
        return _model_from_file(path, tuple(size or PAPER_IMAGE_SIZE))
    except ImageSizeError as error:
        if size is not None:
            raise
        raise ImageSizeError(
            f"{error} (read at {PAPER_IMAGE_SIZE[0]} x {PAPER_IMAGE_SIZE[1]}, as no {CONFIG_FILE} is beside it: "
            "pass image_size=(H, W), or keep the run's config.yaml beside the weights)"
        ) from None


def _model_from_file(path: str, image_size: Tuple[int, int]) -> FMFA:
    if is_torchscript_archive(path):
        state_dict = read_clip_state_dict(path)
    else:
        state_dict = unwrap_state_dict(load_weights_file(path), path)
    if is_fmfa_state_dict(state_dict):
        model = _fmfa_from_state_dict(state_dict, image_size, path)
    elif is_clip_state_dict(state_dict):
        clip, arch = clip_from_state_dict(clean_clip_state_dict(state_dict, path), image_size, path)
        model = FMFA(clip, arch.embed_dim, vocab_size=arch.vocab_size)
    else:
        raise WeightsError(
            f"{path}: unknown checkpoint layout (keys such as {sorted(state_dict)[:5]}). "
            f"Expected one of: " + "; ".join(LAYOUTS)
        )
    return model.eval()
