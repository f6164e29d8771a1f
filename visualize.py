"""Look at what a model retrieves, and where its words look.

    python visualize.py retrieval RUN [--dataset CUHK-PEDES --split test] [--queries 0 12 | --random 5]
    python visualize.py efa RUN [--index 3 --caption 0] [--words red jacket backpack]

``retrieval``: per query, its caption, its ground-truth image and the top 10 gallery
images framed green (same identity) or red. ``efa``: the EFA token-to-patch similarity of
chosen words over the patch grid (24 x 8 at 384 x 128), before and after sparsification,
overlaid on the image (the paper's figure 5). PNGs go to ``--output-dir``.
"""

from __future__ import annotations

import argparse
import logging
import random
from pathlib import Path
from typing import List, Optional, Sequence

from configs.errors import UserError
from datasets.bases import load_image
from datasets.build import build_eval_loaders, read_dataset
from processor.evaluator import extract_features
from serving.efa_maps import default_words, word_maps
from serving.figures import ranked_row, similarity_maps
from serving.inference import LoadedModel, load_model
from utils.cli import add_model_source, describe, report_user_errors
from utils.logger import setup_logging

logger = logging.getLogger("visualize")


def pick_queries(count: int, chosen: List[int], how_many: int, seed: int) -> List[int]:
    bad = [q for q in chosen if not 0 <= q < count]
    if bad:
        raise UserError(f"--queries {bad} out of range: the split has {count} captions (0..{count - 1})")
    return chosen or sorted(random.Random(seed).sample(range(count), min(how_many, count)))


def retrieval_pictures(loaded: LoadedModel, args) -> List[Path]:
    cfg = loaded.cfg
    loaders = build_eval_loaders(cfg, args.dataset, args.split, args.root)
    gallery = loaders.eval_set
    features = extract_features(loaded.model, loaders, loaded.device, loaded.autocast, progress=True)
    written = []
    for query in pick_queries(len(gallery.captions), args.queries, args.random, args.seed):
        scores = features.image @ features.text[query]
        top = scores.topk(min(args.top_k, len(gallery.image_paths))).indices.tolist()
        correct = [gallery.image_pids[i] == gallery.caption_pids[query] for i in top]
        output = args.output_dir / f"retrieval_{args.dataset}_{args.split}_{query}.png"
        ranked_row(
            [load_image(gallery.image_paths[i]) for i in top],
            [f"#{n} {float(scores[i]):.2f}" for n, i in enumerate(top, 1)],
            f"query {query}: {gallery.captions[query]}",
            output,
            correct,
            query_image=load_image(gallery.image_paths[gallery.caption_images[query]]),
        )
        written.append(output)
    return written


def efa_maps(loaded: LoadedModel, args) -> List[Path]:
    cfg = loaded.cfg
    gallery = read_dataset(str(Path(args.root or cfg.data.root)), args.dataset).eval_set(args.split)
    if not 0 <= args.index < len(gallery.image_paths):
        raise UserError(f"--index {args.index} out of range: the split has {len(gallery.image_paths)} images")
    captions = gallery.captions_of(args.index)
    if not 0 <= args.caption < len(captions):
        raise UserError(f"--caption {args.caption}: image {args.index} has {len(captions)} captions")
    caption = captions[args.caption]
    words = args.words or default_words(caption)
    shown, before, after = word_maps(loaded, load_image(gallery.image_paths[args.index]), caption, words)
    output = args.output_dir / f"efa_{args.dataset}_{args.split}_{args.index}_{args.caption}.png"
    return [similarity_maps(shown, words, before, after, caption, output)]


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=describe(__doc__))
    parser.add_argument("tool", choices=("retrieval", "efa"))
    add_model_source(parser)
    parser.add_argument("--dataset", default=None, help="default: the run's dataset")
    parser.add_argument("--split", default="test")
    parser.add_argument("--root", default=None, help="dataset root (default: the run's data.root)")
    parser.add_argument("--output-dir", type=Path, default=Path("figures"))
    parser.add_argument("--queries", type=int, nargs="*", default=[], help="retrieval: caption indices")
    parser.add_argument("--random", type=int, default=4, help="retrieval: random queries when none chosen")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--index", type=int, default=0, help="efa: image index in the split")
    parser.add_argument("--caption", type=int, default=0, help="efa: which of its captions")
    parser.add_argument("--words", nargs="*", default=[], help="efa: words of the caption to map")
    return parser.parse_intermixed_args(argv)


@report_user_errors
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging()
    loaded = load_model(args.source, args.config, args.overrides, args.which)
    args.dataset = args.dataset or loaded.cfg.data.dataset
    args.output_dir.mkdir(parents=True, exist_ok=True)
    written = (retrieval_pictures if args.tool == "retrieval" else efa_maps)(loaded, args)
    for path in written:
        logger.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
