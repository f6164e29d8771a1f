"""Training samplers: the paper's random sampler and the identity (P x K) sampler.

Both are distributed-ready: with ``world_size`` > 1 each rank iterates a disjoint share of
the same epoch-wide order. The order is a function of (seed, epoch) only, so a resumed run
sees the same batches, and one resumed inside an epoch skips the batches trained (``skip_batches``)
without loading them. They yield ``(epoch, index)`` keys, which
``datasets.bases.ImageTextMLMDataset`` uses to seed each sample's augmentation and masking.
Call ``set_epoch`` before every epoch.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, Iterator, List, Sequence, Tuple

import torch
from torch.utils.data import Sampler


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")


class EpochSampler(Sampler[Tuple[int, int]]):
    def __init__(self, seed: int = 0, rank: int = 0, world_size: int = 1):
        _check_rank(rank, world_size)
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0
        self.skip = 0  # indices of the epoch's order already trained on (a resume inside an epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_batches(self, batches: int, batch_size: int) -> None:
        """Start the epoch's order after its first ``batches`` batches of ``batch_size`` (per rank)."""
        self.skip = batches * batch_size

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)

    def indices(self) -> List[int]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        return iter([(self.epoch, index) for index in self.indices()[self.skip :]])


class RandomSampler(EpochSampler):
    """Every index once per epoch in a random order (the paper's sampler).

    Distributed: the permutation is cut into global batches of ``batch_size`` and rank r
    takes the r-th of W equal contiguous blocks of each, so the ranks' shares of a step,
    concatenated in rank order, are the one-process batch in its order. A last global
    batch of m < ``batch_size`` samples gives each rank m // W of them: at most W - 1
    samples per epoch are left out (they change every epoch).
    """

    def __init__(self, num_samples: int, seed: int = 0, rank: int = 0, world_size: int = 1, batch_size: int = 0):
        super().__init__(seed, rank, world_size)
        if num_samples < world_size:
            raise ValueError(f"{num_samples} samples cannot be shared by {world_size} ranks")
        if world_size > 1 and (batch_size < 1 or batch_size % world_size):
            raise ValueError(f"the global batch size {batch_size} is not a positive multiple of the {world_size} ranks")
        self.num_samples, self.batch_size = num_samples, batch_size or num_samples

    def __len__(self) -> int:
        full, left = divmod(self.num_samples, self.batch_size)
        return full * (self.batch_size // self.world_size) + left // self.world_size

    def indices(self) -> List[int]:
        order = torch.randperm(self.num_samples, generator=self.generator()).tolist()
        if self.world_size == 1:
            return order
        shares = []
        for start in range(0, self.num_samples, self.batch_size):
            batch = order[start : start + self.batch_size]
            size = len(batch) // self.world_size
            shares.extend(batch[self.rank * size : (self.rank + 1) * size])
        return shares


class IdentitySampler(EpochSampler):
    """Batches of P identities x K instances (``batch_size`` = P x K per rank).

    Each identity's samples are shuffled and cut into groups of K (identities with fewer
    than K samples are filled by drawing with replacement; a last incomplete group is
    dropped). Repeatedly, P x world_size identities that still have groups are drawn at
    random and one group popped from each; rank r takes the r-th block of P groups.
    """

    def __init__(
        self, pids: Sequence[int], batch_size: int, num_instance: int, seed: int = 0, rank: int = 0, world_size: int = 1
    ):
        super().__init__(seed, rank, world_size)
        if batch_size % num_instance:
            raise ValueError(f"batch size {batch_size} is not a multiple of num_instance {num_instance}")
        self.num_instance = num_instance
        self.ids_per_batch = batch_size // num_instance
        self.by_identity: Dict[int, List[int]] = defaultdict(list)
        for index, pid in enumerate(pids):
            self.by_identity[int(pid)].append(index)
        if len(self.by_identity) < self.ids_per_batch * world_size:
            raise ValueError(
                f"{len(self.by_identity)} identities cannot fill batches of "
                f"{self.ids_per_batch} identities on {world_size} rank(s)"
            )
        self._cached: Tuple[int, List[int]] = (-1, [])

    def _groups(self, generator: torch.Generator) -> Dict[int, List[List[int]]]:
        groups = {}
        for pid, members in self.by_identity.items():
            members = torch.tensor(members)
            if len(members) < self.num_instance:
                members = members[torch.randint(len(members), (self.num_instance,), generator=generator)]
            members = members[torch.randperm(len(members), generator=generator)].tolist()
            count = len(members) // self.num_instance
            groups[pid] = [members[k * self.num_instance : (k + 1) * self.num_instance] for k in range(count)]
        return groups

    def global_batches(self) -> List[List[List[int]]]:
        """Every rank's batches this epoch: a list of global batches of P x W groups."""
        generator = self.generator()
        groups = self._groups(generator)
        available = sorted(groups)
        needed = self.ids_per_batch * self.world_size
        batches = []
        while len(available) >= needed:
            chosen = torch.randperm(len(available), generator=generator)[:needed].tolist()
            picked = [available[position] for position in chosen]
            batches.append([groups[pid].pop() for pid in picked])
            exhausted = {pid for pid in picked if not groups[pid]}
            if exhausted:
                available = [pid for pid in available if pid not in exhausted]
        return batches

    def indices(self) -> List[int]:
        if self._cached[0] != self.epoch:  # __len__ and __iter__ share one draw per epoch
            start, stop = self.rank * self.ids_per_batch, (self.rank + 1) * self.ids_per_batch
            order = [index for batch in self.global_batches() for group in batch[start:stop] for index in group]
            self._cached = (self.epoch, order)
        return self._cached[1]

    def __len__(self) -> int:
        return len(self.indices())
