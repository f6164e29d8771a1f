"""The configuration schema: every key, its type and its default, with comments.

Defaults reproduce the authors' code at HEAD (the golden files). The per-dataset YAML
files layer the paper's values on top (SPEC section 9 lists where paper and code
differ); ``*_authors_code.yaml`` variants keep these defaults.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List


@dataclass
class ModelConfig:
    # CLIP weights: a path to OpenAI's ViT-B-16.pt (TorchScript) or to an OpenAI-format
    # state dict / open_clip checkpoint; "open_clip:MODEL/TAG" downloads through
    # open_clip; "none" = random init with the sizes below (tests, synthetic quick start).
    pretrain: str = "data/ViT-B-16.pt"
    image_size: List[int] = field(default_factory=lambda: [384, 128])  # H, W; multiples of patch_size
    # Sizes used only when pretrain == "none" (loaded weights bring their own): ViT-B/16.
    embed_dim: int = 512
    vision_width: int = 768
    vision_layers: int = 12
    patch_size: int = 16
    text_width: int = 512
    text_layers: int = 12
    context_length: int = 77
    vocab_size: int = 49408  # the reference tokenizer's vocabulary; also the MLM classes
    temperature: float = 0.02  # fixed; logit scale = 1 / temperature = 50
    cmt_depth: int = 4  # layers of the IRR cross-modal transformer


@dataclass
class LossConfig:
    # "+"-separated subset of: itc, sdm, a-sdm, cmpm, id, mlm, efa. Paper: a-sdm+mlm+id+efa.
    names: str = "a-sdm+mlm+id+efa"
    # Weight per loss name; a name not listed gets 1.0.
    weights: Dict[str, float] = field(default_factory=dict)


@dataclass
class AsdmConfig:
    factor: float = 0.1  # code at HEAD 0.1; paper alpha = 10 (1 on RSTPReid); earlier code 10
    mode: str = "cosine"  # "cosine" gap (code) or "probability" gap (paper)


@dataclass
class EfaConfig:
    text_margin: float = 0.1  # text -> joint; paper: CUHK 0.1, ICFG 0.2, RSTPReid 0.2
    image_margin: float = 0.9  # image -> joint; paper: CUHK 0.1, ICFG 1.0, RSTPReid 0.8
    lse_lambda: float = 1.0  # LSE pooling sharpness; earlier code release: 10 (exp(max / 0.1))
    threshold: float = 1.0  # sparsification threshold sigma, in units of 1/N (N = patches)
    block_elems: int = 4194304  # memory bound of the blockwise set similarity (no effect on values)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    asdm: AsdmConfig = field(default_factory=AsdmConfig)
    efa: EfaConfig = field(default_factory=EfaConfig)
