"""Where each pair of the shards' stream goes, in stream positions (no reading): the passes'
shard orders, the consumers' ranges, the shuffle buffer and its replay, the ranks' shares of
a global batch and the DataLoader's round over its workers. :mod:`datasets.streaming` reads
the shards along these plans.
"""

from __future__ import annotations

import bisect
import math
import random
from typing import Any, Callable, Dict, Iterator, List, Tuple

import torch

from datasets.shards import pair_offsets


def consumer_range(epoch: int, per_rank: int, rank: int, world: int, worker: int, workers: int, batch: int):
    """(start, stop) in stream positions of one rank's worker in ``epoch``: the rank's block
    of ``per_rank`` pairs cut into whole batches, workers taking contiguous runs of batches."""
    first = (epoch * world + rank) * per_rank
    batches = math.ceil(per_rank / batch)
    low, high = worker * batches // workers, (worker + 1) * batches // workers
    return first + low * batch, first + min(high * batch, per_rank)


def pass_order(shards: int, seed: int, number: int) -> List[int]:
    """The shards' order in pass ``number`` of the stream."""
    generator = torch.Generator().manual_seed(seed * 100_003 + number)
    return torch.randperm(shards, generator=generator).tolist()


def stream_segments(pairs: List[int], seed: int, start: int, stop: int) -> Iterator[Tuple[int, int, int]]:
    """(shard, first pair, stop pair) within the shard, of stream positions [start, stop)."""
    total, position, cached = sum(pairs), start, (-1, [], [])
    while position < stop:
        number, offset = divmod(position, total)
        if cached[0] != number:
            order = pass_order(len(pairs), seed, number)
            cached = (number, order, pair_offsets([pairs[shard] for shard in order]))
        _, order, bounds = cached
        slot = bisect.bisect_right(bounds, offset) - 1
        local = offset - bounds[slot]
        take = min(pairs[order[slot]] - local, stop - position)
        yield order[slot], local, local + take
        position += take


class ShuffleBuffer:
    """A shuffle buffer of ``size``: each item pushed once it is full takes the place of one
    drawn at random, which is returned; ``drain`` gives the rest in random order. The draws
    depend on the count of items only, so a replay on stream positions repeats them."""

    def __init__(self, size: int, rng: random.Random):
        self.size, self.rng, self.items = size, rng, []

    def push(self, item):
        if len(self.items) < self.size:
            self.items.append(item)
            return None
        slot = self.rng.randrange(self.size)
        self.items[slot], item = item, self.items[slot]
        return item

    def drain(self) -> list:
        self.rng.shuffle(self.items)
        items, self.items = self.items, []
        return items


def through(buffer: ShuffleBuffer, pairs: Iterator) -> Iterator:
    for pair in pairs:
        out = buffer.push(pair)
        if out is not None:
            yield out
    yield from buffer.drain()


def shuffled(pairs: Iterator, size: int, rng: random.Random) -> Iterator:
    """``pairs`` through a :class:`ShuffleBuffer` of ``size``."""
    return through(ShuffleBuffer(size, rng), pairs)


def fetch(read: Callable[[int, int], Iterator], positions: List[int]) -> Dict[int, Any]:
    """The pairs at ``positions`` (stream positions), read in one sequential pass."""
    if not positions:
        return {}
    wanted, low = set(positions), min(positions)
    return {p: pair for p, pair in enumerate(read(low, max(positions) + 1), start=low) if p in wanted}


def resumed(
    read: Callable[[int, int], Iterator], start: int, stop: int, skip: int, size: int, rng: random.Random
) -> Iterator:
    """What ``shuffled(read(start, stop), size, rng)`` yields after its first ``skip`` pairs,
    without reading those: the shuffle is replayed on stream positions, then the pairs still
    in the buffer are read (from the oldest one on) and the stream goes on from there."""
    buffer, position, done = ShuffleBuffer(size, rng), start, 0
    while done < skip and position < stop:
        done += buffer.push(position) is not None
        position += 1
    if done < skip:  # in the final drain
        rest = buffer.drain()[skip - done :]
        pairs = fetch(read, rest)
        yield from (pairs[p] for p in rest)
        return
    held = fetch(read, buffer.items)
    buffer.items = [held[p] for p in buffer.items]
    yield from through(buffer, read(position, stop))


def worker_batches(per_rank: int, batch: int, workers: int) -> List[int]:
    """Batches of each of a rank's ``workers`` loader workers in an epoch (:func:`consumer_range`)."""
    batches = math.ceil(per_rank / batch)
    return [(w + 1) * batches // workers - w * batches // workers for w in range(workers)]


def resume_point(counts: List[int], consumed: int) -> Tuple[List[int], int]:
    """After ``consumed`` batches of a DataLoader whose workers yield ``counts`` batches: the
    batches each worker gave and the worker whose batch comes next. The DataLoader takes
    one batch from each worker in turn, passing over workers that ran out."""
    given, turn = [0] * len(counts), 0
    for _ in range(consumed):
        while given[turn] >= counts[turn]:
            turn = (turn + 1) % len(counts)
        given[turn] += 1
        turn = (turn + 1) % len(counts)
    return given, turn


def rank_share(order: List[int], batch: int, rank: int, world: int) -> List[int]:
    """Rank ``rank``'s share of ``order`` cut into global batches of ``batch``: the r-th of
    ``world`` equal contiguous blocks of each, a last short batch of m giving each rank m // world
    (as :class:`datasets.samplers.RandomSampler` shares the file loader's global batches)."""
    share = []
    for first in range(0, len(order), batch):
        size = len(order[first : first + batch]) // world
        share.extend(order[first + rank * size : first + (rank + 1) * size])
    return share


def shared_batches(pairs: int, batch: int, world: int) -> int:
    """Batches a rank gets from ``pairs`` pairs cut into global batches of ``batch`` (:func:`rank_share`)."""
    full, left = divmod(pairs, batch)
    return full + (left // world > 0)
