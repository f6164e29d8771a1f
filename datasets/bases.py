"""Torch datasets: image-caption pairs with MLM masking (training), gallery images and
caption queries (evaluation).

Captions are tokenized once, when a dataset is built. Training randomness (augmentation,
MLM masking) is drawn from a generator seeded by (seed, epoch, index), so a sample is the
same whatever the number of workers and after a resume; samplers pass ``(epoch, index)``
keys (see ``datasets.samplers``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Dict, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from datasets.readers import DataError, EvalSet, TrainPairs
from datasets.tokenizer import CONTEXT_LENGTH, MASK_ID, tokenize

MLM_PROBABILITY = 0.15
SampleKey = Union[int, Tuple[int, int]]


def decode_image(source: Union[Path, BinaryIO], name: str) -> Image.Image:
    """The image in ``source`` (a path, or a file object such as a shard's member) as RGB; a
    missing or undecodable one raises :class:`DataError` naming it ``name``."""
    try:
        with Image.open(source) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"image file {name} not found") from None
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise DataError(f"image file {name} cannot be decoded: {error}") from None


def load_image(path: Path) -> Image.Image:
    """The image as RGB; a missing or undecodable file raises :class:`DataError` naming it."""
    return decode_image(path, str(path))


def tokenize_captions(captions: Sequence[str], text_length: int) -> torch.Tensor:
    """[N, text_length] int32 token ids (int32 halves the memory shared with workers)."""
    if not captions:
        return torch.zeros(0, text_length, dtype=torch.int32)
    return torch.stack([tokenize(caption, text_length) for caption in captions]).to(torch.int32)


def mask_tokens(tokens: torch.Tensor, generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """MLM masking of one caption (docs/method.md, "Heads"): ``tokens`` [L] -> (masked ids [L], labels [L]).

    Each token with 0 < id < MASK_ID is selected with p = 0.15; a selected token becomes
    MASK_ID (p = 0.8), a uniform random id in [1, MASK_ID - 1] (p = 0.1) or stays (p = 0.1);
    its label is the original id, other labels are 0. If none is selected, position 1 is
    masked and labelled. SOT, EOT and padding are never touched.
    """
    tokens = tokens.long()
    draw = torch.rand(tokens.shape, generator=generator)
    random_ids = torch.randint(1, MASK_ID, tokens.shape, generator=generator)
    selected = (tokens > 0) & (tokens < MASK_ID) & (draw < MLM_PROBABILITY)
    within = draw / MLM_PROBABILITY  # uniform on [0, 1) given selection, as the reference rescales
    masked = tokens.clone()
    masked[selected & (within < 0.8)] = MASK_ID
    swap = selected & (within >= 0.8) & (within < 0.9)
    masked[swap] = random_ids[swap]
    labels = torch.where(selected, tokens, torch.zeros_like(tokens))
    if not selected.any():
        labels[1] = tokens[1]
        masked[1] = MASK_ID
    return masked, labels


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed that differs for every (seed, epoch, index)."""
    mixed = (seed * 1_000_003 + epoch) * 2_000_000_011 + index
    return (mixed * 0x9E3779B97F4A7C15) % (2**63)


def split_key(key: SampleKey) -> Tuple[int, int]:
    return (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else (0, int(key))


class ImageTextMLMDataset(Dataset):
    """Training pairs -> dicts with pids, image_ids, images, caption_ids, mlm_ids, mlm_labels.

    ``share_masked_caption``: ``caption_ids`` is the masked caption too (``== mlm_ids``), as
    the authors' dataset produces by masking the caption's tokens in place.
    """

    def __init__(
        self,
        pairs: TrainPairs,
        transform: Callable,
        text_length: int = CONTEXT_LENGTH,
        seed: int = 0,
        masked_language: bool = True,
        share_masked_caption: bool = False,
    ):
        self.pids = torch.tensor(pairs.pids, dtype=torch.long)
        self.image_ids = torch.tensor(pairs.image_ids, dtype=torch.long)
        # One numpy buffer, not a list of str objects: workers touching Python objects' refcounts
        # would copy the pages they sit on (copy-on-write growth, pytorch/pytorch#13246).
        self.image_paths = np.array([str(path) for path in pairs.image_paths])
        self.tokens = tokenize_captions(pairs.captions, text_length)
        self.transform = transform
        self.seed = seed
        self.masked_language = masked_language
        self.share_masked_caption = share_masked_caption

    def __len__(self) -> int:
        return len(self.pids)

    def __getitem__(self, key: SampleKey) -> Dict[str, torch.Tensor]:
        epoch, index = split_key(key)
        image = load_image(Path(str(self.image_paths[index])))
        return training_item(
            TrainingSample(image, self.tokens[index], self.pids[index], self.image_ids[index]),
            sample_seed(self.seed, epoch, index),
            self.transform,
            self.masked_language,
            self.share_masked_caption,
        )


@dataclass
class TrainingSample:
    """One image-caption pair before augmentation: the decoded image, the caption's token ids
    [text_length], its identity label and its image's index (0-d long tensors)."""

    image: Image.Image
    tokens: torch.Tensor
    pid: torch.Tensor
    image_id: torch.Tensor


def training_item(
    sample: TrainingSample, seed: int, transform: Callable, masked_language: bool, share_masked_caption: bool
) -> Dict[str, torch.Tensor]:
    """The training batch entry of ``sample``: its augmentation and MLM masking drawn from
    ``seed`` (:func:`sample_seed`), whichever dataset (files or shards) read it."""
    # torchvision draws from the global CPU generator: seed a private copy of it. Only the
    # CPU one: torch.manual_seed also seeds every accelerator, and on a CUDA build without
    # a GPU its lazy-init bookkeeping would be paid again for every sample.
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        image = transform(sample.image)
    tokens = sample.tokens.long()
    item = {"pids": sample.pid, "image_ids": sample.image_id, "images": image, "caption_ids": tokens}
    if masked_language:
        item["mlm_ids"], item["mlm_labels"] = mask_tokens(tokens, torch.Generator().manual_seed(seed))
        if share_masked_caption:  # the authors' in-place masking: every loss sees the masked caption
            item["caption_ids"] = item["mlm_ids"]
    return item


class ImageDataset(Dataset):
    """Gallery images of an evaluation split -> (pid, image)."""

    def __init__(self, eval_set: EvalSet, transform: Callable):
        self.pids = torch.tensor(eval_set.image_pids, dtype=torch.long)
        self.image_paths = [str(path) for path in eval_set.image_paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pids)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.pids[index], self.transform(load_image(Path(self.image_paths[index])))


class TextDataset(Dataset):
    """Caption queries of an evaluation split -> (pid, token ids [text_length])."""

    def __init__(self, eval_set: EvalSet, text_length: int = CONTEXT_LENGTH):
        self.pids = torch.tensor(eval_set.caption_pids, dtype=torch.long)
        self.tokens = tokenize_captions(eval_set.captions, text_length)

    def __len__(self) -> int:
        return len(self.pids)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.pids[index], self.tokens[index].long()
