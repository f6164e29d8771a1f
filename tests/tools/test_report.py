"""utils.report on hand-made run folders: config.yaml, metrics.jsonl and progress.json written here."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import yaml
from conftest import user_error
from PIL import Image

from utils.report import PAPER_LABEL, find_runs, main, markdown_table, read_run, report_rows

ROOT = Path(__file__).resolve().parents[2]

BASE = {
    "model": {"pretrain": "data/ViT-B-16.pt", "image_size": [384, 128]},
    "loss": {"names": "a-sdm+mlm+id+efa", "weights": {}},
    "asdm": {"factor": 0.1, "mode": "cosine"},
    "efa": {"text_margin": 0.1, "image_margin": 0.9},
    "data": {"root": "data", "dataset": "CUHK-PEDES", "batch_size": 64},
    "solver": {"lr": 5e-6, "epochs": 3},
    "train": {"output_dir": "", "name": "fmfa", "seed": 1, "resume": "", "auto_resume": False},
    "eval": {"split": "test", "cross_domain": [], "i2t": False},
}


def metric(
    epoch: int, r1: float, map_: float, split: str = "test", task: str = "t2i", dataset: str = "CUHK-PEDES"
) -> dict:
    return {
        "epoch": epoch,
        "dataset": dataset,
        "split": split,
        "task": task,
        "R1": r1,
        "R5": r1 + 10,
        "R10": r1 + 15,
        "mAP": map_,
        "mINP": map_ - 20,
    }


def write_run(
    folder: Path, overrides: Dict[str, object], rows: Optional[List[dict]], best: Optional[int] = None
) -> Path:
    """A run folder: BASE with dotted ``overrides``; metrics.jsonl and progress.json only when
    ``rows`` is given. progress.json's best epoch is ``best``, else what training records: the
    first epoch > 0 with the highest t2i R1 on the run's dataset and selection split."""
    config = copy.deepcopy(BASE)
    config["train"]["output_dir"] = str(folder)
    for key, value in overrides.items():
        section, name = key.split(".")
        config[section][name] = value
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    if rows is not None:
        (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        where = (config["data"]["dataset"], config["eval"]["split"], "t2i")
        selection = [r for r in rows if (r["dataset"], r["split"], r["task"]) == where and r["epoch"] > 0]
        chosen = max(selection, key=lambda r: r["R1"])["epoch"] if best is None and selection else best or 0
        (folder / "progress.json").write_text(json.dumps({"best": {"R1": 0.0, "epoch": chosen}}), encoding="utf-8")
    return folder


def curve(r1s: Sequence[float], maps: Sequence[float], **where) -> List[dict]:
    """Epochs 1.. with the given t2i R1 and mAP."""
    return [metric(epoch, r1, map_, **where) for epoch, (r1, map_) in enumerate(zip(r1s, maps), 1)]


def rows_of(*dirs: Path) -> List[Dict[str, str]]:
    return report_rows([read_run(folder) for folder in find_runs(dirs)])


def only(rows: List[Dict[str, str]], **match) -> Dict[str, str]:
    found = [row for row in rows if all(row[key] == value for key, value in match.items())]
    assert len(found) == 1, (match, rows)
    return found[0]


def test_differing_keys_become_columns(tmp_path):
    write_run(tmp_path / "a", {"train.name": "first"}, curve([50, 60, 55], [40, 45, 44]))
    write_run(tmp_path / "b", {"loss.names": "sdm+mlm+id", "train.name": "second"}, curve([40, 52, 51], [30, 35, 34]))
    write_run(tmp_path / "c", {"asdm.factor": 10.0}, curve([45, 58, 61], [33, 38, 42]))
    rows = rows_of(tmp_path)
    ours = [row for row in rows if row["run"] != PAPER_LABEL]
    assert list(ours[0]) == [
        "run",
        "dataset",
        "split",
        "R1",
        "R5",
        "R10",
        "mAP",
        "mINP",
        "epoch",
        "state",
        "loss.names",
        "asdm.factor",
    ]
    assert [(row["run"], row["loss.names"], row["asdm.factor"], row["R1"]) for row in ours] == [
        ("a", "a-sdm+mlm+id+efa", "0.1", "60.00"),
        ("b", "sdm+mlm+id", "0.1", "52.00"),
        ("c", "a-sdm+mlm+id+efa", "10.0", "61.00"),
    ]
    header = markdown_table(rows).splitlines()[0]
    assert "loss.names" in header and "asdm.factor" in header and "train.name" not in header


def test_seeds_aggregate_to_mean_std(tmp_path):
    # Selected R1 per seed 60, 62, 67: mean 63, sample std sqrt((9 + 1 + 16) / 2) = 3.6056.
    # mAP at those epochs 50, 51, 55: mean 52, sample std sqrt((4 + 1 + 9) / 2) = 2.6458.
    write_run(tmp_path / "s1", {"train.seed": 1}, curve([60, 58, 59], [50, 60, 60]))
    write_run(tmp_path / "s2", {"train.seed": 2}, curve([55, 62, 61], [45, 51, 60]))
    write_run(tmp_path / "s3", {"train.seed": 3, "train.name": "other"}, curve([50, 64, 67], [40, 60, 55]))
    write_run(tmp_path / "t", {"solver.lr": 1e-5}, curve([70, 71, 72], [50, 51, 52]))
    rows = [row for row in rows_of(tmp_path) if row["run"] != PAPER_LABEL]
    assert len(rows) == 2
    pooled = only(rows, run="s1, s2, s3")
    assert pooled["R1"] == "63.00 ± 3.61 (3)"
    assert pooled["mAP"] == "52.00 ± 2.65 (3)"
    assert pooled["mINP"] == "32.00 ± 2.65 (3)"
    assert pooled["epoch"] == "1, 2, 3"
    assert pooled["solver.lr"] == "5e-06"
    assert "train.seed" not in pooled
    assert only(rows, run="t")["R1"] == "72.00"  # n = 1: the plain value


def test_selected_epoch_is_best_r1_on_the_selection_split(tmp_path):
    # Epoch 0 (untrained) is never selected; epoch 4 ties epoch 2 and epoch 3 is lower: epoch 2.
    rows = [metric(0, 90, 90)] + curve([50, 70, 65, 70], [40, 41, 60, 60])
    rows += [metric(2, 95, 95, task="i2t"), metric(3, 99, 99, dataset="ICFG-PEDES")]
    write_run(tmp_path / "on_test", {"solver.epochs": 4}, rows)
    # Selected on val (epoch 2); best.pth then evaluated on test at epoch 2. A test row of
    # another epoch with a higher R1 must not be the one shown.
    val = curve([40, 55, 50], [30, 35, 34], split="val") + [metric(2, 52, 33), metric(3, 80, 80)]
    write_run(tmp_path / "on_val", {"eval.split": "val"}, val)
    rows = rows_of(tmp_path)
    on_test = only(rows, run="on_test")
    assert (on_test["split"], on_test["epoch"], on_test["R1"], on_test["mAP"]) == ("test", "2", "70.00", "41.00")
    assert only(rows, run="on_val", split="val")["epoch"] == "2"
    assert only(rows, run="on_val", split="val")["R1"] == "55.00"
    test_row = only(rows, run="on_val", split="test")
    assert (test_row["epoch"], test_row["R1"], test_row["mAP"]) == ("2", "52.00", "33.00")


def test_the_epoch_shown_is_the_one_the_run_recorded(tmp_path):
    # metrics.jsonl holds an epoch-3 row with a higher R1 (evaluated, then the run stopped
    # before its checkpoint): the report shows best.pth's epoch, as progress.json records it.
    write_run(tmp_path / "a", {}, curve([50, 60, 75], [40, 45, 44]), best=2)
    write_run(tmp_path / "b", {}, [metric(0, 30, 20)])  # only the untrained row: nothing selected
    rows = rows_of(tmp_path)
    assert (only(rows, run="a")["epoch"], only(rows, run="a")["R1"]) == ("2", "60.00")
    assert (only(rows, run="b")["epoch"], only(rows, run="b")["R1"]) == ("", "")


def test_a_config_the_loader_refuses_is_unreadable(tmp_path):
    write_run(tmp_path / "a", {"solver.epochs": "three"}, curve([50], [40]))
    state = only(rows_of(tmp_path), run="a")["state"]
    assert state.startswith("unreadable: ") and "solver.epochs" in state


def test_paper_row_only_for_datasets_present(tmp_path):
    write_run(tmp_path / "a", {}, curve([50, 60, 55], [40, 45, 44]))
    rows = rows_of(tmp_path)
    paper = only(rows, run=PAPER_LABEL)
    assert (paper["dataset"], paper["R1"], paper["R5"], paper["R10"], paper["mAP"], paper["mINP"]) == (
        "CUHK-PEDES",
        "74.16",
        "90.12",
        "94.10",
        "66.66",
        "",
    )
    assert rows[-1] is paper


def test_csv_holds_numbers_mean_std_and_count_in_columns(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_run(runs / "a", {}, curve([50, 60, 55], [40, 45, 44]))
    write_run(runs / "b", {"loss.names": "sdm+mlm+id"}, curve([40, 52, 51], [30, 35, 34]))
    write_run(runs / "b2", {"loss.names": "sdm+mlm+id", "train.seed": 2}, curve([40, 56, 51], [30, 37, 34]))
    target = tmp_path / "report.csv"
    assert main([str(runs), "--csv", str(target)]) == 0
    with open(target, newline="", encoding="utf-8") as handle:
        written = list(csv.DictReader(handle))
    assert [row["run"] for row in written] == ["a", "b, b2", PAPER_LABEL]
    assert list(written[0])[3:6] == ["R1", "R1_std", "R1_n"]
    single, pooled, paper = written
    assert (float(single["R1"]), single["R1_std"], single["R1_n"]) == (60.0, "", "1")
    # b and b2 differ only in the seed: R1 52 and 56, mean 54, sample std 2.828
    assert float(pooled["R1"]) == 54.0 and abs(float(pooled["R1_std"]) - 8**0.5) < 1e-9 and pooled["R1_n"] == "2"
    assert float(paper["R1"]) == 74.16 and paper["R1_n"] == "" and paper["mINP"] == ""
    assert not any("±" in value for row in written for value in row.values())
    printed = capsys.readouterr().out
    assert printed.startswith("| run") and "| 60.00" in printed and "54.00 ± 2.83 (2)" in printed


def test_plot_written_as_png(tmp_path):
    write_run(tmp_path / "a", {}, curve([50, 60, 55], [40, 45, 44]))
    write_run(tmp_path / "b", {"loss.names": "sdm+mlm+id"}, curve([40, 52, 51], [30, 35, 34]))
    write_run(tmp_path / "c", {}, None)  # no metrics: no line, no failure
    target = tmp_path / "curves.png"
    assert main([str(tmp_path), "--plot", str(target)]) == 0
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(target) as image:
        image.verify()
        assert image.format == "PNG" and image.width > image.height  # two panels side by side


def test_missing_dir_exits_2_with_one_line(tmp_path, capsys):
    missing = tmp_path / "no_such_runs"
    capsys.readouterr()
    assert main([str(missing)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0], err


def test_folder_without_runs_exits_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert str(tmp_path / "empty") in user_error(capsys, main, [str(tmp_path / "empty")])


def test_unfinished_and_unreadable_runs_are_listed(tmp_path, capsys):
    write_run(tmp_path / "done", {}, curve([50, 60, 55], [40, 45, 44]))
    write_run(tmp_path / "started", {}, None)
    write_run(tmp_path / "halfway", {"solver.epochs": 10}, curve([30, 35], [20, 25]))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.yaml").write_text("data: [unclosed\n", encoding="utf-8")
    assert main([str(tmp_path)]) == 0
    printed, errors = capsys.readouterr()
    assert "Traceback" not in printed + errors
    rows = rows_of(tmp_path)
    started = only(rows, run="started")
    assert (started["state"], started["R1"], started["epoch"]) == ("no metrics yet", "", "")
    assert only(rows, run="done")["state"] == "done"
    assert only(rows, run="halfway")["state"] == "epoch 2/10"
    broken = only(rows, run="broken")
    assert broken["state"].startswith("unreadable: YAML syntax error in") and "line 2" in broken["state"]
    assert (broken["dataset"], broken["split"], broken["R1"]) == ("", "", "")
    assert rows[-1] is broken  # unreadable runs come last
    assert "| started" in printed and "| broken" in printed
