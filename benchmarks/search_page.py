"""The search page's cost on this CPU: time to the first result after start, with the
embedding cache cold and warm, and the query latency at 3k and 1M gallery images.

    python -m benchmarks.search_page [--checkpoint RUN_OR_WEIGHTS] [--images 3074] [--large 1000000] [--queries 20]

Start: what search_page.py does before it serves (load the weights, encode the gallery or
read it from the cache, build the page) and then the first query's handler (rank + framed
thumbnails), timed in one process with torch and gradio already imported (their import time is
printed apart, in a fresh process). The gallery is ``--images`` synthetic people (192 x 64,
Synthetic-PEDES's drawing; 3,074 is CUHK-PEDES's test split). The model is the quick start's
architecture with random init (the weights do not change the cost) unless ``--checkpoint``.
Latency: the median over ``--queries`` captions of the page's search handler on that gallery,
and of the ranking alone (text encoding, the [N, D] product, top 10) at ``--large`` random unit
embeddings (generated: no images behind them; their thumbnails would cost what the 3k's do).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from prettytable import PrettyTable

from configs.loader import load_config
from dataset_tools.synthetic import generate
from model.build import build_model
from serving.gallery import Gallery, rank_gallery
from serving.inference import load_model
from serving.page_search import folder_gallery, search
from utils.cli import describe

logger = logging.getLogger("search_page_benchmark")
QUERY = "a woman in a red coat with a black backpack"


def gallery_folder(work: Path, count: int) -> Path:
    """``count`` synthetic people in one folder (drawn once into ``work``)."""
    generate(work / "data", num_train_ids=1, num_val_ids=0, num_test_ids=count // 2 + 1, images_per_id=(2, 2))
    source = sorted((work / "data" / "Synthetic-PEDES" / "imgs" / "test").glob("*.jpg"))[:count]
    folder = work / "gallery"
    folder.mkdir()
    for path in source:
        shutil.copy(path, folder / path.name)
    return folder


def quickstart_weights(work: Path) -> List[str]:
    """--checkpoint-style arguments of a random-init model of the quick start's architecture."""
    cfg = load_config("configs/quickstart.yaml")
    torch.manual_seed(0)
    weights = work / "quickstart_random.pth"
    torch.save({"model": build_model(cfg, num_classes=8).state_dict()}, weights)
    return [str(weights), "configs/quickstart.yaml"]


def time_to_first_result(weights: str, config: Optional[str], folder: Path) -> float:
    """Seconds from loading the weights to the first query's results (gallery from the cache if there)."""
    from serving.page_ui import build_page

    start = time.perf_counter()
    loaded = load_model(weights, config)
    page = folder_gallery(folder, loaded)
    build_page(loaded, page, "benchmark")
    results = search(loaded, page, QUERY, 10)
    assert len(results.items) == 10
    return time.perf_counter() - start


def median_ms(call: Callable[[], object], repeats: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def import_seconds() -> float:
    code = "import time; t = time.perf_counter(); import serving.page_ui; print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def large_latency(loaded, dim: int, args: argparse.Namespace, texts) -> str:
    """The ranking at ``args.large`` random unit embeddings of width ``dim``: the page's ranking
    when ``dim`` is the model's, else the product and top 10 alone (a random query)."""
    features = F.normalize(torch.randn(args.large, dim), dim=-1)
    if dim == loaded.model.embed_dim:
        large = Gallery([Path(f"{i}.jpg") for i in range(args.large)], features)
        value = median_ms(lambda: rank_gallery(loaded, large, next(texts), 10), args.queries)
        return f"{value:.1f} ms (ranking: text encoding, product, top 10)"
    query = F.normalize(torch.randn(dim), dim=0)
    value = median_ms(lambda: (features @ query).topk(10), args.queries)
    return f"{value:.1f} ms (product and top 10 only)"


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=describe(__doc__))
    parser.add_argument("--checkpoint", default=None, help="run folder or weights (default: random init)")
    parser.add_argument("--images", type=int, default=3074)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=20)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    load = os.getloadavg()[0]
    table = PrettyTable(["measure", "value"], align="l")
    table.add_row(["import torch + gradio + the page (fresh process)", f"{import_seconds():.1f} s"])
    with tempfile.TemporaryDirectory() as work:
        folder = gallery_folder(Path(work), args.images)
        weights, config = [args.checkpoint, None] if args.checkpoint else quickstart_weights(Path(work))
        cold = time_to_first_result(weights, config, folder)
        warm = time_to_first_result(weights, config, folder)
        table.add_row([f"start to first result, {args.images:,} images, cache cold", f"{cold:.1f} s"])
        table.add_row([f"start to first result, {args.images:,} images, cache warm", f"{warm:.2f} s"])
        loaded = load_model(weights, config)
        page = folder_gallery(folder, loaded)
        texts = itertools.cycle([f"{QUERY} number {i}" for i in range(args.queries + 1)])  # each timed call a new text
        size = f"{len(page.gallery.paths):,} images"
        handler = median_ms(lambda: search(loaded, page, next(texts), 10), args.queries)
        table.add_row([f"query latency, {size}, page handler (rank + 10 framed thumbnails)", f"{handler:.1f} ms"])
        ranking = median_ms(lambda: rank_gallery(loaded, page.gallery, next(texts), 10), args.queries)
        table.add_row([f"query latency, {size}, ranking alone", f"{ranking:.1f} ms"])
        for dim in sorted({page.gallery.features.shape[1], 512}):
            table.add_row(
                [
                    f"query latency, {args.large:,} generated embeddings, D={dim}",
                    large_latency(loaded, dim, args, texts),
                ]
            )
    print(table)
    # The machine may be shared: the load says how much of its CPU these figures had.
    print(f"torch threads {torch.get_num_threads()}, load average at start {load:.1f}, at end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
