"""Export global embeddings (L2-normalised, float32) to a ``.npz`` that numpy and torch read.

    python export_features.py RUN --dataset CUHK-PEDES --split test --output cuhk_test.npz
    python export_features.py RUN --images photos/ --output photos.npz

A dataset split gives ``image_features [G, D]``, ``image_pids``, ``image_paths``,
``text_features [Q, D]``, ``text_pids``, ``captions``; an image folder gives
``image_features`` and ``image_paths`` (unreadable images are named and skipped). Read with
``numpy.load(path)`` (no pickle needed) or ``torch.from_numpy(numpy.load(path)["image_features"])``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from configs.errors import raise_all
from datasets.build import build_eval_loaders
from datasets.readers import check_dataset_files
from processor.evaluator import extract_features
from serving.gallery import encode_folder, list_images
from serving.inference import LoadedModel, load_model, resolve_source, source_config
from utils.cli import add_model_source, describe, report_user_errors
from utils.io import write_with
from utils.logger import setup_logging

logger = logging.getLogger("export_features")


def split_arrays(loaded: LoadedModel, dataset: str, split: str, root: Optional[str]) -> Dict[str, np.ndarray]:
    cfg = loaded.cfg
    loaders = build_eval_loaders(cfg, dataset, split, root)
    eval_set = loaders.eval_set
    features = extract_features(loaded.model, loaders, loaded.device, loaded.autocast, progress=True)
    return {
        "image_features": features.image.cpu().numpy(),
        "image_pids": features.image_pids.cpu().numpy(),
        "image_paths": np.array([str(p) for p in eval_set.image_paths]),
        "text_features": features.text.cpu().numpy(),
        "text_pids": features.text_pids.cpu().numpy(),
        "captions": np.array(eval_set.captions),
    }


def folder_arrays(loaded: LoadedModel, folder: Path) -> Dict[str, np.ndarray]:
    gallery = encode_folder(folder, loaded)
    if gallery.skipped:
        logger.warning("%d unreadable image(s) skipped", len(gallery.skipped))
    return {"image_features": gallery.features.numpy(), "image_paths": np.array([str(p) for p in gallery.paths])}


def write_npz(arrays: Dict[str, np.ndarray], output: Path) -> None:
    """The arrays as one .npz, written atomically (no half-written export)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    write_with(output, lambda stream: np.savez(stream, **arrays))


def check_inputs(args: argparse.Namespace) -> None:
    """The weights and what to encode (``--images`` or the dataset's files) exist: every
    missing input reported at once, before the model loads."""
    checks = [lambda: resolve_source(args.source, args.config, args.overrides, args.which)]
    if args.images is not None:
        checks.append(lambda: list_images(args.images))
    else:
        checks.append(lambda: check_dataset_files(dataset_root(args), args.dataset))
    raise_all(checks)


def dataset_root(args: argparse.Namespace) -> str:
    """``--root``, else the data.root of the source's config."""
    return args.root or source_config(args.source, args.config, args.overrides, args.which)[0].data.root


@report_user_errors
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=describe(__doc__))
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--dataset", help="dataset name (with --split)")
    target.add_argument("--images", type=Path, help="an image folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--root", default=None, help="dataset root (default: the run's data.root)")
    parser.add_argument("--output", type=Path, required=True, help="the .npz to write")
    add_model_source(parser)
    args = parser.parse_intermixed_args(argv)
    if args.output.suffix != ".npz":
        parser.error(f"--output {args.output}: expected a .npz file name")
    setup_logging()
    check_inputs(args)
    loaded = load_model(args.source, args.config, args.overrides, args.which)
    arrays = (
        folder_arrays(loaded, args.images)
        if args.images is not None
        else split_arrays(loaded, args.dataset, args.split, args.root)
    )
    write_npz(arrays, args.output)
    logger.info("wrote %s: %s", args.output, ", ".join(f"{k} {list(v.shape)}" for k, v in arrays.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
