"""Training-pipeline throughput: images/s of the training DataLoader (JPEG decode, 384 x 128
resize, flip/pad/crop/erasing augmentation, MLM masking, collation) for several worker
counts, on synthetic JPEGs written at 384 x 128.

    python -m benchmarks.data_pipeline [--workers 0 1 2] [--batches 30]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

from configs.defaults import Config, DataConfig, ModelConfig
from dataset_tools.synthetic import generate
from datasets.build import build_train_loader, read_dataset
from utils.cli import describe


def measure(cfg: Config, batches: int) -> float:
    """Images/s over ``batches`` batches, after one warm-up batch (worker start-up excluded)."""
    read_dataset.cache_clear()
    loader, _ = build_train_loader(cfg)
    loader.sampler.set_epoch(0)
    iterator = iter(loader)
    next(iterator)
    started, images = time.perf_counter(), 0
    for _ in range(batches):
        images += next(iterator)["images"].shape[0]
    return images / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=describe(__doc__))
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batches", type=int, default=30, help="timed batches of 64 per setting")
    parser.add_argument("--root", default=None, help="dataset root (default: a temporary synthetic set)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or tmp
        if args.root is None:
            generate(root, num_train_ids=400, num_val_ids=1, num_test_ids=1, image_size=(384, 128), seed=0)
        print(f"{'workers':>8} {'images/s':>10}  (batch 64, 384 x 128, augmentation + MLM)")
        for workers in args.workers:
            cfg = Config(
                model=ModelConfig(image_size=[384, 128]),
                data=DataConfig(
                    root=root,
                    dataset="Synthetic-PEDES",
                    batch_size=64,
                    num_workers=workers,
                    augment=True,
                    persistent_workers=False,
                    pin_memory=False,
                ),
            )
            print(f"{workers:>8} {measure(cfg, args.batches):>10.1f}")


if __name__ == "__main__":
    raise SystemExit(main())
