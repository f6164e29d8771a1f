"""The small slips and the missing inputs of a newcomer, each answered with the exact form to
type next, every problem in one report, and nothing created before it: config slips (a file
without --config, a key without its section, a bare list, a bool as 1, IRRA's --i2t), train.py
on a CPU machine without weights or data, a resume from best.pth, export_features.py's inputs,
datasets.check's exit status and test.py's output names."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import ROOT, user_error

import export_features
import test as test_cli
import train as train_cli
from configs.defaults import Config
from configs.errors import ConfigError
from configs.irra_flags import foreign_flag_lines
from configs.loader import build_parser, load_config
from dataset_tools.check import main as check_main
from datasets.build import worker_count
from processor import preflight

QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")


@pytest.mark.parametrize(
    "override, next_step, typed",
    [
        ("configs/quickstart.yaml", "a config file goes after --config: --config configs/quickstart.yaml", None),
        ("batch_size=32", "here data.batch_size=32 or eval.batch_size=32", "data.batch_size=32"),
        (
            "eval.cross_domain=ICFG-PEDES",
            "a list is written in brackets: eval.cross_domain=[ICFG-PEDES]",
            "eval.cross_domain=[ICFG-PEDES]",
        ),
        ("eval.i2t=1", "write eval.i2t=true or eval.i2t=false", "eval.i2t=true"),
        ("lr=1e-4", "here solver.lr=1e-4", "solver.lr=1e-4"),
    ],
)
def test_a_config_slip_is_answered_with_the_form_to_type(override, next_step, typed):
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    assert next_step in str(error.value)
    if typed:  # the suggested form loads
        load_config(None, [typed])


def test_the_slips_in_a_config_file_are_answered_in_yaml(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("eval:\n  cross_domain: RSTPReid\n  i2t: 1\n")
    with pytest.raises(ConfigError, match=r"in brackets: cross_domain: \[RSTPReid\]"):
        load_config(path)
    path.write_text("eval:\n  i2t: 1\n")
    with pytest.raises(ConfigError, match="write i2t: true"):
        load_config(path)


def test_a_switch_of_irra_becomes_key_true(capsys):
    assert foreign_flag_lines(["--i2t"], build_parser()) == ["--i2t -> eval.i2t=true"]
    assert foreign_flag_lines(["--i2t", "false"], build_parser()) == ["--i2t false -> eval.i2t=false"]
    load_config(None, ["eval.i2t=true"])


def test_train_reports_weights_data_and_the_missing_gpu_at_once(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(preflight, "missing_gpu_reason", lambda: "no GPU: none in this test")
    monkeypatch.setattr(train_cli, "pick_device", lambda device: torch.device("cpu"))  # as on a CPU machine
    message = user_error(capsys, train_cli.main, ["--config", str(ROOT / "configs" / "cuhk_pedes.yaml")])
    assert "3 problems, all reported at once" in message
    assert "model.pretrain='data/ViT-B-16.pt': file not found" in message
    assert "dataset folder data/CUHK-PEDES not found" in message
    assert "train.device=auto found no GPU" in message and "set train.device=cpu" in message
    assert list(tmp_path.iterdir()) == []  # no run folder


def test_a_missing_shard_folder_is_reported_with_the_data_before_any_folder(tmp_path, capsys):
    """data.shards= names the manifest and the command that writes it, in the same report as
    the missing evaluation data, and nothing is created."""
    output = tmp_path / "run"
    argv = ["--config", QUICKSTART, f"data.root={tmp_path}", f"data.shards={tmp_path / 'shards'}"]
    message = user_error(capsys, train_cli.main, [*argv, "loss.names=sdm", f"train.output_dir={output}"])
    assert "2 problems, all reported at once" in message
    assert f"{tmp_path / 'shards' / 'manifest.json'} not found" in message and "datasets.write_shards" in message
    assert "Synthetic-PEDES" in message and not output.exists()


def test_resuming_from_best_pth_is_refused_before_any_folder(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": {}, "epoch": 3, "metrics": {}}, run / "best.pth")  # best.pth's keys, no training state
    output = tmp_path / "new_run"
    argv = ["--config", QUICKSTART, f"train.resume={run / 'best.pth'}", f"train.output_dir={output}"]
    message = user_error(capsys, train_cli.main, [*argv, f"data.root={tmp_path}"])
    assert "not a training checkpoint (no best, optimizer, rng, scheduler, step" in message
    assert f"To continue the run: train.resume={run} (its last.pth)" in message
    assert f"model.init_from={run / 'best.pth'}" in message
    assert "Synthetic-PEDES not found" in message  # in the same report
    assert not output.exists()


def test_export_features_names_every_missing_input(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["runs/nope", "--dataset", "CUHK-PEDES", "--output", "out.npz"]
    message = user_error(capsys, export_features.main, argv)
    assert "2 problems" in message and "checkpoint not found: runs/nope" in message
    assert "dataset folder data/CUHK-PEDES not found" in message
    message = user_error(capsys, export_features.main, ["runs/nope", "--images", "photos", "--output", "o.npz"])
    assert "image folder not found: photos" in message and not (tmp_path / "o.npz").exists()


def test_datasets_check_exits_2_for_a_problem(tmp_path):
    assert check_main([str(tmp_path), "CUHK-PEDES", "--quiet"]) == 2


def test_test_py_names_its_json_by_what_was_evaluated(tmp_path):
    cfg = Config()
    cfg.data.dataset = "Synthetic-PEDES"
    run = tmp_path / "run"
    assert test_cli.default_output(run, run / "best.pth", "best", cfg).name == "test_best_Synthetic-PEDES_test.json"
    weights = tmp_path / "best.pth"
    weights.write_bytes(b"")
    assert test_cli.default_output(weights, weights, "best", cfg) == tmp_path / "test_best_Synthetic-PEDES_test.json"
    cfg.eval.i2t = True
    both = test_cli.default_output(run, run / "last.pth", "last", cfg)
    assert both.name == "test_last_Synthetic-PEDES_test_t2i+i2t.json"  # never the t2i-only file


def test_loader_workers_are_capped_at_the_usable_cores(monkeypatch):
    monkeypatch.setattr("datasets.build.usable_cores", lambda: 2)
    worker_count.cache_clear()
    assert (worker_count(8), worker_count(2), worker_count(0)) == (2, 2, 0)
    worker_count.cache_clear()


def test_a_folder_without_last_pth_is_still_answered_by_the_run_folder(tmp_path):
    preflight.check_resume(str(tmp_path))  # the start rules name what is missing there
    shutil.rmtree(tmp_path)
    with pytest.raises(FileNotFoundError, match="train.resume="):
        preflight.check_resume(str(tmp_path))
