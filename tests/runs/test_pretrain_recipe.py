"""The pretraining recipe's newcomer sequence (docs/pretraining.md, "Pretraining recipe") at a
tiny size, through the real programs' ``main(argv)`` in this process: a synthetic corpus drawn
one image per person and sharded without identities, ``configs/pretrain_tiny.yaml`` pre-trains
on the shards (SDM, evaluated zero-shot on Synthetic-PEDES's test split), the quick start
fine-tunes from the pretrained run's best.pth (``model.init_from``), and ``test.py`` evaluates
the fine-tuned run.

Shrunk to stay cheap (measured about 40 s on this project's 2-core machine): the quick
start's model narrowed as ``train_fixtures.ONE_EPOCH_QUICKSTART`` narrows it, 96 x 32 images,
24 corpus images and 12 + 8 identities to fine-tune and test on."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT
from train_fixtures import ONE_EPOCH_QUICKSTART, read_metrics

import test as test_cli
import train as train_cli
from dataset_tools import synthetic, write_shards

CONFIGS = ROOT / "configs"
METRICS = ("R1", "R5", "R10", "mAP", "mINP")


def t2i_rows(run) -> dict:
    """{epoch: (R1, R5, R10, mAP, mINP)} of the run's text-to-image evaluations."""
    return {row["epoch"]: tuple(row[m] for m in METRICS) for row in read_metrics(run) if row["task"] == "t2i"}


def draw_corpus_and_benchmark(data, shards) -> None:
    """The sequence's first three commands: the corpus, its shards, the fine-tuning set."""
    small = ["--image-size", "96", "32"]
    corpus = ["--root", str(data / "corpus"), "--train-ids", "24", "--val-ids", "0", "--test-ids", "0"]
    assert synthetic.main([*corpus, "--images-per-id", "1", "1", "--seed", "1", *small]) == 0
    source = [str(data / "corpus"), "Synthetic-PEDES", "--out", str(shards)]
    assert write_shards.main([*source, "--shard-size", "10", "--no-identities"]) == 0
    assert json.loads((shards / "manifest.json").read_text())["identities"] is False
    assert synthetic.main(["--root", str(data), "--train-ids", "12", "--val-ids", "0", "--test-ids", "8", *small]) == 0


@pytest.mark.slow(seconds=40)
def test_a_finetune_starts_from_the_pretrained_runs_best_weights(tmp_path, capsys):
    data, shards = tmp_path / "data", tmp_path / "shards"
    pretrained, finetuned = tmp_path / "pretrain_tiny", tmp_path / "finetune_tiny"
    draw_corpus_and_benchmark(data, shards)
    small = [*ONE_EPOCH_QUICKSTART, f"data.root={data}"]
    pretrain = ["--config", str(CONFIGS / "pretrain_tiny.yaml"), *small, f"data.shards={shards}"]
    assert train_cli.main([*pretrain, "solver.epochs=2", f"train.output_dir={pretrained}"]) == 0
    finetune = ["--config", str(CONFIGS / "quickstart.yaml"), *small, f"model.init_from={pretrained / 'best.pth'}"]
    assert train_cli.main([*finetune, "eval.at_start=true", f"train.output_dir={finetuned}"]) == 0

    best = json.loads((pretrained / "progress.json").read_text())["best"]["epoch"]
    before, after = t2i_rows(pretrained), t2i_rows(finetuned)
    assert before[best] != before[0], "pretraining left the zero-shot figures unchanged: the check below proves nothing"
    # The fine-tune's untrained evaluation is the pretrained run's best epoch, figure for figure.
    assert after[0] == before[best], (after[0], before[best])

    capsys.readouterr()
    assert test_cli.main([str(finetuned)]) == 0
    (output,) = finetuned.glob("test_best_*.json")
    tested = json.loads(output.read_text())["results"]["Synthetic-PEDES"]
    finetune_best = json.loads((finetuned / "progress.json").read_text())["best"]["epoch"]
    assert tested["split"] == "test" and tuple(tested["t2i"][m] for m in METRICS) == after[finetune_best]
