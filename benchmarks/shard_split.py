"""Bytes read and images decoded per rank by the streaming loader's two splits across ranks
(``data.shard_split``), and their ratio, in one run.

    python -m benchmarks.shard_split [--ids 100] [--ranks 2 4 8] [--workers 2] [--batch-size 64]

It draws a synthetic set (``datasets.synthetic``, 384 x 128 JPEGs, 2 captions per image),
writes its train split into shards of ``--shard-size`` images and plays one epoch of every
rank's loader workers for each rank count and split, in this process: the bytes its reads
returned (``rchar`` of ``/proc/self/io``, so Linux only; page cache or not) and the pairs
given, each of which the training loader decodes. With ``batches`` every rank reads the
tar headers of the whole epoch and the samples holding a pair it keeps (an image whose
captions go to two ranks is read by both); with ``blocks`` only its own block.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Dict, Sequence

from benchmarks.shard_loader import synthetic_shards
from configs.validation import SHARD_SPLITS
from datasets.shards import read_manifest
from datasets.streaming import ShardStream
from utils.cli import describe


def bytes_read() -> int:
    """Bytes this process's reads have returned so far (Linux's /proc/self/io, ``rchar``)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no rchar line")


def one_rank(shards: Path, rank: int, ranks: int, split: str, workers: int, batch: int) -> Dict[str, int]:
    """Bytes read and pairs given by one rank's ``workers`` in epoch 0."""
    stream = ShardStream(
        read_manifest(shards), lambda image: image, batch // ranks, rank=rank, world_size=ranks, split=split
    )
    before = bytes_read()
    pairs = sum(1 for part in range(workers) for _ in stream.worker_pairs(0, part, workers, 0))
    return {"read": bytes_read() - before, "pairs": pairs}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=describe(__doc__))
    parser.add_argument("--ids", type=int, default=100, help="synthetic training identities (default: %(default)s)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[2, 4, 8], help="rank counts to compare")
    parser.add_argument("--workers", type=int, default=2, help="loader workers per rank (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch (default: %(default)s)")
    parser.add_argument("--shard-size", type=int, default=64, help="images per shard (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        shards = synthetic_shards(Path(tmp), args.ids, args.shard_size)
        manifest = read_manifest(shards)
        size = sum(shard.bytes for shard in manifest.shards)
        print(
            f"{manifest.pairs} pairs, {sum(len(s.captions) for s in manifest.shards)} images, {size / 1e6:.1f} MB "
            f"in {len(manifest.shards)} shards; global batch {args.batch_size}, {args.workers} workers per rank"
        )
        print(f"{'ranks':>5} {'split':>8} {'MB read/rank':>13} {'share of shards':>16} {'decoded/rank':>13}")
        for ranks in args.ranks:
            read = {}
            for split in SHARD_SPLITS:
                results = [one_rank(shards, rank, ranks, split, args.workers, args.batch_size) for rank in range(ranks)]
                read[split] = sum(result["read"] for result in results) / ranks
                decoded = sum(result["pairs"] for result in results) / ranks
                print(f"{ranks:>5} {split:>8} {read[split] / 1e6:>13.2f} {read[split] / size:>16.3f} {decoded:>13.1f}")
            print(f"{ranks:>5} bytes read per rank, batches / blocks: {read['batches'] / read['blocks']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
