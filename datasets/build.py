"""DataLoaders for training and evaluation, built from the config."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from configs.defaults import Config, DataConfig, masked_captions_needed
from configs.errors import ConfigError
from datasets.bases import ImageDataset, ImageTextMLMDataset, TextDataset
from datasets.readers import EvalSet, RetrievalDataset
from datasets.samplers import IdentitySampler, RandomSampler
from datasets.shards import read_manifest
from datasets.streaming import ShardStream, StreamLoader
from datasets.transforms import build_transform

logger = logging.getLogger(__name__)


@lru_cache(maxsize=8)
def read_dataset(root: str, name: str) -> RetrievalDataset:
    """Each annotation file is read and validated once per process."""
    return RetrievalDataset(root, name)


def pins_memory(cfg: Config) -> bool:
    """``data.pin_memory`` where the batches go to a GPU: pinning initialises CUDA, which a run
    with ``train.device=cpu`` must not do on a machine that has a GPU."""
    return cfg.data.pin_memory and cfg.train.device != "cpu" and torch.cuda.is_available()


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@lru_cache(maxsize=None)
def worker_count(requested: int) -> int:
    """``requested`` loader workers, at most one per usable core (logged once when fewer). A
    sample is drawn from (seed, epoch, index), not from a worker's state, so the file loader's
    batches are the same whatever the count (tests/unit/test_data_pipeline.py); only the loading
    speed changes. The shards' stream gives each worker its block of the epoch: there the count
    shapes the batches, and a position saved inside an epoch records it."""
    cores = usable_cores()
    if requested <= cores:
        return requested
    logger.info("data.num_workers=%d: %d loader worker(s), one per usable CPU core", requested, cores)
    return cores


def make_loader(
    dataset: Dataset,
    data: DataConfig,
    batch_size: int,
    pin_memory: bool,
    sampler: Optional[Sampler] = None,
    num_workers: Optional[int] = None,
    drop_last: bool = False,
) -> DataLoader:
    workers = worker_count(data.num_workers if num_workers is None else num_workers)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=data.persistent_workers and workers > 0,
        drop_last=drop_last,
    )


def build_train_loader(cfg: Config, rank: int = 0, world_size: int = 1) -> tuple[DataLoader, int]:
    """(loader over the training split, outputs of the ID classifier). The second is the
    number of training captions with ``model.id_classes=captions`` (the authors' train.py),
    else of training identities; labels are the identity indices either way.
    ``data.batch_size`` is the global batch; each of ``world_size`` ranks loads its share.
    Batches carry MLM-masked captions when an enabled loss needs them."""
    data = cfg.data
    if data.batch_size % world_size:
        raise ConfigError(f"data.batch_size={data.batch_size} is not divisible by the {world_size} ranks")
    per_rank = data.batch_size // world_size
    if data.shards:
        return build_stream_loader(cfg, rank, world_size)
    source = read_dataset(data.root, data.dataset)
    pairs = source.train_pairs(data.train_split)
    transform = build_transform(cfg.model.image_size, train=True, augment=data.augment)
    dataset = ImageTextMLMDataset(
        pairs,
        transform,
        data.text_length,
        seed=cfg.train.seed,
        masked_language=masked_captions_needed(cfg.loss.names),
        share_masked_caption=data.share_masked_caption,
    )
    if data.sampler == "identity":
        sampler = IdentitySampler(pairs.pids, per_rank, data.num_instance, cfg.train.seed, rank, world_size)
    else:
        sampler = RandomSampler(len(dataset), cfg.train.seed, rank, world_size, data.batch_size)
    num_classes = len(dataset) if cfg.model.id_classes == "captions" else pairs.num_classes
    if data.drop_last and len(sampler) < per_rank:
        raise ConfigError(
            f"data.drop_last=true with {len(sampler)} training pairs per rank, fewer than one batch of {per_rank}: "
            "every batch would be dropped (set data.drop_last=false or a smaller data.batch_size)"
        )
    loader = make_loader(dataset, data, per_rank, pins_memory(cfg), sampler, drop_last=data.drop_last)
    return loader, num_classes


@dataclass
class EvalLoaders:
    dataset: str
    split: str
    texts: DataLoader  # (pid, token ids)
    images: DataLoader  # (pid, image)
    eval_set: EvalSet  # what the loaders load, in their order (paths, captions, identities)


def build_eval_loaders(
    cfg: Config, dataset: Optional[str] = None, split: Optional[str] = None, root: Optional[str] = None
) -> EvalLoaders:
    """Query and gallery loaders for any dataset and split (cross-domain included)."""
    name, split = dataset or cfg.data.dataset, split or cfg.eval.split
    source = read_dataset(str(Path(root or cfg.data.root)), name)
    eval_set = source.eval_set(split)
    transform = build_transform(cfg.model.image_size, train=False)
    # Evaluation runs once per epoch: persistent workers would only hold memory.
    workers = min(cfg.data.num_workers, 4)
    data = DataConfig(**{**vars(cfg.data), "persistent_workers": False})
    pin = pins_memory(cfg)
    texts = make_loader(TextDataset(eval_set, cfg.data.text_length), data, cfg.eval.batch_size, pin, num_workers=0)
    images = make_loader(ImageDataset(eval_set, transform), data, cfg.eval.batch_size, pin, num_workers=workers)
    return EvalLoaders(name, split, texts, images, eval_set)


def build_stream_loader(cfg: Config, rank: int = 0, world_size: int = 1) -> tuple[DataLoader, int]:
    """:func:`build_train_loader` for ``data.shards``: a :class:`datasets.streaming.StreamLoader`
    over the shard folder, and the ID classifier's outputs (captions or identities, as there)."""
    data, per_rank = cfg.data, cfg.data.batch_size // world_size
    manifest = read_manifest(data.shards)
    if "id" in cfg.loss.names and not manifest.identities:
        raise ConfigError(
            f"loss.names includes 'id', but the corpus data.shards={data.shards} "
            f"({manifest.source.get('name', 'written with --no-identities')}) has no person identities: "
            f"the ID loss needs them; drop it (e.g. loss.names={'+'.join(n for n in cfg.loss.names if n != 'id')})"
        )
    stream = ShardStream(
        manifest,
        build_transform(cfg.model.image_size, train=True, augment=data.augment),
        per_rank,
        data.text_length,
        seed=cfg.train.seed,
        masked_language=masked_captions_needed(cfg.loss.names),
        share_masked_caption=data.share_masked_caption,
        rank=rank,
        world_size=world_size,
        epoch_pairs=data.shard_epoch_samples,
        shuffle_buffer=data.shuffle_buffer,
        split=data.shard_split,
    )
    workers = worker_count(data.num_workers)
    loader = StreamLoader(
        stream,
        batch_size=per_rank,
        num_workers=workers,
        pin_memory=pins_memory(cfg),
        persistent_workers=data.persistent_workers and workers > 0,
    )
    num_classes = manifest.pairs if cfg.model.id_classes == "captions" else len(stream.labels or {})
    return loader, num_classes
