"""Training-step throughput, peak memory and model FLOPs utilisation per precision mode.

Step only: the trainer's own ``train_one_epoch`` over batches already on the device
(paper preset: ViT-B/16, 384 x 128, batch 64, ``a-sdm+mlm+id+efa``, Adam, random init).
Samples/s is the median over ``--repeats`` timed runs of ``--steps`` steps each, after
``--warmup`` steps, with the device synchronised around each run. FLOPs per step are
counted once with ``torch.utils.flop_counter`` (forward + backward; the same in every
mode, and without grad checkpointing's recomputed forward); the optimizer is the config's
(``solver.fused`` as set, off in the shipped configs; ``--fused`` turns it on); kernels as
``train.py`` sets them (TF32 per ``train.tf32``). MFU = FLOPs x steps/s over two peaks, each
named: the data sheet's dense bf16 peak (``--peak-tflops``, default the GPU's when known)
and the bf16 matrix-product rate measured on the lent H100/H200 machines. Peak memory:
allocated and reserved by the caching allocator (reserved is what must fit). Full pipeline
(``--pipeline``): the same step fed by the real training DataLoader on synthetic JPEGs at
the preset's image size.

Memory comparison (``--memory``): default fp32, fp32 with ``model.grad_checkpointing``,
amp_bf16 and fp32 + torch.compile side by side, each in its own subprocess (a clean peak):
``--warmup`` steps, then ``--steps`` steps timed one by one (median). Peak memory is the
peak of the timed steps (CPU: resident set, the kernel's VmHWM; CUDA: max allocated) above
the memory held before them (weights, gradients, Adam moments, the batch); the per-sample
figure is that divided by the batch. docs/memory.md has the figures.

    python -m benchmarks.train_step                      # paper preset on a GPU, tiny on a CPU
    python -m benchmarks.train_step --modes amp_bf16 --pipeline --workers 8
    python -m benchmarks.train_step --memory --preset paper --batch 16 --warmup 1 --steps 2
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import itertools
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence

import torch
from prettytable import PrettyTable
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.presets import (
    CUHK_TRAIN_PAIRS,
    cuhk_id_outputs,
    on_synthetic_set,
    preset_config,
    random_batch,
    synchronize,
)
from configs.defaults import Config
from configs.validation import PRECISIONS
from dataset_tools.synthetic import generate
from datasets.build import build_train_loader
from model.build import build_criterion, build_model
from processor.epoch_loop import EpochReport, Stepper, train_one_epoch
from processor.precision import Precision
from solver import build_optimizer
from utils.cli import describe
from utils.reproducibility import configure_kernels

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from the vendors' data sheets.
DENSE_BF16_PEAK_TFLOPS = {
    "H100 80GB HBM3": 989.4,
    "H100 SXM": 989.4,
    "H100 PCIe": 756.0,
    "H200": 989.4,
    "A100": 312.0,
    "A6000": 154.8,
    "L40S": 362.1,
    "4090": 165.2,
}


# The 8192^3 bf16 matrix product through torch, measured on the lent machines (769-798 TFLOP/s:
# /work/.library/device/KINDS.md): what a GEMM-bound step could reach there in practice.
MEASURED_BF16_TFLOPS = {"H100": 790.0, "H200": 790.0}


def known_peak(device: torch.device, table: Dict[str, float] = DENSE_BF16_PEAK_TFLOPS) -> Optional[float]:
    """The first of ``table``'s rates whose key is in the GPU's name; None on a CPU or an unknown GPU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in table.items() if key in name), None)


class StepBench:
    """One precision mode's model, optimizer and scaler, as the trainer builds them."""

    def __init__(self, cfg: Config, mode: str, device: torch.device, num_classes: int, compile_model: bool):
        torch.manual_seed(0)
        self.precision = Precision(mode, device)
        self.model = self.precision.prepare_model(build_model(cfg, num_classes)).to(device)
        self.criterion = build_criterion(cfg)
        self.optimizer = build_optimizer(self.model, cfg.solver)
        self.scaler = self.precision.make_scaler()
        self.runner = torch.compile(self.model) if compile_model else self.model

    def run(self, batches: Iterable[Dict[str, torch.Tensor]]) -> float:
        """Samples/s of ``train_one_epoch`` over ``batches`` (device synchronised)."""
        seen = [0]

        def counted():
            for batch in batches:
                seen[0] += batch["pids"].shape[0]
                yield batch

        synchronize(self.precision.device)
        started = time.perf_counter()
        stepper = Stepper(self.runner, self.criterion, self.optimizer, self.precision, self.scaler)
        train_one_epoch(stepper, counted(), 0, 0, EpochReport(log_period=50, progress=False))
        synchronize(self.precision.device)
        return seen[0] / (time.perf_counter() - started)


def count_step_flops(cfg: Config, device: torch.device, num_classes: int) -> int:
    """The model's FLOPs of one step (forward + backward), without grad checkpointing: its
    recomputed forward is overhead, not model FLOPs, so MFU stays comparable across settings."""
    cfg = replace(cfg, model=replace(cfg.model, grad_checkpointing=False))
    model = build_model(cfg, num_classes).to(device)
    batch = random_batch(cfg, num_classes, device)
    with FlopCounterMode(display=False) as counter:
        terms, _ = build_criterion(cfg)(model(batch), batch)
        sum(terms.values()).backward()
    return counter.get_total_flops()


def step_figures(cfg: Config, mode: str, device: torch.device, args, num_classes: int, flops: int) -> Dict[str, float]:
    bench = StepBench(cfg, mode, device, num_classes, args.compile)
    batch = random_batch(cfg, num_classes, device)
    bench.run([batch] * args.warmup)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rates = [bench.run([batch] * args.steps) for _ in range(args.repeats)]
    rate = statistics.median(rates)
    figures = {
        "samples_s": rate,
        "step_ms": 1000 * cfg.data.batch_size / rate,
        "tflops": flops * rate / cfg.data.batch_size / 1e12,
    }
    if device.type == "cuda":
        figures["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        figures["reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
    del bench
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return figures


def pipeline_rate(cfg: Config, mode: str, device: torch.device, args, root: str) -> float:
    """Samples/s of the same step fed by the training DataLoader (after one warm-up pass)."""
    cfg = on_synthetic_set(cfg, root, args.workers, device, persistent_workers=True)
    loader, num_classes = build_train_loader(cfg)
    bench = StepBench(cfg, mode, device, num_classes, args.compile)
    loader.sampler.set_epoch(0)
    bench.run(list(itertools.islice(loader, args.warmup)))  # starts the persistent workers
    rates = [bench.run(itertools.islice(loader, args.steps)) for _ in range(args.repeats)]
    return statistics.median(rates)


# --memory: variant -> (precision mode, model.grad_checkpointing, torch.compile), and its label.
MEMORY_VARIANTS = {
    "default": ("fp32", False, False),
    "checkpointing": ("fp32", True, False),
    "amp_bf16": ("amp_bf16", False, False),
    "compile": ("fp32", False, True),
}
MEMORY_LABELS = {
    "default": "fp32 (default)",
    "checkpointing": "fp32 + grad checkpointing",
    "amp_bf16": "amp_bf16",
    "compile": "fp32 + torch.compile",
}


def resident_bytes(field: str = "VmRSS") -> int:
    """This process's resident set (VmRSS) or its peak since the last reset (VmHWM), bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def release_free_memory(device: torch.device) -> None:
    """Collect garbage and hand the allocator's free memory back (glibc heap / CUDA cache), so
    that the resident figure counts live tensors."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory while in the context, bytes: CUDA max allocated; on the CPU the kernel's
    resident high-water mark (VmHWM, reset through /proc/self/clear_refs), or where that
    reset is not allowed, the highest VmRSS seen by a thread sampling every millisecond."""

    def __init__(self, device: torch.device):
        self.device, self.peak, self._sampler, self._stop = device, 0, None, threading.Event()

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        try:
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")  # resets VmHWM to the current VmRSS (Linux >= 4.0)
        except OSError:
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, resident_bytes())

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        elif self._sampler is not None:
            self._stop.set()
            self._sampler.join()
        else:
            self.peak = resident_bytes("VmHWM")
        return False


def current_memory(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else resident_bytes()


def variant_figures(cfg: Config, variant: str, device: torch.device, args, num_classes: int) -> Dict[str, float]:
    """One --memory variant, alone in this process: step seconds and memory, bytes."""
    mode, checkpointing, compile_model = MEMORY_VARIANTS[variant]
    cfg = replace(cfg, model=replace(cfg.model, grad_checkpointing=checkpointing))
    release_free_memory(device)
    empty = current_memory(device)
    bench = StepBench(cfg, mode, device, num_classes, compile_model)
    batch = random_batch(cfg, num_classes, device)
    release_free_memory(device)
    built = current_memory(device)
    started = time.perf_counter()
    bench.run([batch] * args.warmup)  # also creates the gradients and Adam moments (and compiles)
    warmup_s = time.perf_counter() - started
    release_free_memory(device)
    held = current_memory(device)
    times, cpu_times = [], []
    with PeakMemory(device) as peak:
        for _ in range(args.steps):
            cpu = time.process_time()
            times.append(cfg.data.batch_size / bench.run([batch]))
            cpu_times.append(time.process_time() - cpu)
    return {
        "step_s": statistics.median(times),
        "times_s": times,
        "cores": statistics.median(cpu / wall for cpu, wall in zip(cpu_times, times)),
        "warmup_s": warmup_s,
        "model": built - empty,
        "held": held - empty,
        "peak": peak.peak - empty,
        "step_peak": peak.peak - held,
    }


def memory_comparison(preset: str, device: torch.device, args) -> None:
    """--memory: each variant in a subprocess of this script, then one table."""
    batch = args.batch or 16
    figures, load = {}, " ".join(f"{x:.1f}" for x in os.getloadavg())
    for variant in args.variants:
        command = [
            sys.executable,
            "-m",
            "benchmarks.train_step",
            "--memory-variant",
            variant,
            "--preset",
            preset,
            "--batch",
            str(batch),
            "--warmup",
            str(args.warmup),
            "--steps",
            str(args.steps),
        ]
        result = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        if result.returncode != 0:
            print(f"{variant}: failed (exit {result.returncode})\n{result.stderr[-3000:]}", file=sys.stderr)
            continue
        figures[variant] = json.loads(result.stdout.strip().splitlines()[-1])
    cfg = preset_config(preset)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    what = "max allocated" if device.type == "cuda" else "resident set (VmHWM)"
    print(
        f"{name}, preset {preset}: batch {batch}, {cfg.model.image_size[0]} x {cfg.model.image_size[1]}, "
        f"{cfg.loss.names}, Adam; {args.warmup} warm-up + {args.steps} timed steps per variant, each variant in its "
        f"own process; memory = {what}, GiB"
    )
    base = figures.get("default")
    table = PrettyTable(
        [
            "variant",
            "step s (median)",
            "time x default",
            "cores busy",
            "held before step",
            "step peak above held",
            "memory x default",
            "per sample",
            "process peak",
        ]
    )
    for variant, fig in figures.items():
        ratio = (lambda key: f"{fig[key] / base[key]:.2f}") if base else (lambda key: "n/a")
        table.add_row(
            [
                MEMORY_LABELS[variant],
                f"{fig['step_s']:.2f}",
                ratio("step_s"),
                f"{fig['cores']:.1f}",
                f"{fig['held'] / 2**30:.2f}",
                f"{fig['step_peak'] / 2**30:.2f}",
                ratio("step_peak"),
                f"{fig['step_peak'] / batch / 2**20:.0f} MiB",
                f"{fig['peak'] / 2**30:.2f}",
            ]
        )
    print(table)
    print(
        "held before step = weights + gradients + Adam moments + batch, after the warm-up; step peak above held = "
        "activations and temporaries of one step (what grows with the batch); process peak = above the empty "
        "process; cores busy = CPU time / wall time of a step (below the thread count: the machine was busy; "
        f"load average {load} before, {' '.join(f'{x:.1f}' for x in os.getloadavg())} after). Wall time per step "
        "(s): "
        + "; ".join(
            f"{v} " + ", ".join(f"{t:.2f}" for t in f["times_s"]) + f" (warm-up {f['warmup_s']:.1f})"
            for v, f in figures.items()
        )
    )


def step_table(
    cfg: Config, device: torch.device, args, num_classes: int, flops: int, peaks
) -> tuple[PrettyTable, Dict[str, float]]:
    """One row per ``--modes`` entry: samples/s, step ms, TFLOP/s, MFU against each of ``peaks``
    (datasheet, measured; None: n/a) and peak memory allocated / reserved; and each mode's samples/s."""
    table = PrettyTable(
        [
            "mode",
            "samples/s",
            "step ms",
            "TFLOP/s",
            "MFU % (datasheet)",
            "MFU % (measured)",
            "peak GiB alloc",
            "peak GiB reserved",
        ]
    )
    rates = {}
    for mode in args.modes:
        fig = step_figures(cfg, mode, device, args, num_classes, flops)
        rates[mode] = fig["samples_s"]
        mfu = [f"{100 * fig['tflops'] / rate:.1f}" if rate else "n/a" for rate in peaks]
        memory = [f"{fig[key]:.2f}" if key in fig else "n/a" for key in ("peak_gib", "reserved_gib")]
        table.add_row([mode, f"{fig['samples_s']:.1f}", f"{fig['step_ms']:.1f}", f"{fig['tflops']:.3g}", *mfu, *memory])
    return table, rates


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=describe(__doc__))
    parser.add_argument(
        "--preset", choices=["paper", "tiny"], default=None, help="default: paper on a GPU, tiny on a CPU"
    )
    parser.add_argument("--modes", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--steps", type=int, default=20, help="steps per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak for MFU (default: known GPUs)")
    parser.add_argument("--pipeline", action="store_true", help="also time the DataLoader-fed step")
    parser.add_argument("--pipeline-mode", choices=PRECISIONS, default="amp_bf16")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--grad-checkpointing", action="store_true", help="model.grad_checkpointing=true")
    parser.add_argument(
        "--fused", action="store_true", help="solver.fused=true (default: the config's optimizer, unfused as shipped)"
    )
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the preset's; 16 with --memory)")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="time and peak memory of default / grad checkpointing / amp_bf16 / compile, side by side",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(MEMORY_VARIANTS),
        default=list(MEMORY_VARIANTS),
        help="the --memory variants",
    )
    parser.add_argument("--memory-variant", choices=list(MEMORY_VARIANTS), default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preset = args.preset or ("paper" if device.type == "cuda" else "tiny")
    if args.memory:
        return memory_comparison(preset, device, args)
    cfg = preset_config(preset)
    cfg = replace(
        cfg,
        solver=replace(cfg.solver, fused=args.fused or cfg.solver.fused),
        model=replace(cfg.model, grad_checkpointing=args.grad_checkpointing),
    )
    if args.batch or args.memory_variant:
        cfg = replace(cfg, data=replace(cfg.data, batch_size=args.batch or 16))
    configure_kernels(cfg.train.deterministic, cfg.train.tf32)  # as train.py: TF32 per train.tf32
    num_classes = cuhk_id_outputs(cfg) if preset == "paper" else 50
    if args.memory_variant:  # one --memory variant, in the subprocess memory_comparison started
        print(json.dumps(variant_figures(cfg, args.memory_variant, device, args, num_classes)))
        return
    peak = args.peak_tflops or known_peak(device)
    measured = known_peak(device, MEASURED_BF16_TFLOPS)
    flops = count_step_flops(cfg, device, num_classes)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"{name}, preset {preset}: batch {cfg.data.batch_size}, {cfg.model.image_size[0]} x "
        f"{cfg.model.image_size[1]}, {cfg.loss.names}"
        f"{', grad checkpointing' if args.grad_checkpointing else ''}, {cfg.solver.optimizer} "
        f"(solver.fused={cfg.solver.fused}); {flops / 1e9:.1f} GFLOP per step (fwd + bwd without the recomputed "
        f"forward of grad checkpointing, torch.utils.flop_counter); TF32 {torch.backends.cuda.matmul.allow_tf32}; "
        f"median of {args.repeats} runs of {args.steps} steps{', torch.compile' if args.compile else ''}"
    )
    print(
        f"MFU (datasheet) against {f'{peak:.1f} TFLOP/s, the dense bf16 peak' if peak else 'n/a'}; MFU (measured) "
        f"against {f'{measured:.0f} TFLOP/s, the bf16 GEMM rate measured on these machines' if measured else 'n/a'}"
    )
    table, rates = step_table(cfg, device, args, num_classes, flops, (peak, measured))
    print(table)
    if preset == "paper":
        for mode, rate in rates.items():
            print(
                f"projected 60-epoch CUHK-PEDES training, {mode}: {60 * CUHK_TRAIN_PAIRS / rate / 3600:.1f} h "
                "(steps only; add the per-epoch evaluation)"
            )
    if args.pipeline:
        with tempfile.TemporaryDirectory() as root:
            height, width = cfg.model.image_size
            generate(root, num_train_ids=200, num_val_ids=1, num_test_ids=1, image_size=(height, width), seed=0)
            rate = pipeline_rate(cfg, args.pipeline_mode, device, args, root)
        step_only = (
            rates.get(args.pipeline_mode)
            or step_figures(cfg, args.pipeline_mode, device, args, num_classes, flops)["samples_s"]
        )
        print(
            f"full pipeline ({args.pipeline_mode}, {args.workers} workers, synthetic JPEGs): {rate:.1f} samples/s"
            f" = {100 * rate / step_only:.1f}% of the step-only {step_only:.1f}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
