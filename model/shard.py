"""A batch split over processes in equal shares, as the batch-coupled losses of
:mod:`model.objectives` see it: each process scores its own rows against the gathered
columns of the whole batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch


@dataclass(frozen=True)
class Shard:
    """This process's rows of a batch split over processes in equal shares, rank 0's first
    (the order of the one-process batch); ``rank``: this process's place.

    ``gather``: [R, ...] -> [B, ...], the concatenation of every process's tensor in rank
    order, differentiable (its backward sums each process's gradients back to the owner).
    """

    gather: Callable[[torch.Tensor], torch.Tensor]
    rank: int

    def first_row(self, rows: int) -> int:
        return self.rank * rows


def columns_of(shard: Optional[Shard], *tensors: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """The whole batch's version of each of this process's tensors (the same on one process)."""
    return tensors if shard is None else tuple(shard.gather(x) for x in tensors)


def first_row_of(shard: Optional[Shard], rows: int) -> int:
    return 0 if shard is None else shard.first_row(rows)
