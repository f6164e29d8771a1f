"""Resuming the shard stream inside an epoch: the time to a resumed epoch's first batch,
wherever in the epoch it resumes, against training the batches skipped again.

    python -m benchmarks.stream_resume [--ids 100] [--batch-size 32] [--at 0 0.5 0.9]

It draws a synthetic set (``dataset_tools.synthetic``), writes its train split into shards and
builds the streaming training loader (no workers, 384 x 128, augmentation and MLM masking).
For each ``--at`` share of the epoch it resumes there (``skip_batches``) and times the first
batch, and checks that batch is the one an unbroken epoch yields there. The skipped batches'
cost is their count times the time per batch measured from the epoch's start.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Sequence

import torch

from benchmarks.shard_loader import loader_config
from dataset_tools.synthetic import generate
from dataset_tools.write_shards import write_shards
from datasets.build import build_train_loader, read_dataset
from utils.cli import describe


def first_batch(loader, skip: int) -> tuple:
    """(seconds to the first batch after ``skip`` batches of epoch 0, that batch's pair images)."""
    loader.sampler.set_epoch(0)
    loader.sampler.skip_batches(skip)
    started = time.perf_counter()
    batch = next(iter(loader))
    return time.perf_counter() - started, batch["image_ids"]


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description=describe(__doc__))
    parser.add_argument("--ids", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--at", type=float, nargs="+", default=[0.0, 0.5, 0.9])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        generate(root, num_train_ids=args.ids, num_val_ids=1, num_test_ids=1, image_size=(384, 128), seed=0)
        write_shards(root, "Synthetic-PEDES", root / "shards", shard_size=50)
        read_dataset.cache_clear()
        loader, _ = build_train_loader(loader_config(str(root), str(root / "shards"), 0, args.batch_size))
        loader.sampler.set_epoch(0)
        started, unbroken = time.perf_counter(), [batch["image_ids"] for batch in loader]
        per_batch = (time.perf_counter() - started) / len(unbroken)
        print(f"{len(unbroken)} batches of {args.batch_size}, {per_batch:.2f} s per batch from the epoch's start")
        print(" resumed at batch  first batch s  skipped batches s  same batch")
        for share in args.at:
            skip = min(int(share * len(unbroken)), len(unbroken) - 1)
            seconds, ids = first_batch(loader, skip)
            same = torch.equal(ids, unbroken[skip])
            print(f"{skip:>17}  {seconds:>13.2f}  {skip * per_batch:>17.1f}  {str(same):>10}")
            if not same:
                return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
