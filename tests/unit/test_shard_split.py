"""The streaming loader's split across ranks: with data.shard_split=batches each step's rank
batches, concatenated in rank order, are the one-process run's batch (also resumed inside an
epoch); with blocks each rank reads its own block. Either way every pair once per epoch."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest
import torch
from test_shards import corpus_records, loader_config, pair_of, stream, write_corpus

from dataset_tools.write_shards import write_shards
from datasets.build import build_train_loader, worker_count
from datasets.shards import numbered_samples, read_manifest
from datasets.stream_plan import rank_share
from datasets.streaming import StreamLoader

KEYS = ("pids", "image_ids", "caption_ids")


def steps(folder: Path, rank: int, world: int, split: str, epoch: int, skip: int = 0, workers: int = 2) -> list:
    """The batches of rank ``rank`` of ``world`` (3 pairs each) in ``epoch``, after ``skip`` batches."""
    data = stream(folder, rank, world, batch=6 // world, split=split)
    loader = StreamLoader(data, batch_size=6 // world, num_workers=workers)
    loader.sampler.set_epoch(epoch)
    loader.sampler.skip_batches(skip)
    return [{key: batch[key] for key in KEYS} for batch in loader]


def joined(ranks: list) -> list:
    """Each step's rank batches concatenated in rank order."""
    return [{key: torch.cat([batch[key] for batch in step]) for key in KEYS} for step in zip(*ranks, strict=True)]


def same_batches(got: list, expected: list) -> bool:
    return len(got) == len(expected) and all(
        all(torch.equal(a[key], b[key]) for key in KEYS) for a, b in zip(got, expected)
    )


def pairs_of(batches: list) -> Counter:
    return Counter(
        pair_of(batch["image_ids"], batch["caption_ids"], row) for batch in batches for row in range(len(batch["pids"]))
    )


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """48 pairs (24 images, 1 to 3 captions) in shards of 5 images: 8 global batches of 6."""
    root = tmp_path_factory.mktemp("split")
    write_corpus(root, corpus_records(24))
    write_shards(root, "Corpus", root / "shards", shard_size=5)
    return root / "shards"


@pytest.mark.slow(seconds=10)
def test_two_ranks_batches_concatenate_to_the_one_process_batches(shards):
    for epoch in (0, 1):
        one = steps(shards, 0, 1, "batches", epoch)
        ranks = [steps(shards, rank, 2, "batches", epoch) for rank in range(2)]
        assert len(one) == 8 and same_batches(joined(ranks), one), epoch
        seen = pairs_of(ranks[0]) + pairs_of(ranks[1])
        assert len(seen) == 48 and set(seen.values()) == {1}  # 2 ranks x 2 workers: every pair once
        assert not set(pairs_of(ranks[0])) & set(pairs_of(ranks[1]))
    for skip in (1, 3, 6):  # resumed inside epoch 1: the rest of the same global batches
        rest = [steps(shards, rank, 2, "batches", 1, skip) for rank in range(2)]
        assert same_batches(joined(rest), one[skip:]), skip


@pytest.mark.slow(seconds=5)
def test_the_block_split_reads_other_batches_but_every_pair_once(shards):
    one = steps(shards, 0, 1, "blocks", 0)
    assert same_batches(one, steps(shards, 0, 1, "batches", 0))  # one process: the same stream
    ranks = [steps(shards, rank, 2, "blocks", 0) for rank in range(2)]
    seen = pairs_of(ranks[0]) + pairs_of(ranks[1])
    assert len(seen) == 48 and set(seen.values()) == {1}
    assert not same_batches(joined(ranks), one)
    rest = [steps(shards, rank, 2, "blocks", 0, 3) for rank in range(2)]
    assert all(same_batches(part, whole[3:]) for part, whole in zip(rest, ranks))


def test_a_short_last_global_batch_is_shared_as_the_file_sampler_shares_it(tmp_path):
    """45 pairs in global batches of 6: the last 3 give each of 2 ranks 1, the third sits out."""
    write_corpus(tmp_path)
    write_shards(tmp_path, "Corpus", tmp_path / "shards", shard_size=4)
    one = steps(tmp_path / "shards", 0, 1, "batches", 2, workers=0)
    ranks = [steps(tmp_path / "shards", rank, 2, "batches", 2, workers=0) for rank in range(2)]
    assert [len(batch["pids"]) for batch in one] == [6] * 7 + [3]
    assert [len(batch["pids"]) for batch in ranks[1]] == [3] * 7 + [1]
    cut = [{key: batch[key][: 2 * (len(batch["pids"]) // 2)] for key in KEYS} for batch in one]
    assert same_batches(joined(ranks), cut)
    assert rank_share(list(range(15)), 6, 1, 2) == [3, 4, 5, 9, 10, 11, 13]


def test_a_rank_reads_only_the_samples_it_keeps(shards, monkeypatch):
    """The members of the samples another rank keeps are seeked over, not read."""
    counted = []

    class Counting:  # the shard reader's file, its reads counted
        def __init__(self, path, mode, **options):
            self.handle = open(path, mode, **options)

        def read(self, size=-1):
            data = self.handle.read(size)
            counted.append(len(data))
            return data

        def seek(self, offset, whence=0):
            return self.handle.seek(offset, whence)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    monkeypatch.setattr("datasets.shards.open", Counting, raising=False)
    path = shards / read_manifest(shards).shards[0].name
    whole = {number: sample for number, sample in numbered_samples(path)}
    read_all, counted[:] = sum(counted), []
    kept = [number for number, _ in numbered_samples(path, 1, lambda number: number % 2 == 0)]
    assert kept == [2, 4] and sum(counted) < read_all
    # what was read: the two samples' members, 512-byte headers of the others and the end block
    members = sum(-(-len(whole[n].image_bytes) // 512) * 512 + 2048 for n in kept)
    assert members < sum(counted) <= members + 512 * (2 * (len(whole) - len(kept)) + 2) + 1024
    data = stream(shards, 1, 2, batch=3)
    share = rank_share(list(range(40, 13, -1)), 6, 1, 2)
    assert [pair.index for pair in data.read_positions(share)] == [
        pair.index for pair in (next(data.read_range(p, p + 1)) for p in share)
    ]


def test_the_stream_loader_workers_are_capped_at_the_usable_cores(tmp_path, monkeypatch, caplog):
    write_corpus(tmp_path)
    write_shards(tmp_path, "Corpus", tmp_path / "shards", shard_size=4)
    monkeypatch.setattr("datasets.build.usable_cores", lambda: 2)
    worker_count.cache_clear()
    cfg = loader_config(tmp_path, tmp_path / "shards")
    cfg.data.num_workers = 7
    with caplog.at_level(logging.INFO, logger="datasets.build"):
        loader, _ = build_train_loader(cfg)
    worker_count.cache_clear()
    assert loader.num_workers == 2
    assert "data.num_workers=7: 2 loader worker(s), one per usable CPU core" in caplog.text
