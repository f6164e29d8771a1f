"""A local search page: type a description, see the gallery's best matches with their scores
and, for a chosen result, where the query's words look in it (EFA word-to-patch maps).

    python search_page.py --checkpoint runs/quickstart --split test          # the run's dataset, its test split
    python search_page.py --checkpoint best.pth --images photos/             # a folder of images
    python search_page.py --onnx exported/ --images photos/                   # an ONNX export (no maps)

Needs the page's packages (``pip install -r requirements-web.txt``, README "Search page").
Listens on 127.0.0.1 (``--host`` to change), never makes a public link and reports no usage.
The gallery's embeddings come from search.py's cache (``FOLDER/.fmfa_cache/``): computed
once per weights file, only new or changed images on a later start.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
from pathlib import Path
from typing import Optional, Sequence

from configs.errors import UserError, raise_all
from configs.loader import load_config
from datasets.readers import check_dataset_files
from serving.gallery import list_images
from serving.inference import resolve_source
from utils.cli import add_model_source, describe, report_user_errors
from utils.logger import setup_logging

logger = logging.getLogger("search_page")


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=describe(__doc__))
    add_model_source(parser, flag="--checkpoint", required=False)  # or --onnx, checked below
    parser.add_argument("--onnx", metavar="DIR", type=Path, default=None, help="export_onnx.py's folder instead")
    parser.add_argument("--images", metavar="FOLDER", type=Path, default=None, help="a folder of images (recursive)")
    parser.add_argument("--split", default=None, help="a dataset split as the gallery (its identities frame results)")
    parser.add_argument("--dataset", default=None, help="with --split: the dataset (default: the run's)")
    parser.add_argument("--root", default=None, help="with --split: the dataset root (default: the run's data.root)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--top-k", type=int, default=10, help="the page's first number of results")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-cache", action="store_true", help="encode every image again, write no cache")
    args = parser.parse_intermixed_args(argv)
    if (args.source is None) == (args.onnx is None):
        parser.error("give --checkpoint RUN_OR_WEIGHTS or --onnx DIR (exactly one of them)")
    if (args.images is None) == (args.split is None):
        parser.error("give the gallery: --images FOLDER or --split SPLIT (exactly one of them)")
    if args.onnx is not None and (args.config or args.overrides):
        parser.error("--onnx DIR takes no --config or key=value overrides (model.json holds its settings)")
    if args.onnx is not None and args.split and not args.dataset:
        parser.error("--onnx with --split needs --dataset NAME (an export holds no run config)")
    if not 1 <= args.top_k <= 50 or args.batch_size < 1 or not 0 < args.port < 65536:
        parser.error("--top-k must be 1..50, --batch-size >= 1, --port 1..65535")
    return args


def check_packages() -> None:
    if importlib.util.find_spec("gradio") is None:
        raise UserError(
            "the search page needs its packages, which requirements.txt leaves out (they are heavy): "
            'install them as README\'s "Search page" says (pip install -r requirements-web.txt)'
        )


def check_inputs(args: argparse.Namespace) -> None:
    """The page's packages, the weights and the gallery are there: every problem reported at
    once, before anything loads."""
    checks = [check_packages]
    if args.onnx is None:
        checks.append(lambda: resolve_source(args.source, args.config, args.overrides, args.which, "--checkpoint"))
    if args.images is not None:
        checks.append(lambda: list_images(args.images))
    else:
        checks.append(lambda: check_dataset_files(*gallery_dataset(args)))
    raise_all(checks)


def gallery_dataset(args: argparse.Namespace):
    """(root, dataset name) of a --split gallery: as given, else the run's config."""
    if args.dataset and args.root:
        return Path(args.root), args.dataset
    cfg = load_config(None) if args.onnx else resolve_source(args.source, args.config, args.overrides)[0]
    return Path(args.root or cfg.data.root), args.dataset or cfg.data.dataset


def load_page(args: argparse.Namespace):
    """(encoders, gallery, how the model is named on the page)."""
    from serving.inference import load_model
    from serving.page_search import folder_gallery, split_gallery

    if args.onnx:
        from serving.onnx_model import OnnxEncoders

        loaded, source = OnnxEncoders(args.onnx), f"ONNX export {args.onnx}"
    else:
        loaded = load_model(args.source, args.config, args.overrides, args.which, "--checkpoint")
        source = f"weights {loaded.weights}"
    if args.images is not None:
        page = folder_gallery(args.images, loaded, args.batch_size, not args.no_cache)
    else:
        root, dataset = gallery_dataset(args)
        page = split_gallery(root, dataset, args.split, loaded, args.batch_size, not args.no_cache)
    logger.info("%s", page.describe())
    return loaded, page, source


@report_user_errors
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging()
    check_inputs(args)
    loaded, page, source = load_page(args)
    from serving.page_ui import CSS, THEME, build_page

    demo = build_page(loaded, page, source, args.top_k)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up probes of the page
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("listening on %s: whoever reaches this machine can search the gallery and see it", args.host)
    print(f"search page: http://{args.host}:{args.port} (Ctrl+C stops it)", flush=True)
    demo.launch(server_name=args.host, server_port=args.port, share=False, quiet=True, theme=THEME, css=CSS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
