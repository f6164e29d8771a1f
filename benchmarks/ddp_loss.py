"""Per-rank cost of the global-batch losses: one process's share when the batch is split.

Under torchrun each rank scores its own B / N rows against the gathered columns of the
global batch (model/loss.py). This times, in one process, the loss forward + backward of
rank 0's share for N = 1, 2, 4 (the paper's four losses at its shapes: B = 64, L = 77,
P = 192, D = 512, 11,003 identities, 15% MLM targets over a 49,408-token vocabulary),
with a stand-in for the other ranks (their shares are fixed tensors; no communication is
timed). The median of the repeats; ratios against N = 1 measured in the same run.

    python -m benchmarks.ddp_loss [--preset paper|tiny] [--repeats 5] [--processes 1 2 4]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, List

import torch
from prettytable import PrettyTable

from benchmarks.presets import CUHK_TRAIN_IDS, preset_config
from model.build import build_criterion
from utils.cli import describe

SHAPES = {
    "paper": dict(batch=64, dim=512, tokens=77, patches=192, classes=CUHK_TRAIN_IDS, vocab=49408, masked=5),
    "tiny": dict(batch=8, dim=64, tokens=16, patches=12, classes=20, vocab=100, masked=2),
}


class StandInGroup:
    """Rank ``rank`` of ``world_size``, alone: ``gather`` puts this rank's tensor among fixed
    stand-ins for the other ranks' shares (its own values rolled, so rows differ)."""

    def __init__(self, rank: int, world_size: int):
        self.rank, self.world_size = rank, world_size

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        parts = [tensor if r == self.rank else tensor.detach().roll(r, dims=-1) for r in range(self.world_size)]
        return torch.cat(parts, dim=0)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach() * self.world_size


def share_outputs(shape: Dict[str, int], rows: int, gen: torch.Generator) -> Dict[str, torch.Tensor]:
    """Model outputs of ``rows`` samples (leaf tensors that take gradients)."""
    d = shape["dim"]
    sizes = {
        "image_tokens": (rows, 1 + shape["patches"], d),
        "text_tokens": (rows, shape["tokens"], d),
        "image_logits": (rows, shape["classes"]),
        "text_logits": (rows, shape["classes"]),
        "mlm_scores": (rows * shape["masked"], shape["vocab"]),
    }
    out = {name: torch.randn(*size, generator=gen).requires_grad_() for name, size in sizes.items()}
    out["image_feats"], out["text_feats"] = out["image_tokens"][:, 0], out["text_tokens"][:, 7]
    out["mlm_labels"] = torch.randint(1, shape["vocab"], (rows * shape["masked"],), generator=gen)
    return out


def share_step(preset: str, processes: int):
    """Rank 0's loss forward + backward with ``processes`` ranks, as a callable."""
    shape = SHAPES[preset]
    rows = shape["batch"] // processes
    criterion = build_criterion(preset_config(preset))
    criterion.collective = StandInGroup(0, processes) if processes > 1 else None
    gen = torch.Generator().manual_seed(0)
    out = share_outputs(shape, rows, gen)
    batch = {"pids": torch.randint(shape["batch"] // 2, (rows,), generator=gen)}

    def step() -> None:
        terms, _ = criterion(dict(out), batch)
        sum(terms.values()).backward()

    return step


def median_seconds(steps: Dict[int, Callable[[], None]], repeats: int) -> Dict[int, float]:
    """Each step once to warm up, then ``repeats`` rounds over all of them (interleaved, so
    that a change of machine load touches every row alike); the median per step."""
    times: Dict[int, List[float]] = {key: [] for key in steps}
    for round_ in range(repeats + 1):
        for key, step in steps.items():
            started = time.perf_counter()
            step()
            if round_:
                times[key].append(time.perf_counter() - started)
    return {key: statistics.median(values) for key, values in times.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=describe(__doc__))
    parser.add_argument("--preset", choices=sorted(SHAPES), default="paper")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args(argv)
    seconds = median_seconds({n: share_step(args.preset, n) for n in dict.fromkeys(args.processes)}, args.repeats)
    table = PrettyTable(["processes", "rows per rank", "loss fwd+bwd per rank (ms)", "ratio to 1 process"])
    base = seconds.get(1, next(iter(seconds.values())))
    for n, value in seconds.items():
        table.add_row([n, SHAPES[args.preset]["batch"] // n, f"{value * 1e3:.1f}", f"{value / base:.2f}"])
    print(
        f"preset {args.preset}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"{args.repeats} repeats (median)"
    )
    print(table)


if __name__ == "__main__":
    raise SystemExit(main())
