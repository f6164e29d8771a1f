"""Compare training runs: ``python -m utils.report DIR [DIR ...] [--csv FILE] [--plot FILE]``.

A run (a folder holding config.yaml) is reported at the best epoch it recorded in progress.json
(training's choice: the best t2i R1 on its dataset and ``eval.split`` among epochs > 0, earliest
on ties; best.pth's epoch), plus its test row there when it was selected on val. Runs
differing only in ``train.seed`` are pooled as ``mean ± std (n)``; differing config keys
become columns; the paper's figures are added per dataset.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from prettytable import PrettyTable, TableStyle

from utils.cli import describe, report_user_errors
from utils.io import write_text_atomic, write_with
from utils.run_folder import (
    METRICS,
    ReportError,
    RunResult,
    differing_keys,
    find_runs,
    group_runs,
    is_number,
    read_run,
    run_labels,
)

logger = logging.getLogger(__name__)

COLUMNS = ("run", "dataset", "split", *METRICS, "epoch", "state")
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


# --------------------------------------------------------------------------------- the rows


class Statistic(str):
    """A metric over pooled runs as the table prints it (``mean ± std (n)``, or the one value),
    keeping the numbers for the CSV's mean / std / n columns."""

    mean: Optional[float]
    std: Optional[float]
    n: int

    def __new__(cls, values: List[float]) -> "Statistic":
        mean = statistics.mean(values) if values else None
        std = statistics.stdev(values) if len(values) > 1 else None
        text = "" if mean is None else f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f} ({len(values)})"
        result = super().__new__(cls, text)
        result.mean, result.std, result.n = mean, std, len(values)
        return result


def _statistic(values: List[float]) -> Statistic:
    return Statistic(values)


def _metric_row(base: Dict[str, str], split: str, picked: List[dict]) -> Dict[str, str]:
    """One row: each metric over the runs' rows ``picked``; the epoch, or each run's epoch."""
    epochs = [str(row["epoch"]) for row in picked]
    values = {name: _statistic([float(row[name]) for row in picked if is_number(row.get(name))]) for name in METRICS}
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


def csv_row(row: Dict[str, str]) -> Dict[str, object]:
    """``row`` with each metric as numbers: ``R1`` (the mean), ``R1_std`` (empty for one run)
    and ``R1_n`` (runs pooled; empty for the paper's row and where the row has no figure)."""
    result: Dict[str, object] = {}
    for column, text in row.items():
        if column not in METRICS:
            result[column] = text
            continue
        if isinstance(text, Statistic):  # this report's runs
            mean, std, n = text.mean, text.std, text.n if text.n else ""
        else:  # a figure quoted as it was published (the paper's row)
            mean, std, n = text, None, ""
        result |= {column: "" if mean is None else mean, f"{column}_std": "" if std is None else std}
        result[f"{column}_n"] = n
    return result


def write_csv(rows: Sequence[Dict[str, str]], path: str | Path) -> None:
    """The rows as CSV, every metric as numbers (:func:`csv_row`)."""
    table = [csv_row(row) for row in rows] or [csv_row(dict.fromkeys(COLUMNS, ""))]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(table[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(table if rows else [])
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
        points = dict(sorted((epoch, row[metric]) for epoch, row in curve.items() if is_number(row.get(metric))))
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
    raise SystemExit(main())
