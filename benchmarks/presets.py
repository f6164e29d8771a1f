"""Model sizes and random device-resident batches shared by the GPU benchmarks.

``paper``: ViT-B/16 at 384 x 128, batch 64, 77 tokens, ``a-sdm+mlm+id+efa`` with the
CUHK-PEDES identity count (11,003), random init (the weights do not change the cost).
``tiny``: the same code path at toy sizes, so CI can run the scripts on a CPU.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Dict

import torch

from configs.defaults import Config, DataConfig, ModelConfig
from datasets.bases import mask_tokens
from datasets.build import read_dataset
from datasets.tokenizer import EOT_ID, MASK_ID, SOT_ID

# A tiny CLIP on 32 x 16 images as train.py overrides: the several-process check and the tests' runs.
TINY_RUN_OVERRIDES = [
    "model.pretrain=none",
    "model.image_size=[32,16]",
    "model.patch_size=8",
    "model.embed_dim=64",
    "model.vision_width=64",
    "model.vision_layers=1",
    "model.text_width=64",
    "model.text_layers=1",
    "model.cmt_depth=1",
    "model.context_length=32",
    "data.text_length=32",
]
CUHK_TRAIN_IDS, CUHK_TRAIN_PAIRS = 11003, 68126  # docs/method.md, "Data"
CUHK_TEST_IMAGES, CUHK_TEST_CAPTIONS = 3074, 6156
CAPTION_TOKENS = 32  # typical CUHK-PEDES caption length (words + SOT/EOT), padded to 77


def preset_config(name: str) -> Config:
    if name == "paper":
        return Config(model=ModelConfig(pretrain="none"), data=DataConfig(batch_size=64))
    if name == "tiny":
        model = ModelConfig(
            pretrain="none",
            image_size=[96, 32],
            patch_size=16,
            embed_dim=64,
            vision_width=64,
            vision_layers=2,
            text_width=64,
            text_layers=2,
            context_length=77,
            cmt_depth=1,
        )
        return Config(model=model, data=DataConfig(batch_size=8))
    raise ValueError(f"unknown preset {name!r}; expected paper or tiny")


def cuhk_id_outputs(cfg: Config) -> int:
    """The ID classifier's outputs on CUHK-PEDES for ``cfg.model.id_classes``."""
    return CUHK_TRAIN_PAIRS if cfg.model.id_classes == "captions" else CUHK_TRAIN_IDS


def random_captions(count: int, text_length: int, gen: torch.Generator) -> torch.Tensor:
    """[count, text_length] token ids: SOT, CAPTION_TOKENS - 2 random words, EOT, padding."""
    ids = torch.zeros(count, text_length, dtype=torch.long)
    ids[:, 0], ids[:, CAPTION_TOKENS - 1] = SOT_ID, EOT_ID
    ids[:, 1 : CAPTION_TOKENS - 1] = torch.randint(1, MASK_ID, (count, CAPTION_TOKENS - 2), generator=gen)
    return ids


def random_batch(cfg: Config, num_classes: int, device: torch.device, seed: int = 0) -> Dict[str, torch.Tensor]:
    """A training batch like the loader's (two captions per identity, 15% MLM masking; the
    masked caption as ``caption_ids`` too with ``data.share_masked_caption``), on ``device``.
    Identities are drawn below ``min(num_classes, CUHK_TRAIN_IDS)``."""
    gen = torch.Generator().manual_seed(seed)
    size = cfg.data.batch_size
    ids = random_captions(size, cfg.data.text_length, gen)
    masked = [mask_tokens(row, gen) for row in ids]
    mlm_ids = torch.stack([m for m, _ in masked])
    identities = min(num_classes, CUHK_TRAIN_IDS)
    batch = {
        "images": torch.randn(size, 3, *cfg.model.image_size, generator=gen),
        "caption_ids": mlm_ids if cfg.data.share_masked_caption else ids,
        "mlm_ids": mlm_ids,
        "mlm_labels": torch.stack([lab for _, lab in masked]),
        "pids": torch.randint(identities, (size // 2,), generator=gen).repeat_interleave(2)[:size],
    }
    return {key: value.to(device) for key, value in batch.items()}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def on_synthetic_set(cfg: Config, root: str, workers: int, device: torch.device, **data: object) -> Config:
    """``cfg`` reading the Synthetic-PEDES set drawn under ``root``, with ``workers`` loader
    processes and pinned memory on a GPU (``data``: further data.* values). The readers' cache
    is cleared, so a set drawn again under a reused path is read afresh."""
    read_dataset.cache_clear()
    pin = device.type == "cuda"
    synthetic = replace(cfg.data, root=root, dataset="Synthetic-PEDES", num_workers=workers, pin_memory=pin, **data)
    return replace(cfg, data=synthetic)
