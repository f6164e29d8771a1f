"""Resuming inside an epoch: the loaders continue at the next batch of the interrupted epoch
(the streaming loader's workers from the sample each reached, with their shuffle buffer's
draws; the file loader's sampler past the batches trained), without reading what was trained."""

from __future__ import annotations

import random

import pytest
import torch
from test_shards import stream, write_corpus
from torch.utils.data import DataLoader

from dataset_tools.write_shards import write_shards
from datasets.samplers import IdentitySampler, RandomSampler
from datasets.stream_plan import resume_point, resumed, shuffled, worker_batches
from datasets.streaming import StreamLoader
from processor.checkpointing import rng_state
from processor.training import StartedLoader


def test_a_resumed_shuffle_yields_the_rest_and_reads_only_what_it_still_needs():
    pairs = list(range(100, 130))  # stands for the pairs at stream positions 100..129
    reads = []

    def read(start: int, stop: int):
        reads.append((start, stop))
        return iter(pairs[start - 100 : stop - 100])

    whole = list(shuffled(iter(pairs), 5, random.Random(3)))
    for skip in (0, 1, 7, 24, 26, 29, 30):
        reads.clear()
        assert list(resumed(read, 100, 130, skip, 5, random.Random(3))) == whole[skip:], skip
        first_read = min((start for start, stop in reads if stop > start), default=130)
        # nothing before the oldest pair still to come is read: the pairs trained on are not
        assert first_read == min(whole[skip:], default=130), (skip, reads)


@pytest.mark.parametrize("batches,workers", [(5, 2), (7, 3), (6, 4), (4, 1)])
def test_resume_point_follows_the_dataloaders_round_over_its_workers(batches, workers):
    counts = [(w + 1) * batches // workers - w * batches // workers for w in range(workers)]
    order = []  # the worker of each batch: one from each in turn, those run out passed over
    given = [0] * workers
    while len(order) < batches:
        for w in range(workers):
            if given[w] < counts[w]:
                given[w] += 1
                order.append(w)
    for consumed in range(batches + 1):
        done, turn = resume_point(counts, consumed)
        assert done == [order[:consumed].count(w) for w in range(workers)]
        upcoming = [w for w in order[consumed:]]
        if upcoming:
            assert upcoming[0] == next(w for w in [*range(turn, workers), *range(turn)] if done[w] < counts[w])


@pytest.mark.parametrize("workers", [0, 2, 3])
def test_a_stream_resumed_after_some_batches_yields_the_rest_of_the_epoch(tmp_path, workers):
    write_corpus(tmp_path)  # 45 pairs
    write_shards(tmp_path, "Corpus", tmp_path / "shards", shard_size=4)
    data = stream(tmp_path / "shards", batch=3)
    loader = StreamLoader(data, batch_size=3, num_workers=workers)
    loader.sampler.set_epoch(1)
    whole = [batch["image_ids"].tolist() + batch["caption_ids"][:, :4].flatten().tolist() for batch in loader]
    assert len(whole) == 15 and sum(worker_batches(45, 3, max(workers, 1))) == 15
    for consumed in (1, 4, 8, 14):
        loader.sampler.skip_batches(consumed)
        rest = [batch["image_ids"].tolist() + batch["caption_ids"][:, :4].flatten().tolist() for batch in loader]
        assert rest == whole[consumed:], consumed
    loader.sampler.skip_batches(0)
    assert [b["image_ids"].tolist() + b["caption_ids"][:, :4].flatten().tolist() for b in loader] == whole


def test_the_file_samplers_skip_the_batches_trained():
    sampler = RandomSampler(23, seed=4, rank=1, world_size=2, batch_size=6)
    sampler.set_epoch(2)
    whole = list(sampler)
    sampler.skip_batches(2, 3)
    assert list(sampler) == whole[6:] and len(sampler) == len(whole)  # the epoch's length stays
    identity = IdentitySampler([i // 2 for i in range(20)], 4, 2, seed=1)
    identity.set_epoch(1)
    whole = list(identity)
    identity.skip_batches(1, 4)
    assert list(identity) == whole[4:]


def test_a_resumed_epoch_starts_its_loader_without_moving_the_saved_generator():
    """Starting a DataLoader draws from the CPU generator; the interrupted run drew at the
    epoch's start, before its checkpoint, so the resumed epoch puts the saved state back."""
    loader = DataLoader(list(range(6)), batch_size=2)
    saved = rng_state(torch.device("cpu"))
    next(iter(loader))
    assert not torch.equal(torch.get_rng_state(), saved["torch"])
    torch.set_rng_state(saved["torch"])
    next(iter(StartedLoader(loader, saved, torch.device("cpu"))))
    assert torch.equal(torch.get_rng_state(), saved["torch"]) and len(StartedLoader(loader, saved, "cpu")) == 3
