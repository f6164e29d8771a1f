"""A training run's folder, described and read: the names of its files, the figure that selects
its best epoch, and what the run wrote, read back (config.yaml as ``configs.loader`` reads it for
training, progress.json's best epoch as the run decided it, the whole rows of metrics.jsonl).
:class:`RunResult` is a run as ``python -m utils.report`` reads it; the runs under a directory,
how runs are told apart (the config keys that differ) and pooled (runs differing only in their
seed) follow. Torch-free: the report reads run folders only, and starts without torch."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from configs.errors import ConfigError, UserError
from configs.loader import config_to_dict, load_config

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"  # the resolved config; test.py rebuilds the model from it
METRICS_FILE = "metrics.jsonl"  # one evaluation row per line
LOG_FILE = "train.log"
TENSORBOARD_DIR = "tensorboard"
PROGRESS_FILE = "progress.json"  # {"epoch": completed epochs, "epochs": planned, "best": {...}}
LAST, BEST = "last.pth", "best.pth"  # everything to continue identically; the best epoch's weights
# Where a run is trained, not what is trained: may differ between the starts of one run.
WHERE_KEYS = {"train.output_dir", "train.resume", "train.auto_resume"}

METRICS = ("R1", "R5", "R10", "mAP", "mINP")  # the figures of one retrieval task, in table order
# What selects a run's best epoch (best.pth, progress.json's "best"): text-to-image R1.
SELECTION_TASK, SELECTION_METRIC = "t2i", "R1"
METRICS_KEYS = ("epoch", "dataset", "split", "task", SELECTION_METRIC)  # what a whole row holds at least

# Where a run was written (and its seed): neither a column nor a reason to keep runs apart.
IGNORED_KEYS = frozenset(WHERE_KEYS | {"train.name", "train.seed"})


def read_progress(output_dir: str | Path) -> Dict[str, Any]:
    """A run folder's progress.json: ``{"epoch": completed epochs, "epochs": planned, "best":
    {R1, "epoch"}}`` (the best epoch as the run decided it); {} when absent or unreadable."""
    try:
        return json.loads((Path(output_dir) / PROGRESS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def read_metrics_rows(metrics_file: Path) -> List[dict]:
    """The rows of a metrics.jsonl; a line that is not a whole metrics row (a write cut by a
    power loss) is skipped with a warning. A missing file has no rows."""
    metrics_file = Path(metrics_file)
    if not metrics_file.is_file():
        return []
    return parse_metrics_lines(metrics_file.read_text(encoding="utf-8").splitlines(), metrics_file)


def parse_metrics_lines(lines: List[str], source: Path) -> List[dict]:
    """The whole metrics rows among ``lines`` of ``source``, each other line warned about."""
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict) and set(METRICS_KEYS) <= row.keys():
            rows.append(row)
        else:
            logger.warning("%s line %d is not a whole metrics row; skipped", source, number)
    return rows


class ReportError(UserError):
    """A problem with the command line's folders or output files (exit status 2)."""


@dataclass
class RunResult:
    """A run folder as the report reads it: its config, metrics rows and best epoch, or why it
    cannot be read."""

    folder: Path
    config: Dict[str, Any] = field(default_factory=dict)  # dotted keys, e.g. "loss.names"
    rows: List[dict] = field(default_factory=list)  # metrics.jsonl
    error: str = ""  # why the run cannot be read ("" = it can)
    best_epoch: int = 0  # progress.json's best epoch (0: none trained and evaluated yet)

    @property
    def dataset(self) -> str:
        return str(self.config.get("data.dataset", ""))

    @property
    def split(self) -> str:
        return str(self.config.get("eval.split", "test"))

    def value(self, key: str) -> str:
        """A config value as text ("-" when the key is absent)."""
        value = self.config.get(key, "-")
        if key == "loss.names" and isinstance(value, list):
            return "+".join(map(str, value))  # as written on the command line
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)

    def curve(self, split: Optional[str] = None) -> Dict[int, dict]:
        """The t2i rows of the run's dataset on ``split`` (default: the selection split) by
        epoch; a later row of the same epoch replaces an earlier one."""
        wanted = (self.dataset, split or self.split, SELECTION_TASK)
        return {row["epoch"]: row for row in self.rows if (row["dataset"], row["split"], row["task"]) == wanted}

    def selected_epoch(self) -> Optional[int]:
        """The best epoch the run recorded, when its row is in metrics.jsonl."""
        return self.best_epoch if self.best_epoch > 0 and self.best_epoch in self.curve() else None

    def state(self) -> str:
        if self.error:
            return f"unreadable: {self.error}"
        if not self.rows:
            return "no metrics yet"
        curve = self.curve()
        if not curve:
            return f"no {self.dataset} {self.split} t2i rows"
        last, total = max(curve), self.config.get("solver.epochs")
        return "done" if isinstance(total, int) and last >= total else f"epoch {last}/{total}"


def is_number(value: Any) -> bool:
    """A metric's value (an int or a float, not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def find_runs(dirs: Sequence[str | Path]) -> List[Path]:
    """Every folder holding a config.yaml under ``dirs`` (a DIR may be a run itself), sorted."""
    found: Dict[Path, None] = {}
    for directory in map(Path, dirs):
        if not directory.is_dir():
            raise ReportError(f"{directory}: no such folder")
        runs = sorted(path.parent.resolve() for path in directory.rglob(CONFIG_FILE) if path.is_file())
        if not runs:
            raise ReportError(f"{directory}: no run folder (a folder holding {CONFIG_FILE}) found")
        found.update(dict.fromkeys(runs))
    return list(found)


def flatten(config: Dict[str, Any]) -> Dict[str, Any]:
    """``{"loss": {"names": x}}`` -> ``{"loss.names": x}`` (one level: the config sections)."""
    flat: Dict[str, Any] = {}
    for section, values in config.items():
        flat.update(
            {f"{section}.{key}": value for key, value in values.items()}
            if isinstance(values, dict)
            else {str(section): values}
        )
    return flat


def read_run(folder: str | Path) -> RunResult:
    """The run's config, metrics and best epoch; a config that cannot be read gives a run with ``error``."""
    run = RunResult(Path(folder))
    try:
        run.config = flatten(config_to_dict(load_config(run.folder / CONFIG_FILE, check=False)))
    except ConfigError as error:
        return RunResult(run.folder, error=str(error))
    except (OSError, UnicodeDecodeError) as error:
        return RunResult(run.folder, error=f"{CONFIG_FILE}: {error}")
    if not run.dataset:
        return RunResult(run.folder, error=f"{CONFIG_FILE} has no data.dataset")
    try:
        rows = read_metrics_rows(run.folder / METRICS_FILE)
        run.rows = [row for row in rows if isinstance(row["epoch"], int) and is_number(row[SELECTION_METRIC])]
    except (OSError, UnicodeDecodeError) as error:
        run.error = f"{METRICS_FILE}: {error}"
    best = read_progress(run.folder).get("best")
    run.best_epoch = best["epoch"] if isinstance(best, dict) and isinstance(best.get("epoch"), int) else 0
    return run


def differing_keys(runs: Sequence[RunResult]) -> List[str]:
    """Config keys (not the ignored ones) whose values differ between the readable runs."""
    readable = [run for run in runs if not run.error]
    keys = dict.fromkeys(key for run in readable for key in run.config if key not in IGNORED_KEYS)
    return [key for key in keys if len({run.value(key) for run in readable}) > 1]


def group_runs(runs: Sequence[RunResult]) -> List[List[RunResult]]:
    """Runs with the same config but for the ignored keys (and alike in having metrics or
    not); an unreadable run is a group of its own. Groups in the order of their first run."""
    groups: Dict[Any, List[RunResult]] = {}
    for run in runs:
        same = tuple((key, run.value(key)) for key in sorted(run.config) if key not in IGNORED_KEYS)
        key = run.folder if run.error else (run.selected_epoch() is None, same)
        groups.setdefault(key, []).append(run)
    return list(groups.values())


def run_labels(runs: Sequence[RunResult]) -> Dict[Path, str]:
    """Each run's folder relative to the runs' common parent."""
    folders = [run.folder.resolve() for run in runs]
    common = Path(os.path.commonpath(folders)) if folders else Path()
    common = common.parent if common in folders else common
    return {run.folder: folder.relative_to(common).as_posix() for run, folder in zip(runs, folders)}
