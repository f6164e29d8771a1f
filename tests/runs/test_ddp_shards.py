"""A streaming run (data.shards) on two torchrun agents of one process each (c10d rendezvous
on localhost, docs/several_gpus.md's multi-node line) trains the one-process run: with
data.shard_split=batches each rank keeps its share of the one-process run's global batches."""

from __future__ import annotations

import pytest
from test_ddp import assert_same_training, two_node_launch
from train_fixtures import make_fixture, read_metrics, tiny_run_args

import train as train_cli
from dataset_tools.write_shards import write_shards


@pytest.mark.slow(seconds=30)
def test_a_streamed_two_node_run_ends_with_the_one_process_weights_and_metrics(tmp_path):
    """2 epochs of 4 global batches of 8 from 32 streamed pairs, 2 loader workers per rank, a
    shuffle buffer of 5, A-SDM + MLM + ID + EFA with augmentation (test_ddp's recipe). Measured:
    every weight within 0.02% of one Adam step of the one-process run's; with
    data.shard_split=blocks (each rank its own block of the epoch) 7.2 steps apart."""
    root = make_fixture(tmp_path / "data", identities=8)
    write_shards(root, "CUHK-PEDES", tmp_path / "shards", shard_size=3)
    args = ["data.batch_size=8", "data.augment=true", "model.id_classes=identities", "solver.eps=1e-3"]
    args += [f"data.shards={tmp_path / 'shards'}", "data.num_workers=2", "data.shuffle_buffer=5"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert train_cli.main(tiny_run_args(root, one, 2, *args)) == 0
    two_node_launch(tiny_run_args(root, two, 2, *args))
    assert "2 process(es)" in (two / "train.log").read_text()
    assert [r["epoch"] for r in read_metrics(two)] == [1, 2]
    assert_same_training(one, two, root)
