"""Search an image folder with words: rank its images for a description.

    python search.py --checkpoint runs/CUHK-PEDES/<run> --images photos/ --query "a man in a black jacket"
    python search.py --checkpoint best.pth --images photos/ --query "..." --top-k 5 --output hits.png
    python search.py --onnx exported/ --images photos/ --query "..."   # export_onnx.py's folder, on onnxruntime

Prints the top K (rank, score, file) and writes them as a PNG row with their cosine
scores. The gallery's embeddings are cached in ``FOLDER/.fmfa_cache/`` and reused while
the images and the weights (with ``--onnx``: image.onnx) are unchanged (new or modified
images are encoded, nothing else). Unreadable images are named in the log and skipped.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path
from typing import Optional, Sequence

from prettytable import PrettyTable

from configs.errors import raise_all
from datasets.bases import load_image
from serving.figures import ranked_row
from serving.gallery import encode_folder, list_images, rank_gallery
from serving.inference import load_model, resolve_source
from serving.onnx_model import OnnxEncoders
from utils.cli import add_model_source, describe, report_user_errors
from utils.logger import setup_logging

logger = logging.getLogger("search")


def default_output(query: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "_", query.lower()).strip("_")[:60] or "query"
    return Path(f"search_{slug}.png")


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=describe(__doc__))
    add_model_source(parser, flag="--checkpoint", required=False)  # or --onnx, checked below
    parser.add_argument(
        "--onnx",
        metavar="DIR",
        type=Path,
        default=None,
        help="search with export_onnx.py's folder on onnxruntime instead of --checkpoint",
    )
    parser.add_argument("--images", metavar="FOLDER", help="folder of images (searched recursively); required")
    parser.add_argument("--query", metavar="TEXT", help="the description to search for; required")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--output", default=None, help="PNG of the top K (default: search_<query>.png)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-cache", action="store_true", help="encode every image again, write no cache")
    args = parser.parse_intermixed_args(argv)
    missing = [
        needed
        for needed, given in (
            ("--checkpoint RUN_OR_WEIGHTS or --onnx DIR", args.source or args.onnx),
            ("--images FOLDER", args.images),
            ("--query TEXT", args.query is not None),
        )
        if not given
    ]
    if missing:  # all of them in one line, the model source included
        parser.error(f"missing {', '.join(missing)} (e.g. --checkpoint runs/quickstart --images FOLDER --query TEXT)")
    if args.top_k < 1 or args.batch_size < 1:
        parser.error(f"--top-k and --batch-size must be >= 1 (got {args.top_k}, {args.batch_size})")
    if not args.query.strip():
        parser.error("--query is empty")
    if (args.source is None) == (args.onnx is None):
        parser.error("give --checkpoint RUN_OR_WEIGHTS or --onnx DIR (exactly one of them)")
    if args.onnx is not None and (args.config or args.overrides):
        parser.error("--onnx DIR takes no --config or key=value overrides (model.json holds its settings)")
    return args


def check_inputs(args: argparse.Namespace) -> None:
    """The weights (``--checkpoint``) and the image folder exist: every problem reported at once."""
    checks = [lambda: list_images(Path(args.images))]
    if args.onnx is None:
        checks.insert(0, lambda: resolve_source(args.source, args.config, args.overrides, args.which, "--checkpoint"))
    raise_all(checks)


@report_user_errors
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging()
    check_inputs(args)
    loaded = OnnxEncoders(args.onnx) if args.onnx else load_model(args.source, args.config, args.overrides, args.which)
    gallery = encode_folder(Path(args.images), loaded, args.batch_size, use_cache=not args.no_cache)
    logger.info(
        "%d images (%d encoded now, %d from the cache, %d unreadable skipped)",
        len(gallery.paths),
        gallery.encoded,
        len(gallery.paths) - gallery.encoded,
        len(gallery.skipped),
    )
    hits = rank_gallery(loaded, gallery, args.query, args.top_k)
    table = PrettyTable(["rank", "score", "image"], align="l")
    for place, (path, score) in enumerate(hits, 1):
        table.add_row([place, f"{score:.3f}", str(path)])
    print(table)
    output = Path(args.output) if args.output else default_output(args.query)
    ranked_row(
        [load_image(path) for path, _ in hits],
        [f"#{i} {s:.3f}" for i, (_, s) in enumerate(hits, 1)],
        f'"{args.query}"',
        output,
    )
    logger.info("wrote %s", output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
