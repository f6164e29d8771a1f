"""The quick-start recipe learns: configs/quickstart.yaml (its model, losses, optimizer and
schedule shape) trained briefly on a small synthetic set lowers the training loss and makes
the model retrieve its training identities far better than the untrained model.

Shrunk to stay cheap in CI (about 60 s on one core): 60 identities, batch 16 instead of 64
and 5 epochs, so 115 steps of a quarter of the quick start's cost, evaluated untrained and
at the end. Measured (one thread, this project's 2-core machine): after 4 epochs R1 +11.8,
mAP +13.7 and a loss ratio of 0.800, at the thresholds; after 5, +15.9, +19.2 and 0.736;
after 6, +19.5, +22.2 and 0.685. Step count is what matters: the recipe
sits on a plateau for its first ~250 steps (in the full run A-SDM stays near 28 for 5 epochs
of 48 steps while MLM and ID fall), and 48 steps of batch 64 left even the training
identities at chance (R1 1.3 against 0.8 untrained). Unseen identities need the full
recipe, the README's first command."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT
from train_fixtures import epoch_means

import train as train_cli
from dataset_tools.synthetic import generate


@pytest.mark.slow(seconds=75)
def test_quickstart_recipe_learns_its_training_identities(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    generate(data, num_train_ids=60, num_val_ids=10, num_test_ids=20)
    argv = [
        "--config",
        str(ROOT / "configs" / "quickstart.yaml"),
        f"data.root={data}",
        f"train.output_dir={run}",
        "data.batch_size=16",
        "solver.epochs=5",
        "solver.warmup_epochs=1",
        "eval.at_start=true",
        "train.eval_period=5",  # evaluated untrained and at the end only
        "eval.split=train",
    ]
    assert train_cli.main(argv) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    t2i = {row["epoch"]: row for row in rows if row["task"] == "t2i" and row["split"] == "train"}
    assert sorted(t2i) == [0, 5]
    # Measured: R1 2.75 -> 18.68, mAP 4.76 -> 23.97 (chance level on 60 identities at epoch 0).
    assert t2i[5]["R1"] > t2i[0]["R1"] + 10 and t2i[5]["mAP"] > t2i[0]["mAP"] + 10, (t2i[0], t2i[5])
    losses = [means["loss"] for means in epoch_means(run)]
    assert len(losses) == 5 and losses[-1] < 0.8 * losses[0], losses
