"""CLIP dual encoder through open_clip: building it, loading weights into it, its token outputs.

The backbone is open_clip's OpenAI-compatible ``CLIP`` (OpenAI key names), built at a
non-square input (384 x 128 for person images), with random weights (``none``) or the
weights :mod:`model.clip_weights` reads from a file or an open_clip tag.

The MLP activation is the one the weights were trained with (:mod:`model.open_clip_config`):
QuickGELU for OpenAI's weights and random init (the paper), plain GELU where open_clip's
tag config, model config or an ``open_clip_config.json`` beside the file says so (LAION,
DataComp). A model built with GELU carries a ``plain_gelu`` buffer, so its checkpoints say
so themselves; a bare state dict that says nothing is taken as OpenAI's (with a warning).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import ClassVar, Dict, Tuple

import open_clip
import torch
from open_clip.model import CLIPTextCfg, CLIPVisionCfg, resize_pos_embed

from configs.defaults import ModelConfig

from .clip_weights import GELU_MARKER, read_clip_state_dict, weights_activation
from .open_clip_config import HEAD_WIDTH
from .weights_file import WeightsError

logger = logging.getLogger(__name__)
VIT_B_16 = ModelConfig()  # the random-init sizes of configs/defaults.py: OpenAI's ViT-B/16


@dataclass(frozen=True)
class ClipArch:
    """Sizes of a CLIP ViT dual encoder (defaults: ViT-B/16, as ``model.*`` in configs/defaults.py)."""

    embed_dim: int = VIT_B_16.embed_dim
    vision_width: int = VIT_B_16.vision_width
    vision_layers: int = VIT_B_16.vision_layers
    patch_size: int = VIT_B_16.patch_size
    text_width: int = VIT_B_16.text_width
    text_layers: int = VIT_B_16.text_layers
    context_length: int = VIT_B_16.context_length
    vocab_size: int = VIT_B_16.vocab_size
    quick_gelu: ClassVar[bool] = True  # OpenAI's activation; GeluClipArch: plain GELU


@dataclass(frozen=True)
class GeluClipArch(ClipArch):
    """The same sizes with plain GELU (open_clip's LAION / DataComp weights)."""

    quick_gelu: ClassVar[bool] = False


def with_activation(arch: ClipArch, quick_gelu: bool) -> ClipArch:
    """``arch``'s sizes with QuickGELU (:class:`ClipArch`) or plain GELU (:class:`GeluClipArch`)."""
    return (ClipArch if quick_gelu else GeluClipArch)(**asdict(arch))


def build_clip(arch: ClipArch, image_size: Tuple[int, int]) -> open_clip.model.CLIP:
    """A randomly initialised open_clip CLIP of ``arch`` at ``image_size`` (H, W), with
    ``arch``'s activation (a GELU one carries the ``plain_gelu`` marker buffer).

    Image tokens come out of the vision tower (``output_tokens``); the learnable logit
    scale is removed because FMFA's temperature is fixed.
    """
    height, width = image_size
    if height % arch.patch_size or width % arch.patch_size:
        raise WeightsError(
            f"model.image_size={list(image_size)} is not divisible by the patch size {arch.patch_size} of the weights"
        )
    vision = CLIPVisionCfg(
        layers=arch.vision_layers,
        width=arch.vision_width,
        head_width=HEAD_WIDTH,
        patch_size=arch.patch_size,
        image_size=(height, width),
        output_tokens=True,
    )
    text = CLIPTextCfg(
        context_length=arch.context_length,
        vocab_size=arch.vocab_size,
        width=arch.text_width,
        heads=arch.text_width // HEAD_WIDTH,
        layers=arch.text_layers,
    )
    clip = open_clip.model.CLIP(arch.embed_dim, vision_cfg=vision, text_cfg=text, quick_gelu=arch.quick_gelu)
    del clip.logit_scale
    if not arch.quick_gelu:
        clip.register_buffer(GELU_MARKER, torch.ones(()))
    return clip


def _count_blocks(state_dict: Dict[str, torch.Tensor], prefix: str) -> int:
    return len({k[len(prefix) :].split(".")[0] for k in state_dict if k.startswith(prefix)})


def arch_from_state_dict(state_dict: Dict[str, torch.Tensor]) -> ClipArch:
    """Read the sizes of an OpenAI-format ViT CLIP state dict (unprefixed keys), and its
    activation: plain GELU where it carries the ``plain_gelu`` marker, else QuickGELU."""
    conv = state_dict["visual.conv1.weight"]
    return with_activation(
        ClipArch(
            embed_dim=state_dict["text_projection"].shape[1],
            vision_width=conv.shape[0],
            vision_layers=_count_blocks(state_dict, "visual.transformer.resblocks."),
            patch_size=conv.shape[-1],
            text_width=state_dict["ln_final.weight"].shape[0],
            text_layers=_count_blocks(state_dict, "transformer.resblocks."),
            context_length=state_dict["positional_embedding"].shape[0],
            vocab_size=state_dict["token_embedding.weight"].shape[0],
        ),
        quick_gelu=GELU_MARKER not in state_dict,
    )


class ImageSizeError(WeightsError):
    """Weights trained at an image size whose patch grid the model's image size cannot take."""


def fit_position_embedding(
    state_dict: Dict[str, torch.Tensor], clip: open_clip.model.CLIP, source: str
) -> Dict[str, torch.Tensor]:
    """A copy of ``state_dict`` whose vision position embedding fits ``clip``'s patch grid.

    A square grid (224 x 224 checkpoints) is resized bilinearly without antialias (the
    reference's resize, not open_clip's bicubic + antialias default).
    """
    state_dict = dict(state_dict)
    grid = clip.visual.grid_size
    pos = state_dict["visual.positional_embedding"]
    if pos.shape[0] != grid[0] * grid[1] + 1:
        old = round((pos.shape[0] - 1) ** 0.5)
        if old * old + 1 != pos.shape[0]:
            raise ImageSizeError(
                f"{source}: position embedding for {pos.shape[0] - 1} patches is not a square "
                f"grid and does not fit the model's {grid[0]} x {grid[1]} grid; "
                f"use the image size it was trained at"
            )
        resize_pos_embed(state_dict, clip, interpolation="bilinear", antialias=False)
    return state_dict


def clip_from_state_dict(state_dict: Dict[str, torch.Tensor], image_size: Tuple[int, int], source: str):
    """Build the CLIP that ``state_dict`` describes, with the activation ``source`` says its
    weights were trained with (:func:`weights_activation`), at ``image_size`` and load it:
    (clip, arch)."""
    arch = arch_from_state_dict(state_dict)
    quick_gelu, origin = weights_activation(source, state_dict, asdict(arch))
    arch = with_activation(arch, quick_gelu)
    clip = build_clip(arch, image_size)
    weights = {key: value for key, value in state_dict.items() if key != GELU_MARKER}
    missing, unexpected = clip.load_state_dict(fit_position_embedding(weights, clip, source), strict=False)
    missing = [key for key in missing if key != GELU_MARKER]
    if missing or unexpected:
        raise WeightsError(
            f"{source}: CLIP weights do not fit the architecture read from them; "
            f"missing {missing[:8]}, unexpected {unexpected[:8]}"
        )
    logger.info("Loaded CLIP weights from %s (%s; %s: %s)", source, arch, "QuickGELU" if quick_gelu else "GELU", origin)
    return clip, arch


def create_clip(pretrain: str, image_size: Tuple[int, int], arch: ClipArch | None = None):
    """The backbone of ``pretrain`` (see ``read_clip_state_dict``; 'none' = random init
    of ``arch``). Returns ``(clip, arch)``; with weights, the sizes are read from them.
    """
    if pretrain == "none":
        arch = arch or ClipArch()
        return build_clip(arch, image_size), arch
    return clip_from_state_dict(read_clip_state_dict(pretrain), image_size, pretrain)


def encode_image_tokens(clip: open_clip.model.CLIP, images: torch.Tensor) -> torch.Tensor:
    """``ln_post(all tokens) @ visual.proj``  ->  [B, 1 + patches, embed_dim]."""
    pooled, patches = clip.visual(images)  # pooled is already projected, patches are not
    return torch.cat([pooled.unsqueeze(1), patches @ clip.visual.proj], dim=1)


def encode_text_tokens(clip: open_clip.model.CLIP, ids: torch.Tensor) -> torch.Tensor:
    """``ln_final(all tokens) @ text_projection`` under the causal mask  ->  [B, L, embed_dim].
    ``L`` must be the encoder's context length (its position embeddings); other lengths are
    refused with the tokenizer call that fits."""
    length = clip.positional_embedding.shape[0]
    if ids.shape[-1] != length:
        raise ValueError(
            f"token ids of length {ids.shape[-1]}, but this text encoder takes {length} per caption: "
            f"tokenize with tokenize_batch(captions, text_length={length})"
        )
    cast_dtype = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(ids).to(cast_dtype) + clip.positional_embedding.to(cast_dtype)
    x = clip.transformer(x, attn_mask=clip.attn_mask)
    return clip.ln_final(x) @ clip.text_projection
