"""Evaluation time at CUHK-PEDES test scale: encode 3,074 gallery images and 6,156 caption
queries with the evaluator's ``extract_features``, then rank with ``retrieval_metrics``.

Inputs are random tensors already on the device (model cost only) in ``eval.batch_size``
batches ("model only"); ``--jpeg`` also times the real evaluation loaders on synthetic JPEGs
at the preset's image size, decoded by ``--workers`` loader processes ("with JPEG decoding").
Kernels as ``train.py`` sets them (TF32 per ``train.tf32``); on a GPU, the peak memory
allocated and reserved over the timed runs. Paper preset (ViT-B/16, 384 x 128) on a GPU;
tiny on a CPU, where ``--images/--captions`` default to a tenth of the split.

    python -m benchmarks.eval_speed [--mode amp_bf16] [--jpeg --workers 8]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from benchmarks.presets import (
    CUHK_TEST_CAPTIONS,
    CUHK_TEST_IMAGES,
    cuhk_id_outputs,
    on_synthetic_set,
    preset_config,
    random_captions,
    synchronize,
)
from configs.validation import PRECISIONS
from dataset_tools.synthetic import generate
from datasets.build import EvalLoaders, build_eval_loaders
from datasets.readers import EvalSet
from model.build import build_model
from processor.evaluator import extract_features, retrieval_metrics
from processor.precision import Precision
from utils.cli import describe
from utils.reproducibility import configure_kernels


def tensor_loaders(cfg, images: int, captions: int, device: torch.device) -> EvalLoaders:
    """(pids, inputs) batches of random images and token ids, already on ``device``."""
    gen, size = torch.Generator().manual_seed(0), cfg.eval.batch_size
    ids = random_captions(captions, cfg.data.text_length, gen)
    pixels = [
        torch.randn(min(size, images - start), 3, *cfg.model.image_size, generator=gen).to(device)
        for start in range(0, images, size)
    ]
    image_pids = torch.arange(images) % 1000
    texts = [
        (
            image_pids[torch.arange(start, min(start + size, captions)) // 2 % images],
            ids[start : start + size].to(device),
        )
        for start in range(0, captions, size)
    ]
    gallery = [(image_pids[start : start + len(batch)], batch) for start, batch in zip(range(0, images, size), pixels)]
    owners = [index // 2 % images for index in range(captions)]  # two captions per image
    eval_set = EvalSet(
        image_pids.tolist(),
        [Path(f"random/{index}.jpg") for index in range(images)],
        [int(image_pids[owner]) for owner in owners],
        ["random tokens"] * captions,
        owners,
    )
    return EvalLoaders("random", "test", texts, gallery, eval_set)


def time_evaluation(model, loaders: EvalLoaders, precision: Precision, chunk: int) -> tuple[float, float]:
    """(seconds to encode, seconds to rank), device synchronised."""
    device = precision.device
    synchronize(device)
    started = time.perf_counter()
    features = extract_features(model, loaders, device, precision.autocast())
    synchronize(device)
    encoded = time.perf_counter()
    retrieval_metrics(features, chunk_size=chunk)
    synchronize(device)
    return encoded - started, time.perf_counter() - encoded


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=describe(__doc__))
    parser.add_argument("--preset", choices=["paper", "tiny"], default=None)
    parser.add_argument("--mode", choices=PRECISIONS, default=None, help="default: amp_bf16 on a GPU, fp32 on a CPU")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--captions", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jpeg", action="store_true", help="also time the real loaders on synthetic JPEGs")
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preset = args.preset or ("paper" if device.type == "cuda" else "tiny")
    scale = 1 if preset == "paper" else 10
    images, captions = args.images or CUHK_TEST_IMAGES // scale, args.captions or CUHK_TEST_CAPTIONS // scale
    cfg = preset_config(preset)
    configure_kernels(cfg.train.deterministic, cfg.train.tf32)  # as train.py: TF32 per train.tf32
    precision = Precision(args.mode or ("amp_bf16" if device.type == "cuda" else "fp32"), device)
    model = precision.prepare_model(build_model(cfg, num_classes=cuhk_id_outputs(cfg))).to(device).eval()
    loaders = tensor_loaders(cfg, images, captions, device)
    time_evaluation(model, loaders, precision, cfg.eval.query_chunk)  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    runs = [time_evaluation(model, loaders, precision, cfg.eval.query_chunk) for _ in range(args.repeats)]
    encode, ranking = (statistics.median(values) for values in zip(*runs))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"{name}, preset {preset}, {precision.mode}, eval batch {cfg.eval.batch_size}, TF32 "
        f"{torch.backends.cuda.matmul.allow_tf32}; model only (random tensors already on the device): {images} "
        f"images + {captions} captions encoded in {encode:.2f} s ({images / encode:.0f} images/s with the captions), "
        f"ranked in {ranking:.3f} s; total {encode + ranking:.2f} s (median of {args.repeats})"
    )
    if device.type == "cuda":
        print(
            f"peak GPU memory over the timed runs: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB "
            f"allocated, {torch.cuda.max_memory_reserved(device) / 2**30:.2f} GiB reserved"
        )
    if args.jpeg:
        with tempfile.TemporaryDirectory() as root:
            height, width = cfg.model.image_size
            ids = max(images // 3, 1)
            generate(
                root,
                num_train_ids=1,
                num_val_ids=1,
                num_test_ids=ids,
                image_size=(height, width),
                seed=0,
                workers=max(args.workers, 1),
            )
            jpeg_loaders = build_eval_loaders(on_synthetic_set(cfg, root, args.workers, device))
            encode, ranking = time_evaluation(model, jpeg_loaders, precision, cfg.eval.query_chunk)
            count, workers = len(jpeg_loaders.images.dataset), jpeg_loaders.images.num_workers
            print(
                f"with JPEG decoding ({workers} loader workers, synthetic JPEGs): {count} images + "
                f"{len(jpeg_loaders.texts.dataset)} captions in {encode:.2f} s ({count / encode:.0f} images/s), "
                f"ranked in {ranking:.3f} s (one run)"
            )


if __name__ == "__main__":
    raise SystemExit(main())
