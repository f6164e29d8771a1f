"""Export the image and text encoders to ONNX, verified on onnxruntime, for use without this repository.

    python export_onnx.py runs/CUHK-PEDES/<run> --output exported/
    python export_onnx.py best.pth --dataset CUHK-PEDES --split test --root data --output exported/

Writes ``DIR/image.onnx`` (input ``images`` float32 [N, 3, H, W], resized and normalised),
``DIR/text.onnx`` (input ``text_ids`` int64 [N, L]), both with output ``embeddings`` float32
[N, D] (L2-normalised, any N), ``DIR/tokenizer.json`` (the project's tokenizer for the
``tokenizers`` library) and ``DIR/model.json`` (preprocessing, tokenizer settings, D, the
verification figures). Before writing, onnxruntime and PyTorch encode the evaluation split
(the run's, or ``--dataset/--split/--root``): every embedding must agree to 1e-4 and every
query get the same top 10, or nothing is written and the program stops with the figures.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Optional, Sequence

from configs.errors import ConfigError, raise_all
from datasets.build import build_eval_loaders
from datasets.readers import DataError, check_dataset_files
from serving.inference import caption_model, check_weights, source_config
from serving.onnx_export import check_output, context_length, export_folder
from utils.cli import add_model_source, describe, report_user_errors
from utils.logger import setup_logging

logger = logging.getLogger("export_onnx")


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=describe(__doc__))
    parser.add_argument("--output", type=Path, required=True, help="folder to write the export to")
    parser.add_argument("--dataset", default=None, help="verification dataset (default: the run's data.dataset)")
    parser.add_argument("--split", default=None, help="verification split (default: the run's eval.split)")
    parser.add_argument("--root", default=None, help="dataset root (default: the run's data.root)")
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="verify on the first N images and N captions only (default: the whole split)",
    )
    add_model_source(parser)
    args = parser.parse_intermixed_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be >= 1 (got {args.limit})")
    return args


def check_verification_data(root: str, dataset: str, split: str) -> None:
    """The split the export is verified on is on disk; the error says why it is needed."""
    try:
        check_dataset_files(root, dataset)
    except DataError as error:
        raise DataError(
            f"the export is verified on {dataset} {split} before it is written, so that dataset must be on disk "
            f"(--dataset, --split and --root choose another): {error}"
        ) from None


@report_user_errors
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging()
    check_output(args.output)
    cfg, weights = source_config(args.source, args.config, args.overrides, args.which)
    dataset, split = args.dataset or cfg.data.dataset, args.split or cfg.eval.split
    root = str(Path(args.root or cfg.data.root))
    raise_all([lambda: check_weights(args.source, weights), lambda: check_verification_data(root, dataset, split)])
    loaders = build_eval_loaders(cfg, dataset, split, root)  # the data is checked before the weights load
    model = caption_model(cfg, weights)
    if context_length(model) != cfg.data.text_length:
        raise ConfigError(
            f"data.text_length={cfg.data.text_length}, but {weights} takes captions of "
            f"{context_length(model)} tokens; pass data.text_length={context_length(model)}"
        )
    logger.info("exporting %s; verifying on %s %s (%s)", weights, dataset, split, root)
    check, sizes = export_folder(
        model,
        cfg.model.image_size,
        loaders.images,
        loaders.texts,
        loaders.eval_set.captions,
        args.output,
        str(weights),
        args.limit,
    )
    print(f"verified on {dataset} {split}: {check.summary()}")
    for name, size in sizes.items():
        print(f"{args.output / name}  " + (f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
