"""A run selected on val reports best.pth on the test split.

After the last epoch, a run with ``eval.split=val`` evaluates its best.pth on the test split and
writes those rows under the best epoch. Here the val selection is steered so that epoch 1 wins
and epoch 2 is the last; the test-split rows must then be best.pth's figures (as test.py computes
them from the file), not those of the weights the run ended with.
"""

from __future__ import annotations

import importlib.util
import json
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT
from train_fixtures import make_fixture, read_metrics, tiny_run_args

import train as train_cli
from configs.defaults import Config
from processor import checkpointing as ckpt
from processor import training
from processor.run_keeper import RunKeeper
from utils.distributed import DistInfo

# test.py by path: the name "test" is also a standard-library package.
_spec = importlib.util.spec_from_file_location("fmfa_test_cli_best_on_test", ROOT / "test.py")
test_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(test_cli)

METRICS = ("R1", "R5", "R10", "mAP", "mINP")
QUICK = ["loss.names=sdm+id", "data.batch_size=10"]  # 2 steps an epoch: the selection is what is tested


def metrics_of_test_py(run, which: str) -> dict:
    """test.py on the run folder's ``which`` checkpoint, test split: text-to-image figures."""
    assert test_cli.main([str(run), "--which", which, "eval.split=test"]) == 0
    saved = json.loads((run / f"test_{which}_CUHK-PEDES_test.json").read_text())
    return saved["results"]["CUHK-PEDES"]["t2i"]


def test_a_run_selected_on_val_reports_best_pth_on_test(tmp_path, monkeypatch):
    root, run = make_fixture(tmp_path / "data"), tmp_path / "run"
    measured = training.evaluate
    val_r1 = iter([90.0, 10.0])  # epoch 1's val R1 wins the selection; epoch 2 is the last

    def val_selects_epoch_1(model, loaders, *args, **kwargs):
        results = measured(model, loaders, *args, **kwargs)
        if loaders.split == "val":
            results["t2i"] = {**results["t2i"], "R1": next(val_r1)}
        return results

    monkeypatch.setattr(training, "evaluate", val_selects_epoch_1)
    assert train_cli.main(tiny_run_args(root, run, 2, "eval.split=val", *QUICK)) == 0
    monkeypatch.undo()
    assert torch.load(run / "best.pth", weights_only=True)["epoch"] == 1
    assert ckpt.load_training_state(run / "last.pth")["epoch"] == 2
    rows = read_metrics(run)
    assert [(r["epoch"], r["split"], r["task"]) for r in rows] == [
        (1, "val", "t2i"),
        (2, "val", "t2i"),
        (1, "test", "t2i"),
    ]
    best, last = metrics_of_test_py(run, "best"), metrics_of_test_py(run, "last")
    # the two checkpoints score differently on test, so the rows below tell which one was used
    assert max(abs(best[key] - last[key]) for key in METRICS) > 1e-2, (best, last)
    reported = rows[-1]
    for key in METRICS:
        assert reported[key] == pytest.approx(best[key], abs=1e-4), (key, reported, best, last)


def test_the_best_epoch_is_decided_once_and_the_summary_reads_it(tmp_path):
    cfg = Config()
    cfg.train.output_dir, cfg.eval.split = str(tmp_path), "val"
    keeper = RunKeeper(cfg, DistInfo())
    val = SimpleNamespace(dataset=cfg.data.dataset, split="val")
    for epoch, r1 in enumerate([50.0, 60.0, 60.0], 1):  # epoch 3 ties epoch 2: the earlier stays
        figures = dict.fromkeys(METRICS, r1)
        keeper.record(epoch, val, {"t2i": figures})
        assert (keeper.update_best(epoch, figures) is not None) == (epoch < 3)
    assert keeper.best == {"R1": 60.0, "epoch": 2}
    assert "best (epoch 2, val)" in keeper.summary()
    keeper.best = {"R1": 50.0, "epoch": 1}  # the summary shows the decision; it does not make its own
    assert "best (epoch 1, val)" in keeper.summary()


@pytest.mark.parametrize(
    ("model", "label"),
    [
        ({"pretrain": "none"}, "untrained"),
        ({"pretrain": "none", "init_from": "runs/pretrain/best.pth"}, "before training (model.init_from=runs/pretrain/best.pth)"),
        ({"pretrain": "data/ViT-B-16.pt"}, "before training (model.pretrain=data/ViT-B-16.pt)"),
    ],
)
def test_the_summary_names_the_weights_epoch_0_was_evaluated_with(tmp_path, model, label):
    """Epoch 0 is "untrained" only from random weights; from CLIP's or a pretrained run's
    weights the summary says which weights its figures are."""
    cfg = Config()
    cfg.train.output_dir = str(tmp_path)
    for key, value in model.items():
        setattr(cfg.model, key, value)
    keeper = RunKeeper(cfg, DistInfo())
    test = SimpleNamespace(dataset=cfg.data.dataset, split="test")
    for epoch in (0, 1):
        keeper.record(epoch, test, {"t2i": dict.fromkeys(METRICS, 10.0 + epoch)})
    keeper.update_best(1, dict.fromkeys(METRICS, 11.0))
    first_row = keeper.summary().splitlines()[3]
    assert label in first_row and "10.000" in first_row, keeper.summary()
