"""The closing summary of a run: the untrained, best and final rows of its ``metrics.jsonl``."""

from __future__ import annotations

from pathlib import Path

from utils.io import read_metrics_rows
from utils.metric_names import SELECTION_METRIC, SELECTION_TASK
from utils.metrics import format_table


def summary_table(metrics_file: Path, dataset: str, split: str) -> str:
    """Untrained (epoch 0, when evaluated), best and final t2i rows of a metrics.jsonl on
    (dataset, split); with selection on val, best.pth's test rows too."""
    rows = [r for r in read_metrics_rows(metrics_file) if (r["dataset"], r["task"]) == (dataset, SELECTION_TASK)]
    selection = [r for r in rows if r["split"] == split]
    if not selection:
        return "(no evaluation)"
    best = max((r for r in selection if r["epoch"] > 0), key=lambda r: r[SELECTION_METRIC], default=selection[-1])
    picked = [("untrained", selection[0])] if selection[0]["epoch"] == 0 else []
    picked += [
        (f"best (epoch {best['epoch']}, {split})", best),
        (f"final (epoch {selection[-1]['epoch']}, {split})", selection[-1]),
    ]
    if split != "test":
        picked += [(f"best.pth on test (epoch {r['epoch']})", r) for r in rows if r["split"] == "test"][-1:]
    return format_table([{**row, "task": label} for label, row in picked])
