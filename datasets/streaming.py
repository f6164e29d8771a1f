"""The streaming training dataset: image-caption pairs read sequentially from tar shards
(:mod:`datasets.shards`), with the file dataset's transforms and MLM masking.

The corpus is an endless stream of passes; each pass is every pair once, its shards in an
order drawn from (seed, pass). Two splits of an epoch across W ranks (``split``,
``data.shard_split``; with one process they are the same stream):

- ``batches`` (the default): the one-process run, shared. An epoch is the next
  ``epoch_pairs`` pairs of the stream (``data.shard_epoch_samples``, default one pass), cut,
  in whole global batches, into contiguous blocks for the DataLoader workers; each worker
  reads its block's shards from the first sample it needs (images before it are seeked over)
  and passes the pairs through a shuffle buffer drawn from (seed, epoch, worker). Every rank
  plays the same workers over the same blocks with the same draws, whatever W is, and keeps
  the r-th of W equal parts of each global batch its worker gives; it reads and decodes only
  the images of the pairs it keeps (the other samples' tar members are seeked over past
  their headers). Each step's rank batches, concatenated in rank order, are thus the
  one-process run's batch. A last short global batch of m pairs gives each rank m // W of
  them: up to W - 1 pairs sit out that epoch, as with the file loader's sampler.
- ``blocks``: an epoch is the next ``W x (epoch_pairs // W)`` pairs, so no pair is ever
  skipped: the few a rank count leaves over open the next epoch. Rank r takes the r-th
  contiguous block of the epoch and splits it, in whole batches, among its workers, whose
  shuffle buffers are drawn from (seed, epoch, rank, worker). Each rank reads only its block,
  sequentially, but a global batch holds other pairs than the one-process run's.

Either way every pair of an epoch is given to exactly one worker of one rank (bar those a
last short batch leaves out), and every rank yields the same number of batches.

A run resumed inside an epoch (``skip_batches``) starts each worker past the pairs it gave
before, the workers taking their turns in the DataLoader's order as before; the shuffle
buffer's draws are replayed on stream positions, so no pair already trained is decoded.

A pair's augmentation and masking are seeded by (seed, epoch, its index in the manifest), as
:class:`datasets.bases.ImageTextMLMDataset` seeds them by (seed, epoch, index): a corpus
written from a dataset's train split gives the same pair the same tensors from either.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch.utils.data import DataLoader, IterableDataset, Sampler, get_worker_info

from datasets.bases import TrainingSample, decode_image, sample_seed, tokenize_captions, training_item
from datasets.readers import DataError
from datasets.shards import Manifest, image_file, numbered_samples, pair_offsets
from datasets.stream_plan import (
    consumer_range,
    rank_share,
    resume_point,
    resumed,
    shared_batches,
    shuffled,
    stream_segments,
    worker_batches,
)
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


class ShardStream(IterableDataset):
    """Training pairs streamed from a shard folder's ``manifest``; yields the dicts of
    :class:`datasets.bases.ImageTextMLMDataset`. ``batch_size`` is the per-rank batch;
    ``split`` one of ``configs.validation.SHARD_SPLITS`` (the module's docstring)."""

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
        split: str = "batches",
    ):
        super().__init__()
        manifest.check_sizes()
        self.manifest, self.transform, self.batch_size = manifest, transform, batch_size
        self.text_length, self.seed, self.shuffle_buffer = text_length, seed, shuffle_buffer
        self.masked_language, self.share_masked_caption = masked_language, share_masked_caption
        self.rank, self.world_size, self.split = rank, world_size, split
        self.epoch_pairs, self.global_batch = epoch_pairs or manifest.pairs, batch_size * world_size
        full, left = divmod(self.epoch_pairs, self.global_batch)
        shared = full * batch_size + left // world_size
        self.per_rank = self.epoch_pairs // world_size if split == "blocks" else shared
        if self.per_rank < 1:
            raise DataError(f"{manifest.folder}: {self.epoch_pairs} pairs cannot feed {world_size} ranks")
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
        """Stream positions [start, stop) that ``worker`` of ``workers`` reads in ``epoch``."""
        if self.split == "blocks":
            return consumer_range(epoch, self.per_rank, self.rank, self.world_size, worker, workers, self.batch_size)
        return consumer_range(epoch, self.epoch_pairs, 0, 1, worker, workers, self.global_batch)  # one process's

    def worker_batches(self, workers: int) -> List[int]:
        """Batches each of this rank's ``workers`` loader workers yields in an epoch."""
        if self.split == "blocks":
            return worker_batches(self.per_rank, self.batch_size, workers)
        ranges = [self.worker_range(0, worker, workers) for worker in range(workers)]
        return [shared_batches(stop - start, self.global_batch, self.world_size) for start, stop in ranges]

    def read_range(self, start: int, stop: int) -> Iterator[StreamPair]:
        """The pairs at stream positions [start, stop), in stream order."""
        return (pair for _, pair in self._read(start, stop))

    def read_positions(self, positions: List[int]) -> Iterator[StreamPair]:
        """The pairs at stream ``positions``, in that order: one sequential pass over their span
        that reads only their images, each pair held from its reading to its turn."""
        if not positions:
            return
        wanted = sorted(positions)
        pairs, held = self._read(wanted[0], wanted[-1] + 1, wanted), {}
        for position in positions:
            while position not in held:
                at, pair = next(pairs)
                held[at] = pair
            yield held.pop(position)

    def _read(self, start: int, stop: int, wanted: Optional[List[int]] = None) -> Iterator[Tuple[int, StreamPair]]:
        """(stream position, pair) of [start, stop), or of its ``wanted`` positions (sorted) alone."""
        position = start
        for shard, low, high in stream_segments(
            [shard.pairs for shard in self.manifest.shards], self.seed, start, stop
        ):
            chosen = None
            if wanted is not None:
                ends = (bisect.bisect_left(wanted, position), bisect.bisect_left(wanted, position + high - low))
                chosen = {at - position + low for at in wanted[ends[0] : ends[1]]}
            if chosen is None or chosen:
                for local, pair in self._shard_pairs(shard, low, high, chosen):
                    yield position + local - low, pair
            position += high - low

    def _shard_pairs(
        self, shard: int, low: int, high: int, chosen: Optional[set] = None
    ) -> Iterator[Tuple[int, StreamPair]]:
        """(pair number in the shard, pair) of its pairs [low, high), or of those ``chosen`` alone."""
        info = self.manifest.shards[shard]
        path = self.manifest.folder / info.name
        bounds = pair_offsets(info.captions)
        first = bisect.bisect_right(bounds, low) - 1
        samples = None if chosen is None else {bisect.bisect_right(bounds, local) - 1 for local in chosen}
        last = bisect.bisect_right(bounds, high - 1) - 1 if samples is None else max(samples)
        for sample_number, sample in numbered_samples(path, first, None if samples is None else samples.__contains__):
            if sample_number >= len(info.captions) or len(sample.captions) != info.captions[sample_number]:
                raise DataError(f"shard {path}: sample {sample.key} differs from the manifest; rewrite the shards")
            image_id = self.image_bases[shard] + sample_number
            pid = image_id if self.labels is None else self.labels.get(sample.pid, -1)
            if pid < 0:
                raise DataError(f"shard {path}: sample {sample.key} has identity {sample.pid!r}, not in the manifest")
            name = f"{path}:{sample.key}.{sample.image_name.rpartition('.')[2]}"
            for caption_number, caption in enumerate(sample.captions):
                local = bounds[sample_number] + caption_number
                if low <= local < high and (chosen is None or local in chosen):
                    pair = StreamPair(self.pair_bases[shard] + local, image_id, pid, caption, sample.image_bytes, name)
                    yield local, pair
            if sample_number >= last:
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

    def worker_pairs(self, epoch: int, part: int, workers: int, given: int) -> Iterator[StreamPair]:
        """What worker ``part`` of ``workers`` gives this rank in ``epoch`` after its first ``given`` batches."""
        start, stop = self.worker_range(epoch, part, workers)
        if self.split == "blocks":
            rng = random.Random(sample_seed(self.seed, epoch, self.rank * workers + part))
            skip = min(given * self.batch_size, stop - start)
            return resumed(self.read_range, start, stop, skip, self.shuffle_buffer, rng)
        # The shuffle's draws depend on counts only: run on positions, they tell which pairs this rank keeps.
        order = list(
            shuffled(iter(range(start, stop)), self.shuffle_buffer, random.Random(sample_seed(self.seed, epoch, part)))
        )
        return self.read_positions(
            rank_share(order[given * self.global_batch :], self.global_batch, self.rank, self.world_size)
        )

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        epoch = int(self._epoch[0])
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # Resumed after some batches: worker w plays the part of worker (w + turn), so that the
        # DataLoader's round over its workers continues where the interrupted one stopped.
        given, turn = resume_point(self.worker_batches(workers), int(self._skip[0]))
        part = (worker + turn) % workers
        for pair in self.worker_pairs(epoch, part, workers, given[part]):
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
