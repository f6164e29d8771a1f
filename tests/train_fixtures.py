"""Tiny training runs on fixture data: overrides for train.py / test.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List

from data_fixtures import make_dataset

from benchmarks.presets import TINY_RUN_OVERRIDES

TINY_MODEL = list(TINY_RUN_OVERRIDES)  # tiny CLIP, 32 x 16 images, 32 tokens
# configs/quickstart.yaml narrowed to width 64 and 1 layer per tower, one epoch, no workers.
ONE_EPOCH_QUICKSTART = [
    "model.vision_width=64",
    "model.text_width=64",
    "model.embed_dim=64",
    "model.vision_layers=1",
    "model.text_layers=1",
    "data.batch_size=16",
    "data.num_workers=0",
    "solver.epochs=1",
    "solver.warmup_epochs=0",
]


def tiny_run_args(root: Path, output_dir: Path, epochs: int = 2, *extra: str) -> List[str]:
    """train.py arguments: tiny CLIP, fixture CUHK-PEDES, fp32 on the CPU, no workers."""
    return [
        *TINY_MODEL,
        f"data.root={root}",
        "data.dataset=CUHK-PEDES",
        "data.batch_size=4",
        "data.num_workers=0",
        "solver.lr=1e-3",
        "solver.eps=1e-8",
        f"solver.epochs={epochs}",
        f"solver.warmup_epochs={min(1, epochs - 1)}",
        "train.precision=fp32",
        "train.device=cpu",
        "train.log_period=2",
        f"train.output_dir={output_dir}",
        *extra,
    ]


def make_fixture(root: Path, identities: int = 5) -> Path:
    """CUHK-PEDES fixture with ``identities`` training identities (2 images x 2 captions)."""
    records = []
    for pid in range(1, identities + 7):
        split = "train" if pid <= identities else ("val" if pid <= identities + 2 else "test")
        for shot in range(2):
            records.append(
                {
                    "id": pid,
                    "file_path": f"{split}/{pid}_{shot}.jpg",
                    "split": split,
                    "captions": [
                        f"person {pid} wearing colour {pid % 7} view {shot}",
                        f"someone numbered {pid} in shade {pid % 5}",
                    ],
                }
            )
    make_dataset(root, "CUHK-PEDES", records, image_size=(32, 16))
    return root


def read_metrics(run: Path) -> List[Dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def epoch_means(run: Path) -> List[Dict[str, float]]:
    """The per-epoch lines of ``run/train.log`` ("epoch E/N: name value, ...; memory ..."),
    each as {loss or metric name: epoch mean}, in order."""
    lines = re.findall(r"epoch \d+/\d+: (.*?); memory", (run / "train.log").read_text())
    return [{name: float(value) for name, value in (item.split() for item in line.split(", "))} for line in lines]
