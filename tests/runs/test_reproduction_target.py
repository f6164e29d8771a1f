"""The reproduction target is named where a user looks: run.sh's ablation report prints the
paper's R1 beside each run (and "extra" beside runs not in the paper's table), and the
fine-tune section refuses missing pre-trained checkpoints by name before any run."""

from __future__ import annotations

import json
import subprocess

import yaml
from conftest import ROOT

from utils.report import ABLATION_COLUMN, NOT_IN_PAPER, PAPER_ABLATION, main, read_run, report_rows


def write_run(folder, loss_names: str, r1s, dataset: str = "CUHK-PEDES"):
    folder.mkdir(parents=True)
    config = {"data": {"dataset": dataset}, "loss": {"names": loss_names}, "solver": {"epochs": len(r1s)}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    rows = [
        {
            "epoch": e,
            "dataset": dataset,
            "split": "test",
            "task": "t2i",
            "R1": r,
            "R5": r,
            "R10": r,
            "mAP": r,
            "mINP": r,
        }
        for e, r in enumerate(r1s, 1)
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    best = {"R1": max(r1s), "epoch": r1s.index(max(r1s)) + 1}  # as training records it
    (folder / "progress.json").write_text(json.dumps({"best": best}), encoding="utf-8")
    return folder


def test_the_ablation_report_puts_the_papers_r1_beside_each_run(tmp_path):
    runs = [
        write_run(tmp_path / "sdm_id_irr", "sdm+mlm+id", [50, 60]),
        write_run(tmp_path / "asdm_id_irr", ["a-sdm", "id", "mlm"], [51, 61]),  # order and form do not matter
        write_run(tmp_path / "full", "a-sdm+mlm+id+efa", [52, 62]),
        write_run(tmp_path / "asdm", "a-sdm", [40, 45]),
        write_run(tmp_path / "icfg_full", "a-sdm+mlm+id+efa", [30, 35], dataset="ICFG-PEDES"),
    ]
    rows = {row["run"]: row for row in report_rows([read_run(run) for run in runs], ablation=True)}
    assert rows["sdm_id_irr"][ABLATION_COLUMN] == "73.45"
    assert rows["asdm_id_irr"][ABLATION_COLUMN] == "74.04"
    assert rows["full"][ABLATION_COLUMN] == "74.16" and rows["full"]["R1"] == "62.00"
    assert rows["asdm"][ABLATION_COLUMN] == NOT_IN_PAPER
    assert rows["icfg_full"][ABLATION_COLUMN] == NOT_IN_PAPER  # the table is CUHK-PEDES's
    assert list(rows["full"])[3:5] == ["R1", ABLATION_COLUMN]  # side by side
    plain = report_rows([read_run(run) for run in runs])
    assert all(ABLATION_COLUMN not in row for row in plain)  # other reports are unchanged
    assert sorted(PAPER_ABLATION.values()) == [73.45, 73.73, 74.04, 74.16]


def test_the_report_option_prints_the_column(tmp_path, capsys):
    write_run(tmp_path / "sdm_efa_id_irr", "sdm+mlm+id+efa", [50])
    assert main(["--paper-ablation", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert ABLATION_COLUMN in table.splitlines()[0] and "73.73" in table


def test_run_sh_finetune_names_every_missing_checkpoint_before_any_run(tmp_path):
    result = subprocess.run(
        ["bash", str(ROOT / "run.sh"), "finetune"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PRETRAINED": str(tmp_path / "pretrained"), "PYTHON": "false"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    for name in ("ham.pth", "mllm4text_reid.pth"):
        assert str(tmp_path / "pretrained" / name) in result.stderr
    assert "Fine-tuning from Re-ID pre-training" in result.stderr and "== " not in result.stdout


def test_the_finetune_section_of_the_docs_names_both_sources():
    text = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    section = text.split("## Fine-tuning from Re-ID pre-training", 1)[1].split("\n## ", 1)[0]
    for fragment in ("ham.pth", "mllm4text_reid.pth", "github.com/sssaury/HAM", "github.com/WentaoTan/MLLM4Text-ReID"):
        assert fragment in section, fragment
