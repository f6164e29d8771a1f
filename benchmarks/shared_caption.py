"""The training step with the masked caption shared by every loss (one text-tower pass, the
authors' data behaviour) against two passes (clean caption for the global losses, masked
for IRR), measured in one run at the same model size.

    python -m benchmarks.shared_caption                   # paper size (ViT-B/16, 384 x 128), batch 16
    python -m benchmarks.shared_caption --preset tiny     # the same code path at toy size

Forward + backward of ``criterion(model(batch), batch)`` in fp32 (no optimizer step, the
same in both), median over ``--steps`` timed steps after ``--warmup``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from typing import Optional, Sequence

import torch
from prettytable import PrettyTable

from benchmarks.presets import cuhk_id_outputs, preset_config, random_batch
from configs.defaults import Config
from model.build import build_criterion, build_model
from utils.cli import describe


def step_seconds(cfg: Config, shared: bool, warmup: int, steps: int) -> float:
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, share_masked_caption=shared))
    torch.manual_seed(0)
    num_classes = cuhk_id_outputs(cfg) if cfg.model.vision_width >= 768 else 50
    model, criterion = build_model(cfg, num_classes).train(), build_criterion(cfg)
    batch = random_batch(cfg, num_classes, torch.device("cpu"))
    times = []
    for index in range(warmup + steps):
        started = time.perf_counter()
        terms, _ = criterion(model(batch), batch)
        sum(terms.values()).backward()
        model.zero_grad(set_to_none=True)
        if index >= warmup:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=describe(__doc__))
    parser.add_argument("--preset", choices=["paper", "tiny"], default="paper")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args(argv)
    cfg = preset_config(args.preset)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, batch_size=args.batch))
    seconds = {
        label: step_seconds(cfg, shared, args.warmup, args.steps)
        for label, shared in (("two text passes (clean + masked)", False), ("one shared pass (authors' data)", True))
    }
    base = seconds["two text passes (clean + masked)"]
    table = PrettyTable(["text tower", "s per step", "ratio"], align="l")
    for label, value in seconds.items():
        table.add_row([label, f"{value:.2f}", f"{value / base:.2f}"])
    print(
        f"{args.preset} preset, batch {args.batch}, fp32, forward + backward, CPU threads "
        f"{torch.get_num_threads()}\n{table}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
