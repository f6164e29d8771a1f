"""Compare training runs: ``python -m utils.report DIR [DIR ...] [--csv FILE] [--plot FILE]``.

A run (a folder holding config.yaml) is reported at its selected epoch: the best t2i R1 on its
dataset and ``eval.split`` among epochs > 0 (earliest on ties), plus its test row there when it
was selected on val. Runs differing only in ``train.seed`` are pooled as ``mean ± std (n)``;
differing config keys become columns; the paper's figures are added per dataset.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml
from prettytable import PrettyTable, TableStyle

from configs.errors import UserError
from utils.cli import describe, report_user_errors
from utils.io import read_metrics_rows, write_text_atomic, write_with
from utils.metrics import METRICS, SELECTION_METRIC, SELECTION_TASK
from utils.run_folder import CONFIG_FILE, METRICS_FILE, WHERE_KEYS

logger = logging.getLogger(__name__)

COLUMNS = ("run", "dataset", "split", *METRICS, "epoch", "state")
# Where a run was written (and its seed): neither a column nor a reason to keep runs apart.
IGNORED_KEYS = frozenset(WHERE_KEYS | {"train.name", "train.seed"})
PAPER_LABEL = "paper (FMFA)"
PAPER = {  # the paper's text-to-image results (test split; mINP not reported)
    "CUHK-PEDES": {"R1": 74.16, "R5": 90.12, "R10": 94.10, "mAP": 66.66},
    "ICFG-PEDES": {"R1": 64.29, "R5": 80.48, "R10": 85.93, "mAP": 39.43},
    "RSTPReid": {"R1": 61.05, "R5": 83.85, "R10": 89.80, "mAP": 48.22},
}

# The paper's loss ablation on CUHK-PEDES: t2i R1 (test split) by the set of losses; ID and
# IRR (mlm) are on in every row of that table (README "Train", "The paper's ablation").
PAPER_ABLATION = {
    frozenset({"sdm", "mlm", "id"}): 73.45,  # SDM
    frozenset({"a-sdm", "mlm", "id"}): 74.04,  # A-SDM
    frozenset({"sdm", "mlm", "id", "efa"}): 73.73,  # SDM + EFA
    frozenset({"a-sdm", "mlm", "id", "efa"}): 74.16,  # A-SDM + EFA (FMFA)
}
PAPER_ABLATION_DATASET = "CUHK-PEDES"
ABLATION_COLUMN = "paper R1 (ablation)"
NOT_IN_PAPER = "extra (not in the paper)"


class ReportError(UserError):
    """A problem with the command line's folders or output files (exit status 2)."""


@dataclass
class RunResult:
    """A run folder as the report reads it: its config and metrics rows, or why it cannot be read."""

    folder: Path
    config: Dict[str, Any] = field(default_factory=dict)  # dotted keys, e.g. "loss.names"
    rows: List[dict] = field(default_factory=list)  # metrics.jsonl
    error: str = ""  # why the run cannot be read ("" = it can)

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
        trained = [row for epoch, row in self.curve().items() if epoch > 0]
        return max(trained, key=lambda row: (row[SELECTION_METRIC], -row["epoch"]))["epoch"] if trained else None

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


# ---------------------------------------------------------------------------------- reading


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


def _yaml_reason(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"invalid YAML: {problem}" + (f" (line {mark.line + 1})" if mark is not None else "")


def read_run(folder: str | Path) -> RunResult:
    """The run's config and metrics; a config that cannot be read gives a run with ``error``."""
    run = RunResult(Path(folder))
    try:
        tree = yaml.safe_load((run.folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        return RunResult(run.folder, error=_yaml_reason(error))
    except (OSError, UnicodeDecodeError) as error:
        return RunResult(run.folder, error=f"{CONFIG_FILE}: {error}")
    if not isinstance(tree, dict):
        return RunResult(run.folder, error=f"{CONFIG_FILE} is not a mapping of config sections")
    run.config = flatten(tree)
    if not run.dataset:
        return RunResult(run.folder, error=f"{CONFIG_FILE} has no data.dataset")
    try:
        rows = read_metrics_rows(run.folder / METRICS_FILE)
        run.rows = [row for row in rows if isinstance(row["epoch"], int) and _number(row[SELECTION_METRIC])]
    except (OSError, UnicodeDecodeError) as error:
        run.error = f"{METRICS_FILE}: {error}"
    return run


# --------------------------------------------------------------------------------- the rows


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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


def _statistic(values: List[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}" if values else ""
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} ({len(values)})"


def _metric_row(base: Dict[str, str], split: str, picked: List[dict]) -> Dict[str, str]:
    """One row: each metric over the runs' rows ``picked``; the epoch, or each run's epoch."""
    epochs = [str(row["epoch"]) for row in picked]
    values = {name: _statistic([float(row[name]) for row in picked if _number(row.get(name))]) for name in METRICS}
    return {**base, "split": split, **values, "epoch": epochs[0] if len(set(epochs)) == 1 else ", ".join(epochs)}


def paper_ablation_r1(run: RunResult) -> str:
    """The paper's ablation R1 of the run's set of losses on CUHK-PEDES, else why there is none."""
    names = run.config.get("loss.names", [])
    names = names.split("+") if isinstance(names, str) else names
    value = PAPER_ABLATION.get(frozenset(str(name).strip() for name in names))
    if run.dataset != PAPER_ABLATION_DATASET or value is None:
        return NOT_IN_PAPER
    return f"{value:.2f}"


def _group_rows(
    group: List[RunResult], labels: Dict[Path, str], keys: List[str], ablation: bool = False
) -> List[Dict[str, str]]:
    """The group's row at the selected epochs; for a val-selected group also the test row;
    with ``ablation`` the paper's ablation R1 beside it."""
    first = group[0]
    paper = {ABLATION_COLUMN: "" if first.error else paper_ablation_r1(first)} if ablation else {}
    base = (
        dict.fromkeys(COLUMNS, "")
        | paper
        | {
            "run": ", ".join(labels[run.folder] for run in group),
            "dataset": first.dataset,
            "split": "" if first.error else first.split,
            "state": ", ".join(dict.fromkeys(run.state() for run in group)),
            **{key: "" if first.error else first.value(key) for key in keys},
        }
    )
    selected = [(run, run.selected_epoch()) for run in group if run.selected_epoch() is not None]
    rows = [_metric_row(base, base["split"], [run.curve()[epoch] for run, epoch in selected])]
    tests = [run.curve("test").get(epoch) for run, epoch in selected] if first.split != "test" else []
    if any(tests):
        rows.append(_metric_row(base, "test", [row for row in tests if row]))
    return rows


def paper_row(dataset: str, keys: Sequence[str] = ()) -> Dict[str, str]:
    figures = {name: f"{value:.2f}" for name, value in PAPER[dataset].items()}
    return dict.fromkeys((*COLUMNS, *keys), "") | {"run": PAPER_LABEL, "dataset": dataset, "split": "test", **figures}


def report_rows(runs: Sequence[RunResult], ablation: bool = False) -> List[Dict[str, str]]:
    """The table's rows (column -> text): per dataset its groups, then the paper's figures;
    runs that cannot be read last. ``ablation``: a column with the paper's ablation R1 of
    each run's set of losses (run.sh's ablation section)."""
    keys, labels = differing_keys(runs), run_labels(runs)
    by_dataset: Dict[str, List[Dict[str, str]]] = {}
    for group in group_runs(runs):
        by_dataset.setdefault(group[0].dataset, []).extend(_group_rows(group, labels, keys, ablation))
    extra = (ABLATION_COLUMN,) if ablation else ()
    rows: List[Dict[str, str]] = []
    for dataset in sorted(by_dataset, key=lambda name: name == ""):
        paper = [paper_row(dataset, (*extra, *keys))] if dataset in PAPER else []
        rows += by_dataset[dataset] + paper
    return [dict.fromkeys((*COLUMNS[:4], *extra), "") | row for row in rows] if ablation else rows


# ---------------------------------------------------------------------------------- outputs


def markdown_table(rows: Sequence[Dict[str, str]]) -> str:
    table = PrettyTable(list(rows[0]) if rows else list(COLUMNS), align="l")
    table.set_style(TableStyle.MARKDOWN)
    table.add_rows([list(row.values()) for row in rows])
    return table.get_string()


def write_csv(rows: Sequence[Dict[str, str]], path: str | Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def curve_labels(runs: Sequence[RunResult]) -> Dict[Path, str]:
    """The differing config values of each run (else its folder); seeds of one config get
    their folder appended."""
    keys, labels = differing_keys(runs), run_labels(runs)
    names = {}
    for group in group_runs(runs):
        for run in group:
            name = ", ".join(f"{key}={run.value(key)}" for key in keys) or labels[run.folder]
            names[run.folder] = f"{name} ({labels[run.folder]})" if len(group) > 1 and keys else name
    return names


def _draw_run(axes, run: RunResult, colour: str, label: str) -> None:
    curve, best = run.curve(), run.selected_epoch()
    for axis, metric in zip(axes, ("R1", "mAP")):
        points = dict(sorted((epoch, row[metric]) for epoch, row in curve.items() if _number(row.get(metric))))
        axis.plot(list(points), list(points.values()), marker=".", color=colour, label=label)
        if best in points:
            axis.plot(best, points[best], "o", ms=9, mfc="none", color=colour)


def plot_curves(runs: Sequence[RunResult], path: str | Path) -> None:
    """Two panels, t2i R1 and mAP on each run's selection split against epoch; one line per
    run (one colour per pooled group), its selected epoch circled; the legend below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = curve_labels(runs)
    groups = [[run for run in group if run.curve()] for group in group_runs(runs)]
    groups = [group for group in groups if group]
    lines = sum(map(len, groups))
    height = 4.2 + 0.2 * lines
    figure, axes = plt.subplots(1, 2, figsize=(12, height))
    for index, group in enumerate(groups):
        for run in group:
            _draw_run(axes, run, f"C{index % 10}", names[run.folder])
    splits = "/".join(sorted({run.split for group in groups for run in group})) or "no metrics yet"
    for axis, metric in zip(axes, ("R1", "mAP")):
        axis.set(title=f"text-to-image {metric} ({splits})", xlabel="epoch", ylabel=f"{metric} (%)")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    if lines:
        figure.legend(*axes[0].get_legend_handles_labels(), loc="lower center", fontsize=8, frameon=False)
    else:
        logger.warning("no run has metrics yet; %s has empty panels", path)
    figure.tight_layout(rect=(0, (0.2 * lines + 0.1) / height if lines else 0, 1, 1))
    write_with(path, lambda stream: figure.savefig(stream, format="png", dpi=110))
    plt.close(figure)


# ------------------------------------------------------------------------------ command line


@report_user_errors
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.report", description=describe(__doc__))
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="run folders or folders holding them")
    parser.add_argument("--csv", metavar="FILE", help="also write the rows as CSV")
    parser.add_argument("--plot", metavar="FILE", help="also write a PNG of R1 and mAP against epoch")
    parser.add_argument(
        "--paper-ablation",
        action="store_true",
        help="a column with the paper's CUHK-PEDES ablation R1 of each run's loss set (or 'extra')",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)
    runs = [read_run(folder) for folder in find_runs(args.dirs)]
    rows = report_rows(runs, args.paper_ablation)
    print(markdown_table(rows))
    outputs = ((args.csv, lambda: write_csv(rows, args.csv)), (args.plot, lambda: plot_curves(runs, args.plot)))
    for target, write in outputs:
        try:
            if target:
                write()
                logger.info("wrote %s", target)
        except (OSError, ValueError) as error:
            raise ReportError(f"could not write {target}: {error}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
