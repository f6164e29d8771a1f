"""Efficiency report: parameters per part, and the inference cost per caption query and per
gallery image of the model as used at test time (global embeddings only: the IRR and ID
heads and EFA are training-only).

GFLOPs are counted with ``torch.utils.flop_counter`` (one item: a 77-token caption, one
384 x 128 image); times are the median per item over ``--repeats`` runs at batch 1 and at
``--batch`` on this machine's device. Ranking costs one D-dim dot product per pair.

    python -m benchmarks.efficiency [--preset paper|tiny] [--batch 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from typing import Callable, Dict, Optional, Sequence

import torch
from prettytable import PrettyTable
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.presets import cuhk_id_outputs, preset_config, random_batch, synchronize
from model.build import build_model
from model.fmfa import FMFA
from utils.cli import describe

TRAINING_ONLY = ("classifier", "cross_attn", "cross_modal_transformer", "ln_pre_t", "ln_pre_i", "ln_post", "mlm_head")


def parameters_per_part(model: FMFA) -> Dict[str, int]:
    """Parameter counts: image encoder, text encoder, and the training-only heads."""
    parts = {
        "image encoder (used at test)": 0,
        "text encoder (used at test)": 0,
        "ID classifier (training only)": 0,
        "IRR cross-modal + MLM head (training only)": 0,
    }
    for name, parameter in model.named_parameters():
        if name.startswith("base_model.visual."):
            key = "image encoder (used at test)"
        elif name.startswith("base_model."):
            key = "text encoder (used at test)"
        elif name.startswith("classifier"):
            key = "ID classifier (training only)"
        else:
            assert name.startswith(TRAINING_ONLY), name
            key = "IRR cross-modal + MLM head (training only)"
        parts[key] += parameter.numel()
    return parts


def count_flops(function: Callable, inputs: torch.Tensor) -> int:
    """Forward FLOPs. Grad mode stays on: under no_grad nn.MultiheadAttention takes a fused
    fast path whose FLOPs the counter does not see (a third of the encoder's)."""
    with FlopCounterMode(display=False) as counter:
        function(inputs)
    return counter.get_total_flops()


@torch.no_grad()
def seconds_per_item(function: Callable, inputs: torch.Tensor, repeats: int) -> float:
    device = inputs.device
    function(inputs)  # warm-up
    times = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        function(inputs)
        synchronize(device)
        times.append((time.perf_counter() - started) / inputs.shape[0])
    return statistics.median(times)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=describe(__doc__))
    parser.add_argument("--preset", choices=["paper", "tiny"], default="paper")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--id-classes",
        choices=["captions", "identities"],
        default="captions",
        help="ID head sized as the authors' code does (CUHK-PEDES training captions) or by identities",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = preset_config(args.preset)
    cfg.model.id_classes = args.id_classes
    model = build_model(cfg, num_classes=cuhk_id_outputs(cfg)).to(device).eval()
    parts = parameters_per_part(model)
    table = PrettyTable(["part", "parameters (M)"], align="l")
    for part, count in parts.items():
        table.add_row([part, f"{count / 1e6:.2f}"])
    table.add_row(["total", f"{sum(parts.values()) / 1e6:.2f}"])
    print(table)
    batch = random_batch(
        cfg.__class__(model=cfg.model, data=cfg.data.__class__(batch_size=args.batch)), cuhk_id_outputs(cfg), device
    )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    cost = PrettyTable(["item", "GFLOPs", "ms (batch 1)", f"ms per item (batch {args.batch})"], align="l")
    for label, function, inputs in (
        ("caption query (77 tokens)", model.encode_text, batch["caption_ids"]),
        (f"gallery image ({cfg.model.image_size[0]} x {cfg.model.image_size[1]})", model.encode_image, batch["images"]),
    ):
        flops = count_flops(function, inputs[:1])
        single = seconds_per_item(function, inputs[:1], args.repeats)
        batched = seconds_per_item(function, inputs, args.repeats)
        cost.add_row([label, f"{flops / 1e9:.3g}", f"{1000 * single:.1f}", f"{1000 * batched:.2f}"])
    print(f"inference cost, preset {args.preset}, fp32 on {name} (median of {args.repeats}):")
    print(cost)
    print(f"ranking: one {cfg.model.embed_dim}-dim dot product per query-image pair ({2 * cfg.model.embed_dim} FLOPs)")


if __name__ == "__main__":
    raise SystemExit(main())
