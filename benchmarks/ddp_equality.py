"""Several processes against one: the same training step on the same global batch.

``step``: one training step per case of :data:`CASES` (caption mode x sampler) built as
train.py builds it (seeded model, the rank's share of the first global batch, DDP and the
global-batch losses under torchrun, fp32 without TF32); rank 0 saves every loss term,
metric and (after DDP's averaging) parameter gradient. ``compare``: the largest relative
error per case between two such files. With ``float64`` the step runs in float64 (model and
batch; the losses keep float64): the reference that float32 steps on 1 and on N processes
each approximate to float32 rounding. Used by tests/runs/test_ddp.py (gloo on the CPU) and
benchmarks/gpu_run.sh (NCCL on two GPUs).

    python -m benchmarks.ddp_equality step DATA_ROOT one.pt [key=value ...]
    python -m benchmarks.ddp_equality step DATA_ROOT exact.pt float64 [key=value ...]
    torchrun --nproc_per_node=2 -m benchmarks.ddp_equality step DATA_ROOT two.pt [key=value ...]
    torchrun ... step DATA_ROOT two.pt [key=value ...] --and per_rank.pt train.global_batch_losses=false
    python -m benchmarks.ddp_equality compare one.pt two.pt

Each ``--and OUTPUT [float64] [key=value ...]`` adds one more variant of the step to the same
launch (one process group, one import of torch), saved to its own file.
"""

from __future__ import annotations

import argparse
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from prettytable import PrettyTable

from benchmarks.presets import TINY_RUN_OVERRIDES
from configs.loader import load_config
from datasets.build import build_train_loader
from model.build import build_criterion, build_model
from processor.epoch_loop import move_batch
from utils.cli import describe
from utils.distributed import cleanup, data_parallel, init_distributed, loss_collective
from utils.reproducibility import set_tf32

# A tiny CLIP on 32 x 16 images, global batch 12 (2 or 3 processes split it evenly).
TINY = [
    *TINY_RUN_OVERRIDES,
    "data.dataset=CUHK-PEDES",
    "data.batch_size=12",
    "data.num_instance=2",
    "data.num_workers=0",
    "train.precision=fp32",
    "train.device=cpu",
    "model.id_classes=identities",
    "data.augment=true",
]
CASES = {
    f"{sampler}, share_masked_caption={shared}": [f"data.sampler={sampler}", f"data.share_masked_caption={shared}"]
    for sampler in ("random", "identity")
    for shared in ("true", "false")
}


def one_step(root: str, overrides: list, info, dtype: torch.dtype) -> dict:
    cfg = load_config(None, [*TINY, f"data.root={root}", *overrides])
    torch.manual_seed(cfg.train.seed)
    loader, num_classes = build_train_loader(cfg, info.rank, info.world_size)
    loader.sampler.set_epoch(1)
    model = build_model(cfg, num_classes).to(info.device, dtype)
    # as processor.training.Training does
    criterion = build_criterion(cfg, loss_collective(info, cfg.train.global_batch_losses))
    model = data_parallel(model, info)
    batch = {key: value.to(dtype) if value.is_floating_point() else value for key, value in next(iter(loader)).items()}
    batch = move_batch(batch, info.device)
    terms, metrics = criterion(model(batch), batch)
    sum(terms.values()).backward()
    module = model.module if info.distributed else model
    return {
        "terms": {name: value.detach().cpu() for name, value in terms.items()},
        "metrics": {name: value.cpu() for name, value in metrics.items()},
        "grads": {name: p.grad.detach().cpu() for name, p in module.named_parameters() if p.grad is not None},
    }


def step(root: str, output: str, *extra: str) -> None:
    """``extra``: config overrides, and ``float64`` for the float64 reference (the same step
    with the model and the batch in float64); ``--and OUTPUT ...`` starts another variant."""
    set_tf32(False)  # the equality is of float32 arithmetic
    variants = _variants([output, *extra])
    device = next(
        (item.split("=", 1)[1] for _, _, items in variants for item in items if item.startswith("train.device=")), "cpu"
    )
    info = init_distributed(device)
    for path, dtype, overrides in variants:
        results = {name: one_step(root, [*case, *overrides], info, dtype) for name, case in CASES.items()}
        if info.is_main:
            torch.save(results, path)
    cleanup()


def _variants(words: List[str]) -> List[Tuple[str, torch.dtype, List[str]]]:
    """``OUTPUT [float64] [key=value ...] [--and OUTPUT ...]`` as (output, dtype, overrides) each."""
    groups, current = [], []
    for word in words + ["--and"]:
        if word != "--and":
            current.append(word)
            continue
        if not current:
            raise SystemExit("ddp_equality step: --and must be followed by an output file")
        output, *items = current
        dtype = torch.float64 if "float64" in items else torch.float32
        groups.append((output, dtype, [item for item in items if item != "float64"]))
        current = []
    return groups


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (tensor-wise)."""
    return float((actual.double() - expected.double()).abs().max() / expected.double().abs().max().clamp_min(1e-12))


def gradient_norm_error(actual: Dict[str, torch.Tensor], expected: Dict[str, torch.Tensor]) -> float:
    """||actual - expected|| / ||expected|| over all parameters' gradients as one vector."""
    squared = sum(float((actual[name].double() - value.double()).square().sum()) for name, value in expected.items())
    norm = sum(float(value.double().square().sum()) for value in expected.values())
    return (squared / max(norm, 1e-24)) ** 0.5


def largest_differences(many: dict, one: dict) -> Dict[str, Dict[str, float]]:
    """Per case: the largest tensor-wise relative error among the terms, the metrics and the
    gradients ("grads"), and the relative error of the whole gradient vector ("grad_norm")."""
    out = {}
    for case, expected in one.items():
        got = many[case]
        for kind in ("terms", "metrics", "grads"):
            if got[kind].keys() != expected[kind].keys():
                raise ValueError(f"{case}: the {kind} differ in names: {sorted(got[kind])} vs {sorted(expected[kind])}")
        out[case] = {
            kind: max(relative_error(got[kind][name], expected[kind][name]) for name in expected[kind])
            for kind in ("terms", "metrics", "grads")
        }
        out[case]["grad_norm"] = gradient_norm_error(got["grads"], expected["grads"])
    return out


def compare(one: str, many: str) -> None:
    errors = largest_differences(*(torch.load(path, weights_only=True) for path in (many, one)))
    table = PrettyTable(["case", "loss terms", "metrics", "gradients (each tensor)", "gradients (all)"])
    for case, values in errors.items():
        table.add_row([case, *(f"{values[kind]:.1e}" for kind in ("terms", "metrics", "grads", "grad_norm"))])
    print(f"largest relative error, {many} against {one}\n{table}")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ddp_equality",
        description=describe(__doc__),
        epilog="\n\n".join(__doc__.split("\n\n")[-2:]),
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    commands = parser.add_subparsers(dest="command", required=True)
    step_parser = commands.add_parser("step", help="one training step per case, saved to OUTPUT (rank 0)")
    step_parser.add_argument("root", metavar="DATA_ROOT", help="root holding CUHK-PEDES/ (a synthetic one will do)")
    step_parser.add_argument("output", metavar="OUTPUT", help="file the step's losses, metrics and gradients go to")
    step_parser.add_argument(
        "extra",
        nargs=argparse.REMAINDER,
        metavar="float64|key=value|--and OUTPUT ...",
        help="float64, config overrides; --and OUTPUT [...] adds another variant to the same launch",
    )
    compare_parser = commands.add_parser("compare", help="largest relative errors of MANY against ONE")
    compare_parser.add_argument("one", metavar="ONE", help="step file of one process")
    compare_parser.add_argument("many", metavar="MANY", help="step file of several processes")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    if args.command == "step":
        step(args.root, args.output, *args.extra)
    else:
        compare(args.one, args.many)
    raise SystemExit(0)
