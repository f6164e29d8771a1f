"""What open_clip weights were trained with, from open_clip's own metadata (read locally:
nothing is downloaded to decide).

open_clip trains CLIPs of many kinds. This project's backbone (``model.clip.build_clip``) is
the OpenAI-style ViT CLIP: learnable position embedding, class-token pooling, a causal text
transformer pooled at the end-of-text token, 64-wide attention heads, MLPs 4x wide, OpenAI's
image mean and std; its sizes are read from the weights. What the weights cannot show is
the MLP activation: OpenAI's (and some open_clip) weights use QuickGELU, LAION's and
DataComp's plain GELU. That, and whether the rest of the model fits this backbone, is read
from the pretrained tag's config (``quick_gelu``), the model config (``-quickgelu`` names set
it) or an ``open_clip_config.json`` beside a weights file (what the hub ships beside them).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import open_clip
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.model import CLIPTextCfg, CLIPVisionCfg

from .weights_file import WeightsError, WeightsNotFoundError

OPEN_CLIP_CONFIG_FILE = "open_clip_config.json"  # open_clip's hub / local-dir layout: {"model_cfg", "preprocess_cfg"}
_TOP_LEVEL = ("embed_dim", "quick_gelu", "vision_cfg", "text_cfg")
# Config fields that the weights themselves show (sizes) or that do not change what trained
# weights compute (training-time settings, a pooling id that argmax pooling never reads).
_FROM_WEIGHTS = {
    "vision_cfg": ("layers", "width", "patch_size", "image_size"),
    "text_cfg": ("layers", "width", "heads", "context_length", "vocab_size"),
}
_NO_EFFECT = ("patch_dropout", "output_tokens", "timm_model_pretrained", "hf_model_pretrained", "eos_id")
_DEFAULTS = {
    "vision_cfg": {f.name: f.default for f in dataclasses.fields(CLIPVisionCfg)},
    "text_cfg": {f.name: f.default for f in dataclasses.fields(CLIPTextCfg)},
}
HEAD_WIDTH = 64  # OpenAI CLIP: attention heads = width // 64 in both towers


def _tower(model_cfg: dict, name: str) -> dict:
    """A tower's config with open_clip's defaults filled in."""
    return {**_DEFAULTS[name], **model_cfg.get(name, {})}


@dataclass(frozen=True)
class OpenClipSpec:
    """The activation of some open_clip weights, the model config they come with, and what said so."""

    quick_gelu: bool
    model_cfg: dict
    origin: str


def unsupported_features(model_cfg: dict) -> List[str]:
    """Every setting of an open_clip model config that this project's backbone does not build."""
    found = [
        f"{key}={value!r}"
        for key, value in model_cfg.items()
        if key not in _TOP_LEVEL and not (key == "custom_text" and not value)
    ]
    for tower, defaults in _DEFAULTS.items():
        config = model_cfg.get(tower, {})
        for key, value in config.items():
            if key in _FROM_WEIGHTS[tower] or key in _NO_EFFECT:
                continue
            if key not in defaults or value != defaults[key]:
                found.append(f"{tower}.{key}={value!r}")
    layers = _tower(model_cfg, "vision_cfg")["layers"]
    if not isinstance(layers, int):
        found.append(f"vision_cfg.layers={layers!r} (a ResNet image tower)")
    text = _tower(model_cfg, "text_cfg")
    width, heads = text["width"], text["heads"]
    if heads * HEAD_WIDTH != width:
        found.append(f"text_cfg.heads={heads} for width {width} (heads {HEAD_WIDTH} wide are built)")
    return found


def preprocess_problems(preprocess: dict) -> List[str]:
    """Image normalisation other than OpenAI's mean and std (the only one the transforms apply)."""
    found = []
    for key, expected in (("mean", OPENAI_DATASET_MEAN), ("std", OPENAI_DATASET_STD)):
        value = preprocess.get(key)
        if value is not None and [round(v, 6) for v in value] != [round(v, 6) for v in expected]:
            found.append(f"image {key} {tuple(value)} (the transforms use OpenAI's {tuple(expected)})")
    return found


def _refuse(what: str, problems: List[str]) -> None:
    if problems:
        raise WeightsError(
            f"{what}: these weights need {'; '.join(problems)}, which this project does not "
            "support (its backbone is open_clip's OpenAI-style ViT CLIP with OpenAI's image "
            "normalisation); choose other weights, e.g. an open_clip ViT-B-16 tag "
            "(open_clip.list_pretrained())"
        )


def spec_for_tag(model_name: str, tag: str, what: str) -> OpenClipSpec:
    """The spec of ``open_clip:MODEL/TAG`` (``what`` names it in errors). TAG is a pretrained tag
    (its config says the activation) or a weights file (the model config says it)."""
    tag = tag or "openai"
    is_file = os.path.isfile(tag)
    if model_name not in open_clip.list_models() or not (is_file or open_clip.get_pretrained_cfg(model_name, tag)):
        raise WeightsNotFoundError(
            f"{what}: open_clip has no model {model_name!r} with weights {tag!r} (a tag of "
            "open_clip.list_pretrained() or an existing weights file)"
        )
    model_cfg = open_clip.get_model_config(model_name)
    if is_file:
        _refuse(what, unsupported_features(model_cfg))
        return OpenClipSpec(bool(model_cfg.get("quick_gelu", False)), model_cfg, f"open_clip model config {model_name}")
    pretrained = open_clip.get_pretrained_cfg(model_name, tag)
    _refuse(what, unsupported_features(model_cfg) + preprocess_problems(pretrained))
    return OpenClipSpec(
        bool(pretrained.get("quick_gelu", False)), model_cfg, f"open_clip pretrained tag {model_name}/{tag}"
    )


def spec_beside(path: str) -> Optional[OpenClipSpec]:
    """The spec an ``open_clip_config.json`` beside the weights file ``path`` gives (None: none there)."""
    config_path = Path(path).parent / OPEN_CLIP_CONFIG_FILE
    if not config_path.is_file():
        return None
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WeightsError(
            f'{config_path}: unreadable open_clip config ({error}); expected JSON with "model_cfg"'
        ) from None
    model_cfg = config.get("model_cfg", config) if isinstance(config, dict) else None
    if not isinstance(model_cfg, dict) or not isinstance(model_cfg.get("vision_cfg"), dict):
        raise WeightsError(
            f'{config_path}: expected an open_clip config with "model_cfg" holding "vision_cfg" and "text_cfg"'
        )
    preprocess = config.get("preprocess_cfg", {})
    _refuse(
        f"{path} (per {config_path})",
        unsupported_features(model_cfg) + preprocess_problems(preprocess if isinstance(preprocess, dict) else {}),
    )
    return OpenClipSpec(bool(model_cfg.get("quick_gelu", False)), model_cfg, str(config_path))


def size_mismatches(model_cfg: dict, sizes: Dict[str, int]) -> List[str]:
    """The sizes (``model.clip.ClipArch`` fields) where the weights differ from ``model_cfg``."""
    vision, text = _tower(model_cfg, "vision_cfg"), _tower(model_cfg, "text_cfg")
    expected = {
        "embed_dim": model_cfg.get("embed_dim"),
        "vision_width": vision["width"],
        "vision_layers": vision["layers"],
        "patch_size": vision["patch_size"],
        "text_width": text["width"],
        "text_layers": text["layers"],
        "context_length": text["context_length"],
        "vocab_size": text["vocab_size"],
    }
    return [
        f"{key} {sizes[key]} (config: {value})"
        for key, value in expected.items()
        if value is not None and sizes.get(key) != value
    ]
