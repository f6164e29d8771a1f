"""Retrieval metrics: utils.metrics.rank against a sort-then-loop baseline.

The problem has CUHK-PEDES test scale by default: 3074 gallery images of 1000 identities
(each identity at least once, the rest drawn at random, so about 3 images each) and 6156
captions (2 per image, the remainder on random images). Similarities are cosines between
random unit embeddings pulled towards a per-identity centre, so the metrics are not trivial.
Both directions are timed: text-to-image (queries = captions) and image-to-text (the
transposed matrix). The baseline is the definitions written plainly, like the reference: a
full argsort of the whole matrix, the match matrix, then one query at a time in numpy.
Times are medians over --repeats after one warm-up call; both run in the same process.
The "sort" column is the baseline's argsort alone, for reference.

    python -m benchmarks.eval_metrics [--queries 6156] [--gallery 3074] [--ids 1000]
                                      [--device cpu] [--repeats 5] [--threads N] [--chunk-size 256]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.presets import synchronize
from utils.metrics import rank

Result = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def rank_reference_loop(
    similarity: torch.Tensor, q_pids: torch.Tensor, g_pids: torch.Tensor, max_rank: int = 10
) -> Result:
    """Baseline: argsort every row of [Q, G], then cmc / AP / INP one query at a time."""
    order = torch.argsort(similarity, dim=1, descending=True).cpu()
    matches = (g_pids.cpu()[order] == q_pids.cpu()[:, None]).numpy()
    cmc = np.zeros(max_rank)
    ap = np.empty(len(matches))
    inp = np.empty(len(matches))
    for i, row in enumerate(matches):
        ranks = np.flatnonzero(row) + 1.0  # 1-based ranks of the relevant items
        if ranks[0] <= max_rank:
            cmc[int(ranks[0]) - 1 :] += 1
        ap[i] = np.mean(np.arange(1, len(ranks) + 1) / ranks)
        inp[i] = len(ranks) / ranks[-1]
    n = len(matches)
    return torch.from_numpy(cmc * 100 / n), torch.tensor(ap.mean() * 100), torch.tensor(inp.mean() * 100)


def make_problem(
    num_queries: int, num_gallery: int, num_ids: int, dim: int = 256, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(similarity [Q, G] float32, q_pids [Q], g_pids [G]) as the module docstring describes."""
    gen = torch.Generator().manual_seed(seed)
    g_pids = torch.cat([torch.arange(num_ids), torch.randint(num_ids, (num_gallery - num_ids,), generator=gen)])
    per_image, extra = divmod(num_queries, num_gallery)
    images = torch.cat(
        [torch.arange(num_gallery).repeat(per_image), torch.randperm(num_gallery, generator=gen)[:extra]]
    )
    q_pids = g_pids[images]
    centres = torch.randn(num_ids, dim, generator=gen)

    def embed(pids: torch.Tensor) -> torch.Tensor:
        return F.normalize(centres[pids] * 0.35 + torch.randn(len(pids), dim, generator=gen), dim=1)

    return embed(q_pids) @ embed(g_pids).t(), q_pids, g_pids


def median_time(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, object]:
    """(median seconds over ``repeats`` calls after one warm-up call, the last result)."""
    result = fn()  # warm-up
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def max_abs_diff(a: Result, b: Result) -> float:
    return max(float((x.double().cpu() - y.double().cpu()).abs().max()) for x, y in zip(a, b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=6156)
    parser.add_argument("--gallery", type=int, default=3074)
    parser.add_argument("--ids", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sim, q_pids, g_pids = (t.to(device) for t in make_problem(args.queries, args.gallery, args.ids))
    print(
        f"{args.queries} queries x {args.gallery} gallery, {args.ids} identities, device {device}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}"
    )
    print(
        f"{'task':<5}{'rank (s)':>10}{'loop (s)':>10}{'ratio':>8}{'sort (s)':>10}{'max |diff|':>12}"
        "   R1 / R5 / R10 / mAP / mINP"
    )
    worst = 0.0
    for task, problem in (("t2i", (sim, q_pids, g_pids)), ("i2t", (sim.t(), g_pids, q_pids))):
        ours_s, ours = median_time(lambda: rank(*problem, chunk_size=args.chunk_size), args.repeats, device)
        loop_s, loop = median_time(lambda: rank_reference_loop(*problem), args.repeats, device)
        sort_s, _ = median_time(lambda: torch.argsort(problem[0], dim=1, descending=True), args.repeats, device)
        diff = max_abs_diff(ours, loop)
        worst = max(worst, diff)
        figures = " / ".join(f"{float(v):.3f}" for v in (*ours[0][[0, 4, 9]], ours[1], ours[2]))
        print(
            f"{task:<5}{ours_s:>10.4f}{loop_s:>10.4f}{loop_s / ours_s:>7.1f}x{sort_s:>10.4f}{diff:>12.2e}   {figures}"
        )
    assert worst < 1e-4, f"metrics differ by {worst}"
    print(f"metrics agree (max abs difference {worst:.2e}, in percent points)")


if __name__ == "__main__":
    raise SystemExit(main())
