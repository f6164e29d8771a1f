"""A synthetic pretraining corpus end to end on the CPU, each step timed: draw ``--pairs``
image-caption pairs at a small image size (one image per person, two captions each), write
them into shards without identities, draw the Synthetic-PEDES set to fine-tune on, pre-train
a tiny model for one epoch of the corpus (``configs/pretrain_tiny.yaml``), fine-tune it on
Synthetic-PEDES from the pretrained run (``model.init_from``, ``configs/quickstart.yaml``)
and test the fine-tuned run; then the same fine-tuning from random initialisation, tested,
so that the table holds the pretraining's gain measured in the same run.

    python -m benchmarks.pretrain_corpus --pairs 200000 --out DIR [--image-size 96 32] [--workers 2]

Each step is the command a user types (printed before it runs, in a fresh process); the
table gives each step's wall time (imports and evaluations included), the shards' count,
size and pairs written per second, and the pretraining epoch's samples/s (from its
train.log). ``--epoch-pairs`` cuts the pretraining epoch to that many pairs of the stream
(``data.shard_epoch_samples``); ``--set KEY=VALUE`` adds a config override to both
trainings (e.g. a narrower model for a quick check); ``--finetune-ids`` sizes the
Synthetic-PEDES set (train, val, test identities; the quick start's by default).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Sequence

from prettytable import PrettyTable

from utils.cli import describe

REPO = Path(__file__).resolve().parents[1]


def steps(args: argparse.Namespace) -> List[tuple]:
    """(name, command, its main output) of each step, in order."""
    out, python = args.out, sys.executable
    corpus, shards, data = out / "corpus", out / "shards", out / "data"
    pretrained, finetuned, scratch = out / "runs" / "pretrain", out / "runs" / "finetune", out / "runs" / "scratch"
    size = [str(v) for v in args.image_size]
    workers = str(args.workers)
    train_ids, val_ids, test_ids = (str(v) for v in args.finetune_ids)
    common = [f"data.root={data}", *args.set]
    schedule = [f"solver.epochs={args.finetune_epochs}", f"solver.warmup_epochs={min(2, args.finetune_epochs - 1)}"]
    epoch = [f"data.shard_epoch_samples={args.epoch_pairs}"] if args.epoch_pairs else []
    draw = ["--images-per-id", "1", "1", "--image-size", *size, "--seed", "1", "--workers", workers]
    return [
        (
            "draw corpus",
            [python, "-m", "datasets.synthetic", "--root", str(corpus), "--train-ids", str(args.pairs // 2)]
            + ["--val-ids", "0", "--test-ids", "0", *draw],
            corpus / "Synthetic-PEDES" / "reid_raw.json",
        ),
        (
            "write shards",
            [python, "-m", "datasets.write_shards", str(corpus), "Synthetic-PEDES", "--out", str(shards)]
            + ["--shard-size", str(args.shard_size), "--workers", workers, "--no-identities"],
            shards / "manifest.json",
        ),
        (
            "draw Synthetic-PEDES",
            [python, "-m", "datasets.synthetic", "--root", str(data), "--train-ids", train_ids]
            + ["--val-ids", val_ids, "--test-ids", test_ids, "--workers", workers],
            data / "Synthetic-PEDES" / "reid_raw.json",
        ),
        (
            "pretrain 1 epoch",
            [python, "train.py", "--config", "configs/pretrain_tiny.yaml", *common, f"data.shards={shards}"]
            + ["solver.epochs=1", "solver.warmup_epochs=0", "eval.at_start=false", *epoch]
            + [f"train.output_dir={pretrained}"],
            pretrained / "best.pth",
        ),
        (
            "fine-tune",
            [python, "train.py", "--config", "configs/quickstart.yaml", *common]
            + [f"model.init_from={pretrained / 'best.pth'}", *schedule, f"train.output_dir={finetuned}"],
            finetuned / "best.pth",
        ),
        ("test", [python, "test.py", str(finetuned)], finetuned / "test_best_Synthetic-PEDES_test.json"),
        (
            "fine-tune from scratch",
            [python, "train.py", "--config", "configs/quickstart.yaml", *common]
            + [*schedule, f"train.output_dir={scratch}"],
            scratch / "best.pth",
        ),
        ("test from scratch", [python, "test.py", str(scratch)], scratch / "test_best_Synthetic-PEDES_test.json"),
    ]


def shown(command: Sequence[str]) -> str:
    """The command as typed in the repository (``python`` for this interpreter)."""
    return " ".join(["python" if part == sys.executable else part for part in command])


def shard_figures(log: Path) -> str:
    """Count, size and pairs written per second, from write_shards' own line (its writing time)."""
    found = re.search(r"(\d+) shard\(s\), \d+ images, (\d+) captions, ([\d.]+) MB in ([\d.]+) s", log.read_text())
    if not found:
        return ""
    count, pairs, size, seconds = found.groups()
    rate = int(pairs) / max(float(seconds), 0.05)
    return f"{count} shards, {size} MB, {int(pairs)} pairs in {seconds} s: {rate:.0f} pairs/s written"


def training_rate(log: Path) -> str:
    """The pretraining epoch's steps and samples/s, from its last train.log progress line."""
    line = r"step (\d+)/(\d+): .*?([\d.]+) samples/s from the epoch's start, ([\d.]+) since"
    found = re.findall(line, log.read_text())
    if not found:
        return ""
    done, total, rate, recent = found[-1]
    return f"{total} steps; at step {done}: {float(rate):.1f} samples/s from the start, {float(recent):.1f} lately"


def drawn(log: Path) -> str:
    """Images drawn per second, from the generator's own line (its drawing time)."""
    found = re.search(r"(\d+) images, (\d+) captions in ([\d.]+) s", log.read_text())
    if not found:
        return ""
    images, captions, seconds = found.groups()
    return f"{images} images, {captions} pairs in {seconds} s: {int(images) / max(float(seconds), 0.05):.0f} images/s"


def loaded(log: Path) -> str:
    found = re.search(r"initialised from \S+: (\d+) tensors loaded; (\d+) new", log.read_text())
    return f"{found.group(1)} tensors from the pretrained run, {found.group(2)} new" if found else ""


def tested(output: Path) -> str:
    results = json.loads(output.read_text(encoding="utf-8"))["results"]["Synthetic-PEDES"]["t2i"]
    return "t2i " + ", ".join(f"{name} {results[name]:.1f}" for name in ("R1", "R5", "R10", "mAP"))


def run_step(name: str, command: List[str], output: Path, log: Path) -> float:
    """Run one step, its output to ``log``; its wall seconds. Fails naming the step."""
    print(f"$ {shown(command)}", flush=True)
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        status = subprocess.call(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if status or not output.exists():
        tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise SystemExit(f"step {name!r} failed (exit status {status}, {output} exists: {output.exists()}):\n{tail}")
    return seconds


FIGURES = {
    "draw corpus": drawn,
    "write shards": shard_figures,
    "draw Synthetic-PEDES": drawn,
    "pretrain 1 epoch": training_rate,
    "fine-tune": loaded,
    "test": tested,
    "fine-tune from scratch": lambda log: "the same recipe from random initialisation (model.pretrain=none)",
    "test from scratch": tested,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=describe(__doc__))
    parser.add_argument("--pairs", type=int, default=200_000, help="corpus pairs (two per image)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the corpus, shards, data and runs")
    parser.add_argument("--image-size", type=int, nargs=2, default=[96, 32], metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--workers", type=int, default=2, help="processes drawing and writing shards")
    parser.add_argument("--shard-size", type=int, default=1000, help="images per shard (default: %(default)s)")
    parser.add_argument("--epoch-pairs", type=int, default=0, help="pretraining epoch in pairs (0: the corpus)")
    parser.add_argument("--finetune-ids", type=int, nargs=3, default=[500, 100, 100], metavar=("TRAIN", "VAL", "TEST"))
    parser.add_argument("--finetune-epochs", type=int, default=11, help="the quick start's by default")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for both trainings")
    args = parser.parse_args(argv)
    if args.pairs < 2 or args.finetune_epochs < 1:
        parser.error("--pairs must be >= 2 and --finetune-epochs >= 1")
    args.out = args.out.resolve()
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start", flush=True)
    table = PrettyTable(["step", "wall s", "figures"], align="l")
    for name, command, output in steps(args):
        log = args.out / "logs" / f"{name.replace(' ', '_')}.log"
        seconds = run_step(name, command, output, log)
        figures = FIGURES[name](output if name.startswith("test") else log)
        table.add_row([name, f"{seconds:.1f}", figures])
        print(f"  {name}: {seconds:.1f} s, load average {os.getloadavg()[0]:.1f}", flush=True)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
