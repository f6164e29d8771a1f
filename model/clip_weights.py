"""CLIP weights from every kind of source, read as an OpenAI-format state dict.

Sources: a local OpenAI TorchScript archive (``ViT-B-16.pt``), an OpenAI-format state dict,
an open_clip checkpoint, an open_clip pretrained tag (``open_clip:ViT-B-16/openai``;
downloads) or ``open_clip:MODEL/FILE`` (a local file of open_clip model MODEL). Besides the
tensors, what the weights cannot show themselves: the MLP activation they were trained with
(QuickGELU or plain GELU), from the ``plain_gelu`` marker, the archive's kind or open_clip's
metadata (:mod:`model.open_clip_config`). Building the backbone and loading these weights
into it is :mod:`model.clip`.
"""

from __future__ import annotations

import logging
import os
import warnings
import zipfile
from typing import Dict, Tuple

import open_clip
import torch

from .open_clip_config import OpenClipSpec, size_mismatches, spec_beside, spec_for_tag
from .weights_file import (
    FMFA_PREFIX,
    WeightsError,
    WeightsNotFoundError,
    is_fmfa_state_dict,
    load_weights_file,
    unwrap_state_dict,
)

logger = logging.getLogger(__name__)

OPEN_CLIP_TAG_PREFIX = "open_clip:"
NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size", "logit_scale", "attn_mask")
GELU_MARKER = "plain_gelu"  # buffer (and state-dict key) of a backbone built with plain GELU


def is_torchscript_archive(path: str) -> bool:
    """True for a TorchScript zip (it carries code/), as OpenAI's ``ViT-B-16.pt`` is."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


CLIP_WEIGHTS_URL = (
    "https://openaipublic.azureedge.net/clip/models/5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/"
    "ViT-B-16.pt"
)
CLIP_WEIGHTS_HELP = (
    f"Set model.pretrain to OpenAI's CLIP ViT-B/16 file, e.g. data/ViT-B-16.pt, downloaded from {CLIP_WEIGHTS_URL} "
    "(an OpenAI-format state dict or an open_clip checkpoint works too); or to "
    f"'{OPEN_CLIP_TAG_PREFIX}ViT-B-16/openai' where open_clip can download; or 'none' for random initialisation"
)


def check_pretrain(pretrain: str, key: str = "model.pretrain") -> None:
    """Fail early, before any data is read, when ``pretrain`` cannot be what it names: a
    missing or empty file, an open_clip model/tag open_clip does not know, or open_clip
    weights of an architecture this backbone does not build (all without downloading)."""
    if pretrain == "none":
        return
    if pretrain.startswith(OPEN_CLIP_TAG_PREFIX):
        try:
            spec_for_tag(*split_open_clip_tag(pretrain), f"{key}={pretrain!r}")
        except WeightsNotFoundError as error:
            raise WeightsNotFoundError(f"{error}. {CLIP_WEIGHTS_HELP}") from None
        return
    if not os.path.isfile(pretrain):
        raise WeightsNotFoundError(f"{key}={pretrain!r}: file not found. {CLIP_WEIGHTS_HELP}")
    if os.path.getsize(pretrain) == 0:
        raise WeightsError(f"{key}={pretrain!r}: the file is empty (an interrupted download?). {CLIP_WEIGHTS_HELP}")
    spec_beside(pretrain)


def split_open_clip_tag(source: str) -> Tuple[str, str]:
    """``open_clip:MODEL/TAG`` -> (MODEL, TAG); TAG defaults to 'openai' and may be a file path."""
    model_name, _, tag = source[len(OPEN_CLIP_TAG_PREFIX) :].partition("/")
    return model_name, tag or "openai"


def _open_clip_tag_state_dict(source: str) -> Dict[str, torch.Tensor]:
    """Download (network needed) and return the state dict of ``open_clip:MODEL/TAG``."""
    model_name, pretrained = split_open_clip_tag(source)
    try:
        return open_clip.create_model(model_name, pretrained=pretrained).state_dict()
    except RuntimeError as error:  # open_clip's answer to a failed download
        raise WeightsNotFoundError(
            f"{source}: open_clip could not get the weights ({str(error).splitlines()[0][:300]}). Where the network "
            f"is reachable open_clip downloads and caches them; or copy the file here and set "
            f"model.pretrain={OPEN_CLIP_TAG_PREFIX}{model_name}/PATH_TO_FILE"
        ) from None


def _read_weights_file(path: str) -> Dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise WeightsNotFoundError(f"CLIP weights not found: {path!r}. {CLIP_WEIGHTS_HELP}")
    if is_torchscript_archive(path):
        with warnings.catch_warnings():  # torch deprecates jit.load; OpenAI's release needs it
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(path, map_location="cpu").state_dict()
    return unwrap_state_dict(load_weights_file(path), path)


def read_clip_state_dict(source: str) -> Dict[str, torch.Tensor]:
    """OpenAI-format CLIP weights from a file or an open_clip tag, float32, no prefixes.

    Accepts an OpenAI TorchScript archive (``torch.jit.load``), a state dict, or a
    checkpoint wrapping one under ``state_dict`` / ``model`` (``module.`` stripped);
    ``open_clip:MODEL/TAG`` downloads TAG, ``open_clip:MODEL/FILE`` reads FILE.
    """
    if source.startswith(OPEN_CLIP_TAG_PREFIX):
        tag = split_open_clip_tag(source)[1]
        state_dict = _read_weights_file(tag) if os.path.isfile(tag) else _open_clip_tag_state_dict(source)
    else:
        state_dict = _read_weights_file(source)
    if is_fmfa_state_dict(state_dict):  # a whole FMFA model (e.g. a pretraining run's best.pth), not CLIP
        raise WeightsError(
            f"model.pretrain={source!r} is an FMFA checkpoint ('{FMFA_PREFIX}*' keys, e.g. a run's best.pth); "
            f"model.pretrain takes CLIP weights: to start from this model set model.init_from={source} "
            "(docs/training.md, 'Fine-tuning from Re-ID pre-training')"
        )
    return clean_clip_state_dict(state_dict, source)


def _checked(spec: OpenClipSpec, sizes: Dict[str, int], source: str) -> OpenClipSpec:
    mismatches = size_mismatches(spec.model_cfg, sizes)
    if mismatches:
        raise WeightsError(f"{source}: the weights do not match {spec.origin}: {', '.join(mismatches)}")
    return spec


def weights_activation(source: str, state_dict: Dict[str, torch.Tensor], sizes: Dict[str, int]) -> Tuple[bool, str]:
    """(QuickGELU?, what said so) for the weights ``state_dict`` read from ``source``; ``sizes``
    (``model.clip.ClipArch``'s fields, read from the weights) must be those open_clip's config gives."""
    if source.startswith(OPEN_CLIP_TAG_PREFIX):
        spec = _checked(spec_for_tag(*split_open_clip_tag(source), source), sizes, source)
        return spec.quick_gelu, spec.origin
    if GELU_MARKER in state_dict:
        return False, f"the weights' {GELU_MARKER} marker"
    if os.path.isfile(source) and is_torchscript_archive(source):
        return True, "OpenAI's TorchScript archive"
    spec = spec_beside(source) if os.path.isfile(source) else None
    if spec is not None:
        return _checked(spec, sizes, source).quick_gelu, spec.origin
    logger.warning(
        "%s does not say which activation its weights were trained with: QuickGELU assumed (OpenAI's "
        "CLIP). For open_clip weights trained with GELU (LAION, DataComp) set model.pretrain="
        "open_clip:MODEL/%s or put open_clip's open_clip_config.json beside the file",
        source,
        source,
    )
    return True, "assumed (OpenAI's CLIP)"


def clean_clip_state_dict(state_dict: Dict[str, torch.Tensor], source: str) -> Dict[str, torch.Tensor]:
    """Float32 weights only (OpenAI archives also carry sizes and a logit scale), checked to be a ViT CLIP."""
    state_dict = {k: v.float() for k, v in state_dict.items() if k not in NON_WEIGHT_KEYS}
    if "visual.conv1.weight" not in state_dict or "text_projection" not in state_dict:
        raise WeightsError(
            f"{source}: not a ViT CLIP state dict (no 'visual.conv1.weight' / 'text_projection' "
            f"among keys such as {sorted(state_dict)[:5]})"
        )
    return state_dict
