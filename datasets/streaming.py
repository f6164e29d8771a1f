"""The streaming training dataset: image-caption pairs read sequentially from tar shards
(:mod:`datasets.shards`), with the file dataset's transforms and MLM masking.

The corpus is an endless stream of passes; each pass is every pair once, its shards in an
order drawn from (seed, pass). An epoch is the next ``world_size x (epoch_pairs // world_size)``
pairs of the stream (``epoch_pairs`` = ``data.shard_epoch_samples``, default one pass), so no
pair is ever skipped: the few a rank count leaves over open the next epoch. Rank r takes the
r-th contiguous block of the epoch and splits it, in whole batches, into contiguous blocks
for its DataLoader workers; each worker reads its block's shards from the first sample it
needs (images before it are seeked over) and passes the pairs through a shuffle buffer drawn
from (seed, epoch, rank, worker). Every pair of an epoch is thus read exactly once by exactly
one worker of one rank, and every rank yields the same number of batches.

A run resumed inside an epoch (``skip_batches``) starts each worker past the pairs it gave
before, the workers taking their turns in the DataLoader's order as before; the shuffle
buffer's draws are replayed on stream positions, so no pair already trained is decoded.

A pair's augmentation and masking are seeded by (seed, epoch, its index in the manifest), as
:class:`datasets.bases.ImageTextMLMDataset` seeds them by (seed, epoch, index): a corpus
written from a dataset's train split gives the same pair the same tensors from either.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch.utils.data import DataLoader, IterableDataset, Sampler, get_worker_info

from datasets.bases import TrainingSample, decode_image, sample_seed, tokenize_captions, training_item
from datasets.readers import DataError
from datasets.shards import Manifest, image_file, pair_offsets, read_samples
from datasets.tokenizer import CONTEXT_LENGTH


@dataclass(frozen=True)
class StreamPair:
    """One pair waiting in the shuffle buffer: image bytes undecoded, caption untokenized."""

    index: int  # pair index in the manifest's order
    image_id: int  # image index in the manifest's order
    pid: int  # identity label (the image index for a corpus without identities)
    caption: str
    image_bytes: bytes
    name: str  # shard:key, for messages


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


def through(buffer: ShuffleBuffer, pairs: Iterator[StreamPair]) -> Iterator[StreamPair]:
    for pair in pairs:
        out = buffer.push(pair)
        if out is not None:
            yield out
    yield from buffer.drain()


def shuffled(pairs: Iterator[StreamPair], size: int, rng: random.Random) -> Iterator[StreamPair]:
    """``pairs`` through a :class:`ShuffleBuffer` of ``size``."""
    return through(ShuffleBuffer(size, rng), pairs)


def fetch(read: Callable[[int, int], Iterator[StreamPair]], positions: List[int]) -> Dict[int, StreamPair]:
    """The pairs at ``positions`` (stream positions), read in one sequential pass."""
    if not positions:
        return {}
    wanted, low = set(positions), min(positions)
    return {p: pair for p, pair in enumerate(read(low, max(positions) + 1), start=low) if p in wanted}


def resumed(
    read: Callable[[int, int], Iterator[StreamPair]], start: int, stop: int, skip: int, size: int, rng: random.Random
) -> Iterator[StreamPair]:
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


class ShardStream(IterableDataset):
    """Training pairs streamed from a shard folder's ``manifest``; yields the dicts of
    :class:`datasets.bases.ImageTextMLMDataset`. ``batch_size`` is the per-rank batch."""

    def __init__(
        self,
        manifest: Manifest,
        transform: Callable,
        batch_size: int,
        text_length: int = CONTEXT_LENGTH,
        seed: int = 0,
        masked_language: bool = True,
        share_masked_caption: bool = False,
        rank: int = 0,
        world_size: int = 1,
        epoch_pairs: int = 0,
        shuffle_buffer: int = 1000,
    ):
        super().__init__()
        manifest.check_sizes()
        self.manifest, self.transform, self.batch_size = manifest, transform, batch_size
        self.text_length, self.seed, self.shuffle_buffer = text_length, seed, shuffle_buffer
        self.masked_language, self.share_masked_caption = masked_language, share_masked_caption
        self.rank, self.world_size = rank, world_size
        self.per_rank = (epoch_pairs or manifest.pairs) // world_size
        if self.per_rank < 1:
            raise DataError(f"{manifest.folder}: {epoch_pairs or manifest.pairs} pairs cannot feed {world_size} ranks")
        self.labels: Optional[Dict[int, int]] = manifest.identity_labels() if manifest.identities else None
        self.pair_bases = pair_offsets([shard.pairs for shard in manifest.shards])
        self.image_bases = pair_offsets([len(shard.captions) for shard in manifest.shards])
        # Shared memory: workers (persistent ones included) read the epoch set after they started.
        self._epoch = torch.zeros(1, dtype=torch.long).share_memory_()
        self._skip = torch.zeros(1, dtype=torch.long).share_memory_()  # batches of the epoch already trained

    def set_epoch(self, epoch: int) -> None:
        self._epoch[0] = epoch

    def skip_batches(self, batches: int) -> None:
        """Start the epoch after its first ``batches`` batches (a resume inside an epoch)."""
        self._skip[0] = batches

    def __len__(self) -> int:
        return self.per_rank

    def worker_range(self, epoch: int, worker: int, workers: int) -> Tuple[int, int]:
        return consumer_range(epoch, self.per_rank, self.rank, self.world_size, worker, workers, self.batch_size)

    def read_range(self, start: int, stop: int) -> Iterator[StreamPair]:
        """The pairs at stream positions [start, stop), in stream order."""
        pairs = [shard.pairs for shard in self.manifest.shards]
        for shard, low, high in stream_segments(pairs, self.seed, start, stop):
            yield from self._shard_pairs(shard, low, high)

    def _shard_pairs(self, shard: int, low: int, high: int) -> Iterator[StreamPair]:
        info = self.manifest.shards[shard]
        path = self.manifest.folder / info.name
        bounds = pair_offsets(info.captions)
        first = bisect.bisect_right(bounds, low) - 1
        for sample_number, sample in enumerate(read_samples(path, first), start=first):
            if sample_number >= len(info.captions) or len(sample.captions) != info.captions[sample_number]:
                raise DataError(f"shard {path}: sample {sample.key} differs from the manifest; rewrite the shards")
            image_id = self.image_bases[shard] + sample_number
            pid = image_id if self.labels is None else self.labels.get(sample.pid, -1)
            if pid < 0:
                raise DataError(f"shard {path}: sample {sample.key} has identity {sample.pid!r}, not in the manifest")
            name = f"{path}:{sample.key}.{sample.image_name.rpartition('.')[2]}"
            for caption_number, caption in enumerate(sample.captions):
                local = bounds[sample_number] + caption_number
                if low <= local < high:
                    yield StreamPair(self.pair_bases[shard] + local, image_id, pid, caption, sample.image_bytes, name)
            if bounds[sample_number + 1] >= high:
                return
        raise DataError(f"shard {path}: ends before its pair {high} of the manifest; rewrite the shards")

    def item(self, pair: StreamPair, epoch: int) -> Dict[str, torch.Tensor]:
        sample = TrainingSample(
            decode_image(image_file(pair), pair.name),
            tokenize_captions([pair.caption], self.text_length)[0],
            torch.tensor(pair.pid, dtype=torch.long),
            torch.tensor(pair.image_id, dtype=torch.long),
        )
        seed = sample_seed(self.seed, epoch, pair.index)
        return training_item(sample, seed, self.transform, self.masked_language, self.share_masked_caption)

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        epoch = int(self._epoch[0])
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # Resumed after some batches: worker w plays the part of worker (w + turn), so that the
        # DataLoader's round over its workers continues where the interrupted one stopped.
        given, turn = resume_point(worker_batches(self.per_rank, self.batch_size, workers), int(self._skip[0]))
        part = (worker + turn) % workers
        start, stop = self.worker_range(epoch, part, workers)
        skip = min(given[part] * self.batch_size, stop - start)
        rng = random.Random(sample_seed(self.seed, epoch, self.rank * workers + part))
        for pair in resumed(self.read_range, start, stop, skip, self.shuffle_buffer, rng):
            yield self.item(pair, epoch)


class EpochSetter(Sampler):
    """The sampler of a :class:`StreamLoader`: ``set_epoch`` reaches the stream, as the
    training loop calls it on every training loader's sampler."""

    def __init__(self, stream: ShardStream):
        super().__init__()
        self.stream = stream

    def __iter__(self) -> Iterator[None]:
        while True:
            yield None

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)

    def skip_batches(self, batches: int, batch_size: int = 0) -> None:
        self.stream.skip_batches(batches)


class StreamLoader(DataLoader):
    """A DataLoader over a :class:`ShardStream` whose ``sampler.set_epoch`` sets the stream's epoch."""

    def __init__(self, stream: ShardStream, **options):
        super().__init__(stream, **options)
        # DataLoader forbids setting its sampler once built; an iterable dataset's is a
        # placeholder that iteration never reads, so replacing it changes nothing else.
        object.__setattr__(self, "sampler", EpochSetter(stream))
