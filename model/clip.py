"""CLIP dual encoder through open_clip, with the reference's token outputs and loading.

The backbone is open_clip's OpenAI-compatible ``CLIP`` (OpenAI key names), built at a
non-square input (384 x 128 for person images). Weights come from a local OpenAI
TorchScript archive, an OpenAI-format state dict, an open_clip checkpoint, an open_clip
pretrained tag (``open_clip:ViT-B-16/openai``; downloads), ``open_clip:MODEL/FILE`` (a local
file of open_clip model MODEL), or ``none``.

The MLP activation is the one the weights were trained with (:mod:`model.open_clip_config`):
QuickGELU for OpenAI's weights and random init (the paper), plain GELU where open_clip's
tag config, model config or an ``open_clip_config.json`` beside the file says so (LAION,
DataComp). A model built with GELU carries a ``plain_gelu`` buffer, so its checkpoints say
so themselves; a bare state dict that says nothing is taken as OpenAI's (with a warning).
"""

from __future__ import annotations

import logging
import os
import warnings
import zipfile
from dataclasses import asdict, dataclass
from typing import ClassVar, Dict, Tuple

import open_clip
import torch
from open_clip.model import CLIPTextCfg, CLIPVisionCfg, resize_pos_embed

from .checkpoint import WeightsError, WeightsNotFoundError, load_weights_file, unwrap_state_dict
from .open_clip_config import HEAD_WIDTH, OpenClipSpec, size_mismatches, spec_beside, spec_for_tag

logger = logging.getLogger(__name__)

OPEN_CLIP_TAG_PREFIX = "open_clip:"
NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size", "logit_scale", "attn_mask")
GELU_MARKER = "plain_gelu"  # buffer (and state-dict key) of a backbone built with plain GELU


@dataclass(frozen=True)
class ClipArch:
    """Sizes of a CLIP ViT dual encoder (defaults: ViT-B/16)."""

    embed_dim: int = 512
    vision_width: int = 768
    vision_layers: int = 12
    patch_size: int = 16
    text_width: int = 512
    text_layers: int = 12
    context_length: int = 77
    vocab_size: int = 49408
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
    return clean_clip_state_dict(state_dict, source)


def _checked(spec: OpenClipSpec, arch: ClipArch, source: str) -> OpenClipSpec:
    mismatches = size_mismatches(spec.model_cfg, asdict(arch))
    if mismatches:
        raise WeightsError(f"{source}: the weights do not match {spec.origin}: {', '.join(mismatches)}")
    return spec


def weights_activation(source: str, state_dict: Dict[str, torch.Tensor], arch: ClipArch) -> Tuple[bool, str]:
    """(QuickGELU?, what said so) for the weights ``state_dict`` read from ``source``."""
    if source.startswith(OPEN_CLIP_TAG_PREFIX):
        spec = _checked(spec_for_tag(*split_open_clip_tag(source), source), arch, source)
        return spec.quick_gelu, spec.origin
    if GELU_MARKER in state_dict:
        return False, f"the weights' {GELU_MARKER} marker"
    if os.path.isfile(source) and is_torchscript_archive(source):
        return True, "OpenAI's TorchScript archive"
    spec = spec_beside(source) if os.path.isfile(source) else None
    if spec is not None:
        return _checked(spec, arch, source).quick_gelu, spec.origin
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
            raise WeightsError(
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
    quick_gelu, origin = weights_activation(source, state_dict, arch)
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
    """``ln_final(all tokens) @ text_projection`` under the causal mask  ->  [B, L, embed_dim]."""
    cast_dtype = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(ids).to(cast_dtype) + clip.positional_embedding.to(cast_dtype)
    x = clip.transformer(x, attn_mask=clip.attn_mask)
    return clip.ln_final(x) @ clip.text_projection
