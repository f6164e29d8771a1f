"""Training-loader throughput, tar shards against image files: images/s per core on the
same images with the same transforms (384 x 128 resize, flip/pad/crop/erasing, MLM masking,
collation), measured in turns in one run, and their ratio.

    python -m benchmarks.shard_loader [--ids 300] [--workers 0 2] [--batches 20] [--batch-size 64] [--rounds 3]

It draws a synthetic set (``dataset_tools.synthetic``), writes its train split into shards
(``dataset_tools.write_shards``) and times both training loaders (``data.shards`` set or not) for
each worker count, alternating them ``--rounds`` times; per core = images/s divided by the
loading processes (the main one with 0 workers, else the workers). Also the bare reading of
the images' bytes (no decoding): files, shards, and the same shards through Python's tarfile.
The images sit in the page cache either way: the figures compare the CPU cost, not a cold
disk or a network file system.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence

from benchmarks.data_pipeline import measure
from configs.defaults import Config, DataConfig, LossConfig, ModelConfig
from dataset_tools.synthetic import generate
from dataset_tools.write_shards import write_shards
from datasets.shards import read_manifest, read_samples
from utils.cli import describe


def loader_config(root: str, shards: str, workers: int, batch_size: int) -> Config:
    data = DataConfig(
        root=root,
        dataset="Synthetic-PEDES",
        batch_size=batch_size,
        num_workers=workers,
        persistent_workers=False,
        pin_memory=False,
        shards=shards,
        shuffle_buffer=1000,
    )
    return Config(model=ModelConfig(image_size=[384, 128]), loss=LossConfig(names=["sdm", "mlm"]), data=data)


def bare_reads(root: Path, shards: Path) -> Dict[str, float]:
    """Images read per second, undecoded: each file opened and read; the shards read through
    by :func:`datasets.shards.read_samples`; and by Python's tarfile (webdataset's reader)."""
    paths = sorted((root / "Synthetic-PEDES" / "imgs").rglob("*.jpg"))
    started = time.perf_counter()
    for path in paths:
        path.read_bytes()
    rates = {"files": len(paths) / (time.perf_counter() - started)}
    names = [shards / shard.name for shard in read_manifest(shards).shards]
    started, count = time.perf_counter(), 0
    for name in names:
        count += sum(1 for _ in read_samples(name))
    rates["shards"] = count / (time.perf_counter() - started)
    started, count = time.perf_counter(), 0
    for name in names:
        with tarfile.open(name) as archive:
            for member in archive:
                archive.extractfile(member).read()
                count += member.name.endswith(".jpg")
    rates["tarfile"] = count / (time.perf_counter() - started)
    return rates


def synthetic_shards(root: Path, ids: int, shard_size: int) -> Path:
    """The synthetic set's training split at 384 x 128 under ``root`` and its shards (``root/shards``)."""
    generate(root, num_train_ids=ids, num_val_ids=1, num_test_ids=1, image_size=(384, 128), seed=0)
    write_shards(root, "Synthetic-PEDES", root / "shards", shard_size=shard_size, workers=0)
    return root / "shards"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=describe(__doc__))
    parser.add_argument("--ids", type=int, default=300, help="synthetic training identities (default: %(default)s)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers to compare")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per measurement")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="alternated measurements of each loader (median)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shards = synthetic_shards(root, args.ids, shard_size=256)
        pairs = read_manifest(shards).pairs
        print(f"{pairs} training pairs, batch {args.batch_size}, 384 x 128, augmentation + MLM masking")
        print(f"{'workers':>8} {'files img/s/core':>17} {'shards img/s/core':>18} {'shards/files':>13}")
        for workers in args.workers:
            rates: Dict[str, List[float]] = {"files": [], "shards": []}
            for _ in range(args.rounds):
                for kind, folder in (("files", ""), ("shards", str(shards))):
                    cfg = loader_config(tmp, folder, workers, args.batch_size)
                    rates[kind].append(measure(cfg, args.batches))
            cores = max(workers, 1)
            files, sharded = (statistics.median(rates[kind]) / cores for kind in ("files", "shards"))
            print(f"{workers:>8} {files:>17.1f} {sharded:>18.1f} {sharded / files:>13.2f}")
        reads = bare_reads(root, shards)
        print(
            f"bare reads, images/s: files {reads['files']:.0f}, shards {reads['shards']:.0f} "
            f"({reads['shards'] / reads['files']:.2f}x), the same shards through tarfile {reads['tarfile']:.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
